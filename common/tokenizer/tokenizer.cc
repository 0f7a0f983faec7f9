// Tokenizer: encoding and decoding (loading lives in tokenizer_load.cc).
#include "common/tokenizer/tokenizer.h"

#include "common/tokenizer/bpe_model.h"
#include "common/tokenizer/decoder.h"
#include "common/tokenizer/normalizer.h"
#include "common/tokenizer/post_processor.h"
#include "common/tokenizer/pre_tokenizer.h"
#include "common/tokenizer/utf8.h"

namespace krasis {

using tokenizer::Segment;

Tokenizer::Tokenizer() = default;
Tokenizer::~Tokenizer() = default;

std::vector<int32_t> Tokenizer::Encode(std::string_view text, bool parse_special) const {
  std::string repaired;
  if (!tokenizer::IsValidUtf8(text)) {
    repaired = tokenizer::ToValidUtf8(text);
    text = repaired;
  }
  std::vector<int32_t> ids;
  ids.reserve(text.size() / 3 + 1);
  if (raw_matcher_.empty()) {
    EncodePlain(text, parse_special, &ids);
    return ids;
  }
  std::vector<Segment> segments;
  raw_matcher_.Split(text, parse_special, &segments);
  for (const Segment& s : segments) {
    if (s.id >= 0) {
      ids.push_back(s.id);
    } else {
      EncodePlain(text.substr(s.begin, s.end - s.begin), parse_special, &ids);
    }
  }
  return ids;
}

void Tokenizer::EncodePlain(std::string_view text, bool parse_special,
                            std::vector<int32_t>* ids) const {
  std::string normalized;
  if (normalizer_ != nullptr) {
    normalizer_->Normalize(text, &normalized);
    text = normalized;
  }
  if (normalized_matcher_.empty()) {
    EncodeWords(text, ids);
    return;
  }
  std::vector<Segment> segments;
  normalized_matcher_.Split(text, parse_special, &segments);
  for (const Segment& s : segments) {
    if (s.id >= 0) {
      ids->push_back(s.id);
    } else {
      EncodeWords(text.substr(s.begin, s.end - s.begin), ids);
    }
  }
}

void Tokenizer::EncodeWords(std::string_view text, std::vector<int32_t>* ids) const {
  if (text.empty()) return;
  if (pre_tokenizer_ == nullptr) {
    model_->Tokenize(text, ids);
    return;
  }
  pre_tokenizer_->Split(text, [&](std::string_view word) { model_->Tokenize(word, ids); });
}

std::vector<int32_t> Tokenizer::AddSpecialTokens(std::span<const int32_t> ids) const {
  if (post_processor_ != nullptr) return post_processor_->Apply(ids);
  std::vector<int32_t> out;
  out.reserve(ids.size() + 2);
  if (auto bos = bos_token_id(); add_bos_ && bos) out.push_back(*bos);
  out.insert(out.end(), ids.begin(), ids.end());
  if (auto eos = eos_token_id(); add_eos_ && eos) out.push_back(*eos);
  return out;
}

const std::string* Tokenizer::TokenString(int32_t id) const {
  if (auto it = added_by_id_.find(id); it != added_by_id_.end()) {
    return &added_tokens_[it->second].content;
  }
  return model_->IdToToken(id);
}

bool Tokenizer::Decodes(int32_t id, bool skip_special) const {
  return TokenString(id) != nullptr && !(skip_special && IsSpecial(id));
}

void Tokenizer::AppendTokenBytes(int32_t id, size_t index, std::string* out) const {
  const std::string* token = TokenString(id);
  if (token == nullptr) return;
  if (decoder_ == nullptr) {  // Hugging Face joins tokens with spaces
    if (index > 0) out->push_back(' ');
    out->append(*token);
    return;
  }
  std::string decoded = *token;
  decoder_->DecodeToken(&decoded, index, /*fused=*/false);
  out->append(decoded);
}

std::string Tokenizer::Decode(std::span<const int32_t> ids, bool skip_special) const {
  std::string bytes;
  size_t index = 0;
  for (int32_t id : ids) {
    if (Decodes(id, skip_special)) AppendTokenBytes(id, index++, &bytes);
  }
  if (tokenizer::IsValidUtf8(bytes)) return bytes;
  return tokenizer::ToValidUtf8(bytes);
}

void Tokenizer::ClearCache() const { model_->ClearCache(); }

std::optional<int32_t> Tokenizer::TokenToId(std::string_view token) const {
  auto it = added_by_content_.find(absl::string_view(token.data(), token.size()));
  if (it != added_by_content_.end()) return it->second;
  return model_->TokenToId(token);
}

std::string Tokenizer::IdToToken(int32_t id) const {
  const std::string* token = TokenString(id);
  return token == nullptr ? std::string() : *token;
}

bool Tokenizer::IsSpecial(int32_t id) const {
  auto it = added_by_id_.find(id);
  return it != added_by_id_.end() && added_tokens_[it->second].special;
}

std::optional<int32_t> Tokenizer::bos_token_id() const {
  return bos_token_ ? TokenToId(*bos_token_) : std::nullopt;
}

std::optional<int32_t> Tokenizer::eos_token_id() const {
  return eos_token_ ? TokenToId(*eos_token_) : std::nullopt;
}

}  // namespace krasis
