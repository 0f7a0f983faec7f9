// The GPT-2 byte-level alphabet (see byte_level.h).
#include "common/tokenizer/byte_level.h"

#include "common/tokenizer/utf8.h"

namespace krasis::tokenizer {

ByteLevelAlphabet::ByteLevelAlphabet() {
  decoded_.fill(-1);
  char32_t next = 256;
  for (int b = 0; b < 256; ++b) {
    const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
    const char32_t cp = printable ? static_cast<char32_t>(b) : next++;
    AppendUtf8(cp, &encoded_[b]);
    encoded_len_[b] = static_cast<unsigned char>(encoded_[b].size());
    encoded_bytes_[b] = {encoded_[b][0], encoded_[b].size() > 1 ? encoded_[b][1] : '\0'};
    decoded_[cp] = static_cast<short>(b);
  }
}

const ByteLevelAlphabet& ByteLevelAlphabet::Get() {
  static const ByteLevelAlphabet* alphabet = new ByteLevelAlphabet();
  return *alphabet;
}

void ByteLevelAlphabet::EncodeAppend(std::string_view bytes, std::string* out) const {
  // Every byte becomes one or two: size for two, write directly, then trim.
  const size_t start = out->size();
  out->resize(start + 2 * bytes.size());
  char* p = out->data() + start;
  for (unsigned char b : bytes) {
    p[0] = encoded_bytes_[b][0];
    p[1] = encoded_bytes_[b][1];
    p += encoded_len_[b];
  }
  out->resize(static_cast<size_t>(p - out->data()));
}

void ByteLevelAlphabet::DecodeAppend(std::string_view text, std::string* out) const {
  size_t i = 0;
  while (i < text.size()) {
    const auto b0 = static_cast<unsigned char>(text[i]);
    if (b0 < 0x80) {  // ASCII characters of the alphabet are themselves
      out->push_back(static_cast<char>(b0));
      ++i;
      continue;
    }
    const size_t n = Utf8SeqLen(b0);
    if (i + n > text.size()) {  // truncated: copy through
      out->append(text.substr(i));
      return;
    }
    size_t len = 0;
    const int b = Decode(DecodeUtf8(text, i, &len));
    if (b >= 0) {
      out->push_back(static_cast<char>(b));
    } else {
      out->append(text.substr(i, len));
    }
    i += len;
  }
}

}  // namespace krasis::tokenizer
