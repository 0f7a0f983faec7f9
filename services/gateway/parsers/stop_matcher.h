// Stop strings matched on generated TEXT (not token ids), across chunk boundaries.
//
// The gateway detokenizes incrementally and feeds each new piece of text to a
// StopMatcher. The matcher hands text on only once it can no longer be the start
// of a stop string: it holds back the longest suffix that is a proper prefix of
// some stop string, so no part of a stop string ever leaks to the client. When a
// stop string completes, it emits exactly the text before it (OpenAI semantics:
// the stop string itself is not part of the output, unless include_stop_string)
// and reports which stop string matched.
//
// "Earliest" match: generation stops at the first moment any stop string is
// complete, i.e. the occurrence with the smallest END in the text; when several
// end at the same byte the one that starts earliest (the longest) wins. For stop
// strings {"abcd", "bc"} and text "abcd", "bc" completes first, so the output is
// "a". FindFirstStop() applies the same rule to a whole text.
//
// Matching is byte-wise with one KMP automaton per stop string, so a Push costs
// O(chunk bytes x stop strings) however long the stop strings are. Emitted text
// never ends inside a UTF-8 code point: the held-back suffix always starts at a
// code point boundary, and an incomplete trailing sequence (a chunk that split a
// code point) is held too until it completes or Finish() flushes it.
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace krasis::gateway {

struct StopResult {
  std::string emit;     // text safe to send to the client now
  bool stopped = false;  // a stop string matched: generation should end
  std::string matched;  // the stop string that matched (when stopped)
};

class StopMatcher {
 public:
  // Empty strings in `stops` are ignored. With include_stop_string the matched
  // stop string is emitted after the text before it (vLLM's
  // include_stop_str_in_output).
  explicit StopMatcher(std::vector<std::string> stops, bool include_stop_string = false);

  // Feeds the next piece of text. After a match every further Push returns an
  // empty emit with stopped = true.
  StopResult Push(std::string_view chunk);

  // The end of the stream (no stop string matched): returns the held-back text.
  // Returns "" after a match.
  std::string Finish();

  bool stopped() const { return stopped_; }
  // True when there are no (non-empty) stop strings: the matcher passes text on.
  bool empty() const { return patterns_.empty(); }

 private:
  struct Pattern {
    std::string text;
    std::vector<size_t> border;  // KMP failure function: border[i] for text[0..i]
    size_t state = 0;            // length of the longest prefix matched so far
  };

  std::vector<Pattern> patterns_;
  bool include_stop_string_;
  std::string pending_;  // received, not yet emitted
  bool stopped_ = false;
  std::string matched_;
};

// The earliest stop string occurrence in a whole text, by the rule above.
struct StopMatch {
  size_t pos = 0;         // where the stop string starts in the text
  size_t stop_index = 0;  // index into `stops`
};
std::optional<StopMatch> FindFirstStop(std::string_view text,
                                       const std::vector<std::string>& stops);

}  // namespace krasis::gateway
