// UTF-8 helpers for the tokenizer: decoding one code point, validating and
// repairing byte strings (invalid sequences become U+FFFD, one per maximal
// subpart, the substitution rule of Unicode, WHATWG TextDecoder and Rust's
// from_utf8_lossy), and the few Unicode character classes the Hugging Face
// tokenizer pipeline relies on (whitespace, "word" characters, numerics).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "common/utf8.h"

namespace krasis::tokenizer {

inline constexpr std::string_view kReplacementChar = "\xEF\xBF\xBD";  // U+FFFD

// Decodes the code point starting at `text[pos]` of a string known to be valid
// UTF-8; stores its byte length in *len.
char32_t DecodeUtf8(std::string_view text, size_t pos, size_t* len);

using krasis::AppendUtf8;  // common/utf8.h

// Length in bytes of the UTF-8 sequence a lead byte announces (1 for bytes that
// cannot lead a sequence).
inline size_t Utf8SeqLen(unsigned char lead) {
  if (lead < 0xC0) return 1;
  if (lead < 0xE0) return 2;
  if (lead < 0xF0) return 3;
  return 4;
}

// True when `text` is well-formed UTF-8 (no overlongs, surrogates or values
// above U+10FFFF).
bool IsValidUtf8(std::string_view text);

// Appends `in` to `out` with every ill-formed sequence replaced by U+FFFD.
// With `final` false, an incomplete but so far well-formed sequence at the end
// is left unconsumed (for streaming); returns the number of bytes consumed.
size_t AppendValidUtf8(std::string_view in, bool final, std::string* out);

// `in` with ill-formed sequences replaced by U+FFFD.
std::string ToValidUtf8(std::string_view in);

// Unicode White_Space (Rust's char::is_whitespace).
bool IsWhitespace(char32_t cp);
// Regex \w in Rust's regex crate, approximated by general category:
// letters, marks, Nd, Nl and connector punctuation.
bool IsWordChar(char32_t cp);
// Rust's char::is_numeric: general categories Nd, Nl and No.
bool IsNumeric(char32_t cp);

}  // namespace krasis::tokenizer
