// Krasis' tokenizer: loads a Hugging Face tokenizer.json (plus
// tokenizer_config.json and chat_template.jinja when they sit beside it) and
// encodes / decodes exactly as the `tokenizers` library does for the byte-level
// BPE tokenizers of Qwen3 / Qwen3-Next, DeepSeek-V2/V3 and GLM-4.x.
//
// Encode pipeline: added tokens are split out of the raw text first, then each
// remaining piece is normalized, pre-tokenized into words, and each word is
// merged by the BPE model. Encode() adds no BOS/EOS (chat templates spell them
// out); AddSpecialTokens() applies the post-processor's template for callers
// that want `add_special_tokens=True` behaviour.
//
// All methods are const and thread-safe (the BPE word cache locks itself).
// Errors name the file and the offending component, e.g.
// "/models/x/tokenizer.json: unsupported pre_tokenizer type 'Whitespace'".
// Not supported: truncation / padding settings (ignored), offsets.
#pragma once

#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "common/tokenizer/added_vocab.h"

namespace krasis {
namespace tokenizer {
class BpeModel;
class Decoder;
class Normalizer;
class PostProcessor;
class PreTokenizer;
}  // namespace tokenizer

class Tokenizer {
 public:
  // `path_or_model_dir` is a tokenizer.json file or a directory holding one.
  // tokenizer_config.json and chat_template.jinja are read from the same
  // directory when present.
  static absl::StatusOr<std::unique_ptr<Tokenizer>> Load(const std::string& path_or_model_dir);

  // Builds a tokenizer from in-memory JSON text; `source` names it in errors.
  // `config_json` is the text of tokenizer_config.json, if any.
  static absl::StatusOr<std::unique_ptr<Tokenizer>> FromJsonText(
      std::string_view tokenizer_json, std::string_view source,
      std::optional<std::string_view> config_json = std::nullopt);

  ~Tokenizer();
  Tokenizer(const Tokenizer&) = delete;
  Tokenizer& operator=(const Tokenizer&) = delete;

  // Token ids of `text`, without BOS/EOS. With `parse_special` off, special
  // tokens written in the text are encoded as plain text (non-special added
  // tokens are still recognised). Invalid UTF-8 in `text` is read as U+FFFD.
  std::vector<int32_t> Encode(std::string_view text, bool parse_special = true) const;

  // `ids` wrapped as the post-processor's single-sequence template says
  // (tokenizer.json TemplateProcessing; failing that, tokenizer_config.json's
  // add_bos_token / add_eos_token, as transformers does for Llama-style
  // tokenizers such as DeepSeek's).
  std::vector<int32_t> AddSpecialTokens(std::span<const int32_t> ids) const;

  // Text of `ids`; unknown ids are skipped, special tokens too when
  // `skip_special`. Never returns invalid UTF-8 (U+FFFD replaces bad bytes).
  std::string Decode(std::span<const int32_t> ids, bool skip_special = false) const;

  // Drops the BPE model's word cache (memory, or cold-start benchmarks).
  void ClearCache() const;

  std::optional<int32_t> TokenToId(std::string_view token) const;
  // The token string of `id` (its vocabulary form, e.g. "Ġthe"); "" if unknown.
  std::string IdToToken(int32_t id) const;
  // One past the largest id of the vocabulary and the added tokens (the model's
  // embedding table may be larger).
  int32_t vocab_size() const { return vocab_size_; }
  bool IsSpecial(int32_t id) const;
  const std::vector<tokenizer::AddedToken>& added_tokens() const { return added_tokens_; }

  // tokenizer_config.json as parsed (an empty object when absent).
  const nlohmann::json& config() const { return config_; }
  // The chat template: chat_template.jinja when present, else the config's
  // chat_template (the "default" entry of a named list). Empty when none.
  const std::string& chat_template() const { return chat_template_; }
  const std::optional<std::string>& bos_token() const { return bos_token_; }
  const std::optional<std::string>& eos_token() const { return eos_token_; }
  std::optional<int32_t> bos_token_id() const;
  std::optional<int32_t> eos_token_id() const;

  // For StreamingDetokenizer: whether Decode() would output anything for `id`,
  // and the raw (possibly partial UTF-8) bytes of `id` as the `index`-th
  // decoded token.
  bool Decodes(int32_t id, bool skip_special) const;
  void AppendTokenBytes(int32_t id, size_t index, std::string* out) const;

 private:
  Tokenizer();
  static absl::StatusOr<std::unique_ptr<Tokenizer>> Create(
      std::string_view tokenizer_json, std::string_view source,
      std::optional<std::string_view> config_json, std::string_view config_source);
  absl::Status Build(const nlohmann::json& j);
  absl::Status ApplyConfig(nlohmann::json config);
  void EncodePlain(std::string_view text, bool parse_special, std::vector<int32_t>* ids) const;
  void EncodeWords(std::string_view text, std::vector<int32_t>* ids) const;
  const std::string* TokenString(int32_t id) const;

  std::unique_ptr<tokenizer::Normalizer> normalizer_;
  std::unique_ptr<tokenizer::PreTokenizer> pre_tokenizer_;
  std::unique_ptr<tokenizer::BpeModel> model_;
  std::unique_ptr<tokenizer::PostProcessor> post_processor_;
  std::unique_ptr<tokenizer::Decoder> decoder_;

  std::vector<tokenizer::AddedToken> added_tokens_;
  absl::flat_hash_map<int32_t, size_t> added_by_id_;  // id -> index in added_tokens_
  absl::flat_hash_map<std::string, int32_t> added_by_content_;
  tokenizer::AddedTokenMatcher raw_matcher_;         // tokens with normalized == false
  tokenizer::AddedTokenMatcher normalized_matcher_;  // tokens with normalized == true
  int32_t vocab_size_ = 0;

  nlohmann::json config_ = nlohmann::json::object();
  std::string chat_template_;
  std::optional<std::string> bos_token_;
  std::optional<std::string> eos_token_;
  bool add_bos_ = false;
  bool add_eos_ = false;
};

}  // namespace krasis
