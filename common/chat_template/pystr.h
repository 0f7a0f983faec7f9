// Python str semantics on UTF-8 strings, for the chat-template interpreter.
//
// Templates call Python string methods (strip, split, startswith, replace, title ...)
// and print floats and reprs; the results must match CPython byte for byte. Indexes
// and counts are in code points, as in Python. Unicode case mapping comes from
// utf8proc (simple mappings).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace krasis::chat_template::pystr {

// str.strip / lstrip / rstrip; `chars` nullopt strips whitespace.
std::string Strip(std::string_view s, const std::optional<std::string>& chars, bool left,
                  bool right);
// str.split / rsplit; `sep` nullopt splits on whitespace runs. `sep` must not be empty.
std::vector<std::string> Split(std::string_view s, const std::optional<std::string>& sep,
                               int64_t maxsplit);
std::vector<std::string> RSplit(std::string_view s, const std::optional<std::string>& sep,
                                int64_t maxsplit);
std::vector<std::string> SplitLines(std::string_view s, bool keepends);
// str.replace (count < 0: all).
std::string Replace(std::string_view s, std::string_view old, std::string_view repl,
                    int64_t count);
// str.find / rfind / count over s[start:end] (Python slice bounds, code points);
// find returns a code-point index or -1.
int64_t Find(std::string_view s, std::string_view sub, std::optional<int64_t> start,
             std::optional<int64_t> end, bool reverse);
int64_t Count(std::string_view s, std::string_view sub, std::optional<int64_t> start,
              std::optional<int64_t> end);
// s[start:end] (Python slice bounds in code points) is a prefix/suffix match.
bool StartsWith(std::string_view s, std::string_view prefix, std::optional<int64_t> start,
                std::optional<int64_t> end);
bool EndsWith(std::string_view s, std::string_view suffix, std::optional<int64_t> start,
              std::optional<int64_t> end);
std::string Upper(std::string_view s);
std::string Lower(std::string_view s);
std::string SwapCase(std::string_view s);
std::string Title(std::string_view s);       // str.title()
std::string Capitalize(std::string_view s);  // str.capitalize()
std::string JinjaTitle(std::string_view s);  // Jinja's |title filter
// Python's str.is*() predicates, by name ("isdigit" ...); nullopt for unknown names.
std::optional<bool> Predicate(std::string_view name, std::string_view s);
// str.center / ljust / rjust / zfill.
std::string Pad(std::string_view s, int64_t width, std::string_view fill, int align);
std::string ZFill(std::string_view s, int64_t width);

// markupsafe.escape(): & < > " ' as HTML entities.
std::string HtmlEscape(std::string_view s);
// repr() of a str.
std::string Repr(std::string_view s);
// json.dumps() of a str.
void AppendJsonString(std::string_view s, bool ensure_ascii, std::string* out);
// repr() of a float (shortest round-trip digits, Python's layout).
std::string FloatRepr(double d);
// Python slice bounds normalisation for a sequence of `len` items (step != 0):
// returns the indices in order.
std::vector<int64_t> SliceIndices(int64_t len, std::optional<int64_t> start,
                                  std::optional<int64_t> stop, int64_t step);

}  // namespace krasis::chat_template::pystr
