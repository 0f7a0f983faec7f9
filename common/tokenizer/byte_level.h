// The GPT-2 "byte-level" alphabet: every byte 0..255 is shown as a printable
// Unicode character (printable Latin-1 bytes as themselves, the rest as
// U+0100.. in byte order), so byte-level BPE vocabularies are valid strings.
// Used by the ByteLevel pre-tokenizer (bytes -> characters) and the ByteLevel
// decoder (characters -> bytes).
#pragma once

#include <array>
#include <string>
#include <string_view>

namespace krasis::tokenizer {

class ByteLevelAlphabet {
 public:
  static const ByteLevelAlphabet& Get();

  // UTF-8 of the character that stands for byte `b` (1 or 2 bytes).
  std::string_view Encode(unsigned char b) const { return encoded_[b]; }
  // Appends the byte-level form of `bytes` to `out`.
  void EncodeAppend(std::string_view bytes, std::string* out) const;
  // The byte that code point `cp` stands for, or -1 when `cp` is not in the
  // alphabet.
  int Decode(char32_t cp) const { return cp < decoded_.size() ? decoded_[cp] : -1; }
  // Appends the bytes `text` stands for; characters outside the alphabet are
  // copied as their own UTF-8 (as Hugging Face's ByteLevel decoder does).
  void DecodeAppend(std::string_view text, std::string* out) const;

 private:
  ByteLevelAlphabet();
  std::array<std::string, 256> encoded_;
  std::array<std::array<char, 2>, 256> encoded_bytes_;  // the same, as raw bytes
  std::array<unsigned char, 256> encoded_len_;
  std::array<short, 324> decoded_;  // code points up to U+0143
};

}  // namespace krasis::tokenizer
