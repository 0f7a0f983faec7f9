// Python str methods, repr and float formatting on UTF-8 (see pystr.h).
#include "common/chat_template/pystr.h"

#include <charconv>
#include <cmath>
#include <cstdio>

#include "common/chat_template/unicode.h"

namespace krasis::chat_template::pystr {
namespace {

// Normalises Python slice bounds start/end for a string of `len` code points.
void AdjustBounds(int64_t len, std::optional<int64_t> start, std::optional<int64_t> end,
                  int64_t* s, int64_t* e) {
  *s = start.value_or(0);
  *e = end.value_or(len);
  if (*s < 0) *s = std::max<int64_t>(0, *s + len);
  if (*e < 0) *e = std::max<int64_t>(0, *e + len);
  if (*e > len) *e = len;
}

bool InSet(char32_t c, const std::u32string& set) {
  return set.find(c) != std::u32string::npos;
}

std::u32string Sub(const std::u32string& s, int64_t b, int64_t e) {
  return s.substr(static_cast<size_t>(b), static_cast<size_t>(e - b));
}

}  // namespace

std::string Strip(std::string_view s, const std::optional<std::string>& chars, bool left,
                  bool right) {
  const std::u32string u = DecodeUtf8(s);
  const std::u32string set = chars ? DecodeUtf8(*chars) : std::u32string();
  auto strip = [&](char32_t c) { return chars ? InSet(c, set) : IsPySpace(c); };
  size_t b = 0, e = u.size();
  if (left) {
    while (b < e && strip(u[b])) ++b;
  }
  if (right) {
    while (e > b && strip(u[e - 1])) --e;
  }
  return EncodeUtf8(std::u32string_view(u).substr(b, e - b));
}

std::vector<std::string> Split(std::string_view s, const std::optional<std::string>& sep,
                               int64_t maxsplit) {
  std::vector<std::string> out;
  if (maxsplit < 0) maxsplit = INT64_MAX;
  if (sep) {
    size_t pos = 0;
    while (static_cast<int64_t>(out.size()) < maxsplit) {
      const size_t hit = s.find(*sep, pos);
      if (hit == std::string_view::npos) break;
      out.emplace_back(s.substr(pos, hit - pos));
      pos = hit + sep->size();
    }
    out.emplace_back(s.substr(pos));
    return out;
  }
  const std::u32string u = DecodeUtf8(s);
  size_t i = 0;
  const size_t n = u.size();
  while (true) {
    while (i < n && IsPySpace(u[i])) ++i;
    if (i == n) break;
    if (static_cast<int64_t>(out.size()) == maxsplit) {
      out.push_back(EncodeUtf8(std::u32string_view(u).substr(i)));
      break;
    }
    size_t j = i;
    while (j < n && !IsPySpace(u[j])) ++j;
    out.push_back(EncodeUtf8(std::u32string_view(u).substr(i, j - i)));
    i = j;
  }
  return out;
}

std::vector<std::string> RSplit(std::string_view s, const std::optional<std::string>& sep,
                                int64_t maxsplit) {
  std::vector<std::string> out;
  if (maxsplit < 0) maxsplit = INT64_MAX;
  if (sep) {
    size_t end = s.size();
    while (static_cast<int64_t>(out.size()) < maxsplit) {
      if (end < sep->size()) break;
      const size_t hit = s.rfind(*sep, end - sep->size());
      if (hit == std::string_view::npos) break;
      out.emplace_back(s.substr(hit + sep->size(), end - hit - sep->size()));
      end = hit;
    }
    out.emplace_back(s.substr(0, end));
    return {out.rbegin(), out.rend()};
  }
  const std::u32string u = DecodeUtf8(s);
  size_t i = u.size();
  while (true) {
    while (i > 0 && IsPySpace(u[i - 1])) --i;
    if (i == 0) break;
    if (static_cast<int64_t>(out.size()) == maxsplit) {
      out.push_back(EncodeUtf8(std::u32string_view(u).substr(0, i)));
      break;
    }
    size_t j = i;
    while (j > 0 && !IsPySpace(u[j - 1])) --j;
    out.push_back(EncodeUtf8(std::u32string_view(u).substr(j, i - j)));
    i = j;
  }
  return {out.rbegin(), out.rend()};
}

std::vector<std::string> SplitLines(std::string_view s, bool keepends) {
  const std::u32string u = DecodeUtf8(s);
  std::vector<std::string> out;
  size_t i = 0, start = 0;
  while (i < u.size()) {
    if (!IsPyLineBreak(u[i])) {
      ++i;
      continue;
    }
    size_t eol = i + 1;
    if (u[i] == '\r' && eol < u.size() && u[eol] == '\n') ++eol;
    const size_t end = keepends ? eol : i;
    out.push_back(EncodeUtf8(std::u32string_view(u).substr(start, end - start)));
    i = start = eol;
  }
  if (start < u.size()) out.push_back(EncodeUtf8(std::u32string_view(u).substr(start)));
  return out;
}

std::string Replace(std::string_view s, std::string_view old, std::string_view repl,
                    int64_t count) {
  if (count < 0) count = INT64_MAX;
  std::string out;
  if (old.empty()) {
    const std::u32string u = DecodeUtf8(s);
    int64_t done = 0;
    for (size_t i = 0; i <= u.size(); ++i) {
      if (done < count) {
        out.append(repl);
        ++done;
      }
      if (i < u.size()) AppendUtf8(u[i], &out);
    }
    return out;
  }
  size_t pos = 0;
  int64_t done = 0;
  while (done < count) {
    const size_t hit = s.find(old, pos);
    if (hit == std::string_view::npos) break;
    out.append(s.substr(pos, hit - pos));
    out.append(repl);
    pos = hit + old.size();
    ++done;
  }
  out.append(s.substr(pos));
  return out;
}

int64_t Find(std::string_view s, std::string_view sub, std::optional<int64_t> start,
             std::optional<int64_t> end, bool reverse) {
  const std::u32string u = DecodeUtf8(s);
  const std::u32string needle = DecodeUtf8(sub);
  int64_t b, e;
  AdjustBounds(static_cast<int64_t>(u.size()), start, end, &b, &e);
  if (b > e || e - b < static_cast<int64_t>(needle.size())) return -1;
  const std::u32string hay = Sub(u, b, e);
  const size_t hit = reverse ? hay.rfind(needle) : hay.find(needle);
  return hit == std::u32string::npos ? -1 : b + static_cast<int64_t>(hit);
}

int64_t Count(std::string_view s, std::string_view sub, std::optional<int64_t> start,
              std::optional<int64_t> end) {
  const std::u32string u = DecodeUtf8(s);
  const std::u32string needle = DecodeUtf8(sub);
  int64_t b, e;
  AdjustBounds(static_cast<int64_t>(u.size()), start, end, &b, &e);
  if (b > e) return 0;
  if (needle.empty()) return e - b + 1;
  const std::u32string hay = Sub(u, b, e);
  int64_t n = 0;
  size_t pos = 0;
  while ((pos = hay.find(needle, pos)) != std::u32string::npos) {
    ++n;
    pos += needle.size();
  }
  return n;
}

bool StartsWith(std::string_view s, std::string_view prefix, std::optional<int64_t> start,
                std::optional<int64_t> end) {
  if (!start && !end) return s.substr(0, prefix.size()) == prefix;
  const std::u32string u = DecodeUtf8(s);
  int64_t b, e;
  AdjustBounds(static_cast<int64_t>(u.size()), start, end, &b, &e);
  if (b > static_cast<int64_t>(u.size())) return false;
  if (e < b) e = b;
  const std::string part = EncodeUtf8(Sub(u, b, e));
  return std::string_view(part).substr(0, prefix.size()) == prefix;
}

bool EndsWith(std::string_view s, std::string_view suffix, std::optional<int64_t> start,
              std::optional<int64_t> end) {
  if (!start && !end) {
    return s.size() >= suffix.size() && s.substr(s.size() - suffix.size()) == suffix;
  }
  const std::u32string u = DecodeUtf8(s);
  int64_t b, e;
  AdjustBounds(static_cast<int64_t>(u.size()), start, end, &b, &e);
  if (b > static_cast<int64_t>(u.size())) return false;
  if (e < b) e = b;
  const std::string part = EncodeUtf8(Sub(u, b, e));
  return part.size() >= suffix.size() && part.substr(part.size() - suffix.size()) == suffix;
}

std::string Upper(std::string_view s) {
  std::string out;
  for (char32_t c : DecodeUtf8(s)) AppendUtf8(ToUpper(c), &out);
  return out;
}

std::string Lower(std::string_view s) {
  std::string out;
  for (char32_t c : DecodeUtf8(s)) AppendUtf8(ToLower(c), &out);
  return out;
}

std::string SwapCase(std::string_view s) {
  std::string out;
  for (char32_t c : DecodeUtf8(s)) {
    AppendUtf8(IsUpperCase(c) ? ToLower(c) : IsLowerCase(c) ? ToUpper(c) : c, &out);
  }
  return out;
}

std::string Title(std::string_view s) {
  std::string out;
  bool previous_is_cased = false;
  for (char32_t c : DecodeUtf8(s)) {
    AppendUtf8(previous_is_cased ? ToLower(c) : ToTitle(c), &out);
    previous_is_cased = IsCased(c);
  }
  return out;
}

std::string Capitalize(std::string_view s) {
  std::string out;
  bool first = true;
  for (char32_t c : DecodeUtf8(s)) {
    AppendUtf8(first ? ToTitle(c) : ToLower(c), &out);
    first = false;
  }
  return out;
}

std::string JinjaTitle(std::string_view s) {
  // Jinja: "".join(w[0].upper() + w[1:].lower() for w in re.split(r"([-\s({\[<]+)", s))
  auto is_sep = [](char32_t c) {
    return c == '-' || c == '(' || c == '{' || c == '[' || c == '<' || IsPySpace(c);
  };
  std::string out;
  bool item_start = true;
  bool in_sep = false;
  for (char32_t c : DecodeUtf8(s)) {
    const bool sep = is_sep(c);
    if (sep != in_sep) item_start = true;
    in_sep = sep;
    AppendUtf8(item_start ? ToUpper(c) : ToLower(c), &out);
    item_start = false;
  }
  return out;
}

std::optional<bool> Predicate(std::string_view name, std::string_view s) {
  const std::u32string u = DecodeUtf8(s);
  auto all = [&](auto pred) {
    if (u.empty()) return false;
    for (char32_t c : u) {
      if (!pred(c)) return false;
    }
    return true;
  };
  if (name == "isdigit" || name == "isdecimal") return all(IsDecimal);
  if (name == "isnumeric") return all(IsNumeric);
  if (name == "isalpha") return all(IsAlpha);
  if (name == "isalnum") return all(IsAlnum);
  if (name == "isspace") return all(IsPySpace);
  if (name == "isascii") return IsAscii(s);
  if (name == "isprintable") {
    for (char32_t c : u) {
      if (!IsPyPrintable(c)) return false;
    }
    return true;
  }
  if (name == "islower" || name == "isupper") {
    const bool want_lower = name == "islower";
    bool cased = false;
    for (char32_t c : u) {
      if (want_lower ? IsUpperCase(c) : IsLowerCase(c)) return false;
      if (IsCased(c)) cased = true;
    }
    return cased;
  }
  if (name == "istitle") {
    bool cased = false, previous_is_cased = false;
    for (char32_t c : u) {
      if (IsUpperCase(c)) {
        if (previous_is_cased) return false;
        previous_is_cased = cased = true;
      } else if (IsLowerCase(c)) {
        if (!previous_is_cased) return false;
        previous_is_cased = cased = true;
      } else {
        previous_is_cased = false;
      }
    }
    return cased;
  }
  return std::nullopt;
}

std::string Pad(std::string_view s, int64_t width, std::string_view fill, int align) {
  const int64_t len = static_cast<int64_t>(CodePointCount(s));
  if (width <= len) return std::string(s);
  const int64_t marg = width - len;
  int64_t left = 0;
  if (align == 0) {
    left = marg / 2 + (marg & width & 1);
  } else if (align > 0) {
    left = marg;
  }
  std::string out;
  for (int64_t i = 0; i < left; ++i) out.append(fill);
  out.append(s);
  for (int64_t i = 0; i < marg - left; ++i) out.append(fill);
  return out;
}

std::string ZFill(std::string_view s, int64_t width) {
  const int64_t len = static_cast<int64_t>(CodePointCount(s));
  if (width <= len) return std::string(s);
  std::string out(s);
  const size_t at = (!s.empty() && (s[0] == '+' || s[0] == '-')) ? 1 : 0;
  out.insert(at, static_cast<size_t>(width - len), '0');
  return out;
}

std::string HtmlEscape(std::string_view s) {
  std::string out;
  for (char c : s) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&#34;"; break;
      case '\'': out += "&#39;"; break;
      default: out.push_back(c);
    }
  }
  return out;
}

std::string Repr(std::string_view s) {
  const bool has_single = s.find('\'') != std::string_view::npos;
  const bool has_double = s.find('"') != std::string_view::npos;
  const char quote = (has_single && !has_double) ? '"' : '\'';
  std::string out(1, quote);
  char buf[16];
  for (char32_t c : DecodeUtf8(s)) {
    if (c == static_cast<char32_t>(quote) || c == '\\') {
      out.push_back('\\');
      out.push_back(static_cast<char>(c));
    } else if (c == '\t') {
      out.append("\\t");
    } else if (c == '\n') {
      out.append("\\n");
    } else if (c == '\r') {
      out.append("\\r");
    } else if (!IsPyPrintable(c)) {
      if (c < 0x100) {
        std::snprintf(buf, sizeof(buf), "\\x%02x", static_cast<unsigned>(c));
      } else if (c < 0x10000) {
        std::snprintf(buf, sizeof(buf), "\\u%04x", static_cast<unsigned>(c));
      } else {
        std::snprintf(buf, sizeof(buf), "\\U%08x", static_cast<unsigned>(c));
      }
      out.append(buf);
    } else {
      AppendUtf8(c, &out);
    }
  }
  out.push_back(quote);
  return out;
}

void AppendJsonString(std::string_view s, bool ensure_ascii, std::string* out) {
  char buf[16];
  out->push_back('"');
  auto escape_unit = [&](unsigned unit) {
    std::snprintf(buf, sizeof(buf), "\\u%04x", unit);
    out->append(buf);
  };
  auto handle = [&](char32_t c) -> bool {  // true when c was written as an escape
    switch (c) {
      case '"': out->append("\\\""); return true;
      case '\\': out->append("\\\\"); return true;
      case '\n': out->append("\\n"); return true;
      case '\r': out->append("\\r"); return true;
      case '\t': out->append("\\t"); return true;
      case '\b': out->append("\\b"); return true;
      case '\f': out->append("\\f"); return true;
      default: break;
    }
    if (c < 0x20) {
      escape_unit(static_cast<unsigned>(c));
      return true;
    }
    return false;
  };
  if (!ensure_ascii) {
    size_t run = 0;  // copy runs of bytes that need no escaping
    for (size_t i = 0; i < s.size(); ++i) {
      const auto c = static_cast<unsigned char>(s[i]);
      if (c >= 0x20 && c != '"' && c != '\\') continue;
      out->append(s.substr(run, i - run));
      handle(c);
      run = i + 1;
    }
    out->append(s.substr(run));
  } else {
    for (char32_t c : DecodeUtf8(s)) {
      if (handle(c)) continue;
      if (c < 0x7F) {
        out->push_back(static_cast<char>(c));
      } else if (c < 0x10000) {
        escape_unit(static_cast<unsigned>(c));
      } else {
        const char32_t v = c - 0x10000;
        escape_unit(0xD800 | static_cast<unsigned>(v >> 10));
        escape_unit(0xDC00 | static_cast<unsigned>(v & 0x3FF));
      }
    }
  }
  out->push_back('"');
}

std::string FloatRepr(double d) {
  if (std::isnan(d)) return "nan";
  if (std::isinf(d)) return d > 0 ? "inf" : "-inf";
  char buf[64];
  auto res = std::to_chars(buf, buf + sizeof(buf), d, std::chars_format::scientific);
  std::string_view sci(buf, static_cast<size_t>(res.ptr - buf));
  std::string out;
  if (!sci.empty() && sci[0] == '-') {
    out.push_back('-');
    sci.remove_prefix(1);
  }
  const size_t e_pos = sci.find('e');
  std::string digits;
  for (char c : sci.substr(0, e_pos)) {
    if (c != '.') digits.push_back(c);
  }
  int exp10 = 0;
  std::from_chars(sci.data() + e_pos + 1 + (sci[e_pos + 1] == '+' ? 1 : 0),
                  sci.data() + sci.size(), exp10);
  const int decpt = exp10 + 1;  // position of the decimal point relative to digits
  const int ndigits = static_cast<int>(digits.size());
  if (decpt > -4 && decpt <= 16) {
    if (decpt <= 0) {
      out.append("0.");
      out.append(static_cast<size_t>(-decpt), '0');
      out.append(digits);
    } else if (decpt >= ndigits) {
      out.append(digits);
      out.append(static_cast<size_t>(decpt - ndigits), '0');
      out.append(".0");
    } else {
      out.append(digits.substr(0, static_cast<size_t>(decpt)));
      out.push_back('.');
      out.append(digits.substr(static_cast<size_t>(decpt)));
    }
    return out;
  }
  out.push_back(digits[0]);
  if (ndigits > 1) {
    out.push_back('.');
    out.append(digits.substr(1));
  }
  const int e = decpt - 1;
  std::snprintf(buf, sizeof(buf), "e%c%02d", e < 0 ? '-' : '+', e < 0 ? -e : e);
  out.append(buf);
  return out;
}

std::vector<int64_t> SliceIndices(int64_t len, std::optional<int64_t> start,
                                  std::optional<int64_t> stop, int64_t step) {
  int64_t b, e;
  if (step > 0) {
    b = start.value_or(0);
    e = stop.value_or(len);
    if (b < 0) b = std::max<int64_t>(0, b + len);
    if (b > len) b = len;
    if (e < 0) e = std::max<int64_t>(0, e + len);
    if (e > len) e = len;
  } else {
    b = start.value_or(len - 1);
    e = stop.value_or(-1);
    if (start) {
      if (b < 0) b = std::max<int64_t>(-1, b + len);
      if (b >= len) b = len - 1;
    }
    if (stop) {
      if (e < 0) e = std::max<int64_t>(-1, e + len);
      if (e >= len) e = len - 1;
    }
  }
  std::vector<int64_t> out;
  if (step > 0) {
    for (int64_t i = b; i < e; i += step) out.push_back(i);
  } else {
    for (int64_t i = b; i > e; i += step) out.push_back(i);
  }
  return out;
}

}  // namespace krasis::chat_template::pystr
