// Pre-tokenizers of tokenizer.json: they cut normalized text into the pieces
// ("words") the BPE model encodes one at a time. Supported: Split (PCRE2 regex
// or literal, all five delimiter behaviors, invert), ByteLevel (prefix space,
// the GPT-2 regex, byte -> character mapping), Digits and Sequence; any other
// type is an error naming it.
//
// Pieces stream through callbacks instead of vectors of strings: a piece is a
// view that lives only for the duration of the call.
#pragma once

#include <memory>
#include <string_view>

#include "absl/functional/function_ref.h"
#include "absl/status/statusor.h"
#include "common/tokenizer/json_util.h"

namespace krasis::tokenizer {

using PieceSink = absl::FunctionRef<void(std::string_view)>;

class PreTokenizer {
 public:
  virtual ~PreTokenizer() = default;
  // Splits `piece` (valid UTF-8) and passes every non-empty result to `sink`,
  // in order.
  virtual void Split(std::string_view piece, PieceSink sink) const = 0;
};

// Builds the pre-tokenizer described by `j`; nullptr for null.
absl::StatusOr<std::unique_ptr<PreTokenizer>> PreTokenizerFromJson(const Json& j);

}  // namespace krasis::tokenizer
