// Small byte-level helpers shared by the gateway's streaming text parsers (stop
// strings, <think> reasoning, tool calls).
//
// All of them work on UTF-8 text that arrives in arbitrary chunks. The common
// pattern is "hold back the longest suffix that could still grow into a marker":
// PartialSuffix() measures that suffix, FindFirst() finds the earliest complete
// marker, and the UTF-8 helpers make sure text handed on never ends inside a
// code point.
#pragma once

#include <cstddef>
#include <span>
#include <string>
#include <string_view>

namespace krasis::gateway {

// ASCII whitespace as JSON and the chat templates use it (space, \t, \n, \r, \f, \v).
inline bool IsSpace(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

// True when every byte of `text` is whitespace (also for empty text).
bool AllSpace(std::string_view text);

// Number of leading whitespace bytes.
size_t LeadingSpace(std::string_view text);

// `text` without leading and trailing whitespace.
std::string_view TrimSpace(std::string_view text);

// Length of the longest suffix of `text` that is a proper, non-empty prefix of
// `marker` (0 when there is none). Text that ends this way may still become the
// marker once more text arrives, so a streaming parser holds it back.
size_t PartialSuffix(std::string_view text, std::string_view marker);

// The largest PartialSuffix() over several markers.
size_t PartialSuffix(std::string_view text, std::span<const std::string_view> markers);

// The earliest complete occurrence of any marker in `text` at or after `from`.
// Ties at one position go to the longer marker. `pos` is npos when none occurs.
struct MarkerHit {
  size_t pos = std::string_view::npos;
  size_t which = 0;  // index into the markers span
  bool found() const { return pos != std::string_view::npos; }
};
MarkerHit FindFirst(std::string_view text, std::span<const std::string_view> markers,
                    size_t from = 0);

// Number of bytes at the end of `text` that form an incomplete (so far valid)
// UTF-8 sequence: the bytes a streaming parser must keep until the rest of the
// code point arrives. 0 for text that ends on a code point boundary.
size_t IncompleteUtf8Tail(std::string_view text);

// The largest position <= `pos` that is not inside a UTF-8 sequence (continuation
// bytes are skipped backwards).
size_t Utf8Floor(std::string_view text, size_t pos);

}  // namespace krasis::gateway
