// Post-processors of tokenizer.json: what `add_special_tokens=True` adds
// around an encoded sequence (a BOS token, say). Krasis encodes without them
// by default (chat templates spell out their special tokens); callers that
// want them call Tokenizer::AddSpecialTokens(). Supported: ByteLevel (offsets
// only, nothing to do for ids), TemplateProcessing (the "single" template) and
// Sequence; any other type is an error naming it.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "absl/status/statusor.h"
#include "common/tokenizer/json_util.h"

namespace krasis::tokenizer {

class PostProcessor {
 public:
  // One element of the single-sequence template: either fixed ids or the
  // sequence itself (`is_sequence`).
  struct Piece {
    bool is_sequence = false;
    std::vector<int32_t> ids;
  };

  // Builds the post-processor described by `j`; nullptr for null or when it
  // adds nothing to ids (ByteLevel).
  static absl::StatusOr<std::unique_ptr<PostProcessor>> FromJson(const Json& j);

  std::vector<int32_t> Apply(std::span<const int32_t> ids) const;

 private:
  std::vector<Piece> single_;
};

}  // namespace krasis::tokenizer
