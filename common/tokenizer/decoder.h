// Decoders of tokenizer.json: turn token strings back into text. Supported:
// ByteLevel, ByteFallback, Fuse, Replace, Strip and Sequence; any other type
// is an error naming it.
//
// Krasis decodes token by token into raw bytes and repairs UTF-8 once at the
// end, so that Decode() and the streaming detokenizer produce identical text:
// a decoder transforms one token given its position among the decoded tokens.
// Hugging Face's ByteLevel decoder joins all tokens into one string, so
// decoders after it (or after Fuse) see the whole text; here they run per
// token with `fused` set, which is exact for everything those models use
// (a Strip of leading characters applies to the first token only; a Strip of
// trailing characters after a fusing step is rejected at load time).
// Invalid UTF-8 becomes one U+FFFD per maximal ill-formed subpart (Hugging
// Face's ByteFallback emits one per byte in that case).
#pragma once

#include <cstddef>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "common/tokenizer/json_util.h"

namespace krasis::tokenizer {

class Decoder {
 public:
  virtual ~Decoder() = default;
  // Transforms `token` in place. `index` is its position among the decoded
  // tokens (0 for the first); `fused` says an earlier step joined the tokens.
  virtual void DecodeToken(std::string* token, size_t index, bool fused) const = 0;
  // Whether the tokens count as joined after this step.
  virtual bool Fuses() const { return false; }
};

// Builds the decoder described by `j`; nullptr for null (tokens are then
// joined with spaces, as Hugging Face does).
absl::StatusOr<std::unique_ptr<Decoder>> DecoderFromJson(const Json& j);

}  // namespace krasis::tokenizer
