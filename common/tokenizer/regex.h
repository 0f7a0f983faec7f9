// A compiled PCRE2 regular expression (UTF + UCP, JIT-compiled) for the Split
// pre-tokenizer and the Replace normalizer/decoder of tokenizer.json.
//
// Hugging Face tokenizers compiles these patterns with Oniguruma, whose escapes
// differ from PCRE2's in a few places (\s also matches U+0085, \w also marks,
// \h is a hex digit, \v only the vertical tab); Compile() rewrites them so the
// two agree. Matching is thread-safe: per-thread match data and JIT
// stacks are kept in thread_local storage.
#pragma once

#include <cstddef>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "common/tokenizer/json_util.h"

namespace krasis::tokenizer {

class Regex {
 public:
  // Compiles `pattern`; errors name the pattern and PCRE2's message.
  static absl::StatusOr<std::unique_ptr<Regex>> Compile(std::string_view pattern);
  // A regex that matches `literal` exactly.
  static absl::StatusOr<std::unique_ptr<Regex>> Literal(std::string_view literal);

  ~Regex();
  Regex(const Regex&) = delete;
  Regex& operator=(const Regex&) = delete;

  // Appends the [begin, end) byte offsets of every non-overlapping match in
  // `text` (valid UTF-8), left to right. Empty matches are reported too; the
  // search then resumes one character further on.
  void FindAll(std::string_view text, std::vector<std::pair<size_t, size_t>>* matches) const;

  const std::string& pattern() const { return pattern_; }

 private:
  Regex() = default;
  std::string pattern_;
  void* code_ = nullptr;  // pcre2_code_8*
  bool jit_ = false;      // JIT-compiled: match through pcre2_jit_match
};

// The pattern object of tokenizer.json: {"String": literal} or {"Regex": re}.
absl::StatusOr<std::unique_ptr<Regex>> PatternFromJson(const Json& j, std::string_view what);

// Rewrites the escapes above (outside and inside character classes) so PCRE2
// matches what Oniguruma matches. Exposed for tests.
std::string TranslatePattern(std::string_view pattern);

}  // namespace krasis::tokenizer
