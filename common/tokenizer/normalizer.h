// Normalizers of tokenizer.json: text transforms applied before
// pre-tokenization. Supported: NFC, NFD, NFKC, NFKD (utf8proc), Lowercase,
// Replace, Prepend, Strip and Sequence; any other type is an error naming it.
//
// Hugging Face tracks offsets through normalization; Krasis only needs the
// normalized text, so a normalizer is a plain string -> string function.
// Known differences: Lowercase uses utf8proc's simple per-character mapping
// (no final-sigma rule, no one-to-many mappings like U+0130).
#pragma once

#include <memory>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "common/tokenizer/json_util.h"

namespace krasis::tokenizer {

class Normalizer {
 public:
  virtual ~Normalizer() = default;
  // Writes the normalized form of `text` (valid UTF-8) to *out.
  virtual void Normalize(std::string_view text, std::string* out) const = 0;
};

// Builds the normalizer described by `j`. Returns nullptr for null and for
// an empty Sequence (identity).
absl::StatusOr<std::unique_ptr<Normalizer>> NormalizerFromJson(const Json& j);

// NFC of `text` (valid UTF-8); exposed for tests and callers that compare
// text with what a normalizing tokenizer reproduces.
std::string NfcNormalize(std::string_view text);
// NFC computed by utf8proc over the whole text: the plain reference the fast
// NFC normalizer is tested against.
std::string NfcNormalizeReference(std::string_view text);

}  // namespace krasis::tokenizer
