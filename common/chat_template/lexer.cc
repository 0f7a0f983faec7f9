// Template lexer, a hand-written port of jinja2's regex lexer (see lexer.h).
#include "common/chat_template/lexer.h"

#include <algorithm>
#include <cstdlib>

#include "common/chat_template/unicode.h"
#include "common/status.h"

namespace krasis::chat_template {
namespace {

bool IsDigit(char c) { return c >= '0' && c <= '9'; }
bool IsNameStart(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
}
bool IsNameChar(char c) { return IsNameStart(c) || IsDigit(c); }

// Length of the Python-whitespace run at s[pos:].
size_t SpaceRun(std::string_view s, size_t pos) {
  size_t i = pos;
  while (i < s.size()) {
    const auto c = static_cast<unsigned char>(s[i]);
    if (c < 0x80) {
      if (!IsPySpace(c)) break;
      ++i;
      continue;
    }
    size_t j = i;
    const std::u32string cp = DecodeUtf8(s.substr(i, std::min<size_t>(4, s.size() - i)));
    if (cp.empty() || !IsPySpace(cp[0])) break;
    std::string enc;
    AppendUtf8(cp[0], &enc);
    j += enc.size();
    i = j;
  }
  return i - pos;
}

bool AllSpace(std::string_view s) { return !s.empty() && SpaceRun(s, 0) == s.size(); }

std::string RStripSpace(std::string_view s) {
  const std::u32string u = DecodeUtf8(s);
  size_t e = u.size();
  while (e > 0 && IsPySpace(u[e - 1])) --e;
  return EncodeUtf8(std::u32string_view(u).substr(0, e));
}

// jinja2 normalises \r\n and \r to \n and drops one trailing newline.
std::string Normalize(std::string_view source) {
  std::string out;
  out.reserve(source.size());
  for (size_t i = 0; i < source.size(); ++i) {
    if (source[i] == '\r') {
      out.push_back('\n');
      if (i + 1 < source.size() && source[i + 1] == '\n') ++i;
    } else {
      out.push_back(source[i]);
    }
  }
  if (!out.empty() && out.back() == '\n') out.pop_back();
  return out;
}

class Lexer {
 public:
  Lexer(std::string_view src, const std::string& name) : src_(src), name_(name) {
    line_starts_.push_back(0);
    for (size_t i = 0; i < src_.size(); ++i) {
      if (src_[i] == '\n') line_starts_.push_back(i + 1);
    }
  }

  absl::StatusOr<std::vector<Token>> Run() {
    while (pos_ < src_.size()) RETURN_IF_ERROR(LexRoot());
    Token eof;
    eof.type = TokenType::kEof;
    SetPos(&eof, src_.size());
    tokens_.push_back(std::move(eof));
    return std::move(tokens_);
  }

 private:
  void SetPos(Token* t, size_t offset) const {
    const auto it = std::upper_bound(line_starts_.begin(), line_starts_.end(), offset);
    const size_t line_start = *(it - 1);
    t->line = static_cast<int>(it - line_starts_.begin());
    t->column = static_cast<int>(CodePointCount(src_.substr(line_start, offset - line_start))) + 1;
  }

  absl::Status Error(size_t offset, std::string_view message) const {
    Token t;
    SetPos(&t, offset);
    return InvalidArgumentError(name_, ":", t.line, ":", t.column, ": ", message);
  }

  void Emit(TokenType type, std::string value, size_t offset) {
    Token t;
    t.type = type;
    t.value = std::move(value);
    SetPos(&t, offset);
    tokens_.push_back(std::move(t));
  }

  // Applies "-" / lstrip_blocks to the text before a tag and emits it.
  void EmitText(std::string_view text, size_t offset, char sign, bool lstrip_allowed) {
    std::string data;
    if (sign == '-') {
      data = RStripSpace(text);
    } else if (sign != '+' && lstrip_allowed) {
      const size_t l_pos = text.rfind('\n') == std::string_view::npos ? 0 : text.rfind('\n') + 1;
      if ((l_pos > 0 || line_starting_) && AllSpace(text.substr(l_pos))) {
        data = std::string(text.substr(0, l_pos));
      } else {
        data = std::string(text);
      }
    } else {
      data = std::string(text);
    }
    if (!data.empty()) Emit(TokenType::kData, std::move(data), offset);
  }

  // Matches `{%[-+]? \s* raw \s* (-%}\s* | %})` at i; sets *end past it.
  bool MatchRawBegin(size_t i, char* sign, size_t* end) const {
    size_t p = i + 2;
    *sign = 0;
    if (p < src_.size() && (src_[p] == '-' || src_[p] == '+')) *sign = src_[p++];
    p += SpaceRun(src_, p);
    if (src_.compare(p, 3, "raw") != 0) return false;
    p += 3;
    p += SpaceRun(src_, p);
    if (src_.compare(p, 3, "-%}") == 0) {
      p += 3;
      p += SpaceRun(src_, p);
    } else if (src_.compare(p, 2, "%}") == 0) {
      p += 2;
    } else {
      return false;
    }
    *end = p;
    return true;
  }

  absl::Status LexRoot() {
    size_t i = pos_;
    while (true) {
      i = src_.find('{', i);
      if (i == std::string_view::npos || i + 1 >= src_.size()) {
        Emit(TokenType::kData, std::string(src_.substr(pos_)), pos_);
        pos_ = src_.size();
        return absl::OkStatus();
      }
      const char k = src_[i + 1];
      if (k == '{' || k == '%' || k == '#') break;
      ++i;
    }
    const char kind = src_[i + 1];
    const std::string_view text = src_.substr(pos_, i - pos_);
    char raw_sign = 0;
    size_t raw_end = 0;
    if (kind == '%' && MatchRawBegin(i, &raw_sign, &raw_end)) {
      EmitText(text, pos_, raw_sign, true);
      line_starting_ = src_[raw_end - 1] == '\n';
      return LexRaw(i, raw_end);
    }
    char sign = 0;
    size_t p = i + 2;
    if (p < src_.size() && (src_[p] == '-' || src_[p] == '+')) sign = src_[p++];
    EmitText(text, pos_, sign, kind != '{');
    line_starting_ = false;
    if (kind == '#') return LexComment(i, p);
    Emit(kind == '%' ? TokenType::kBlockBegin : TokenType::kVariableBegin,
         std::string(src_.substr(i, p - i)), i);
    pos_ = p;
    return LexTag(kind == '%');
  }

  absl::Status LexComment(size_t begin, size_t p) {
    size_t q = p;
    while (true) {
      q = src_.find("#}", q);
      if (q == std::string_view::npos) return Error(begin, "Missing end of comment tag");
      // The comment text is lazy, so "-#}" / "+#}" wins over "#}" one byte later.
      const char sign = (q > p && (src_[q - 1] == '-' || src_[q - 1] == '+')) ? src_[q - 1] : 0;
      size_t end = q + 2;
      if (sign == '-') {
        end += SpaceRun(src_, end);
      } else if (sign == 0 && end < src_.size() && src_[end] == '\n') {
        ++end;
      }
      line_starting_ = src_[end - 1] == '\n';
      pos_ = end;
      return absl::OkStatus();
    }
  }

  absl::Status LexRaw(size_t begin, size_t p) {
    // (.*?)({%[-+]?\s*endraw\s*(+%}|-%}\s*|%}\n?))
    size_t q = p;
    while (true) {
      q = src_.find("{%", q);
      if (q == std::string_view::npos) return Error(begin, "Missing end of raw directive");
      size_t r = q + 2;
      char sign = 0;
      if (r < src_.size() && (src_[r] == '-' || src_[r] == '+')) sign = src_[r++];
      r += SpaceRun(src_, r);
      if (src_.compare(r, 6, "endraw") != 0) {
        ++q;
        continue;
      }
      r += 6;
      r += SpaceRun(src_, r);
      size_t end;
      if (src_.compare(r, 3, "+%}") == 0) {
        end = r + 3;
      } else if (src_.compare(r, 3, "-%}") == 0) {
        end = r + 3;
        end += SpaceRun(src_, end);
      } else if (src_.compare(r, 2, "%}") == 0) {
        end = r + 2;
        if (end < src_.size() && src_[end] == '\n') ++end;
      } else {
        ++q;
        continue;
      }
      EmitText(src_.substr(p, q - p), p, sign, true);
      line_starting_ = src_[end - 1] == '\n';
      pos_ = end;
      return absl::OkStatus();
    }
  }

  // Tokens inside {% %} or {{ }} up to the matching end.
  absl::Status LexTag(bool block) {
    std::vector<char> balance;
    while (true) {
      if (pos_ >= src_.size()) return absl::OkStatus();  // parser reports the missing end
      if (balance.empty()) {
        size_t end = 0;
        if (block) {
          if (src_.compare(pos_, 3, "+%}") == 0) {
            end = pos_ + 3;
          } else if (src_.compare(pos_, 3, "-%}") == 0) {
            end = pos_ + 3;
            end += SpaceRun(src_, end);
          } else if (src_.compare(pos_, 2, "%}") == 0) {
            end = pos_ + 2;
            if (end < src_.size() && src_[end] == '\n') ++end;
          }
        } else {
          if (src_.compare(pos_, 3, "-}}") == 0) {
            end = pos_ + 3;
            end += SpaceRun(src_, end);
          } else if (src_.compare(pos_, 2, "}}") == 0) {
            end = pos_ + 2;
          }
        }
        if (end != 0) {
          Emit(block ? TokenType::kBlockEnd : TokenType::kVariableEnd,
               std::string(src_.substr(pos_, end - pos_)), pos_);
          line_starting_ = src_[end - 1] == '\n';
          pos_ = end;
          return absl::OkStatus();
        }
      }
      const size_t space = SpaceRun(src_, pos_);
      if (space > 0) {
        pos_ += space;
        continue;
      }
      const char c = src_[pos_];
      if (IsDigit(c)) {
        RETURN_IF_ERROR(LexNumber());
      } else if (IsNameStart(c)) {
        size_t e = pos_ + 1;
        while (e < src_.size() && IsNameChar(src_[e])) ++e;
        Emit(TokenType::kName, std::string(src_.substr(pos_, e - pos_)), pos_);
        pos_ = e;
      } else if (c == '\'' || c == '"') {
        RETURN_IF_ERROR(LexString());
      } else {
        RETURN_IF_ERROR(LexOperator(&balance));
      }
    }
  }

  absl::Status LexNumber() {
    const size_t start = pos_;
    auto digits = [&](size_t p, auto pred) {  // (\d+_)*\d+ style run; returns end
      size_t q = p;
      while (q < src_.size() && (pred(src_[q]) || (src_[q] == '_' && q + 1 < src_.size() &&
                                                   pred(src_[q + 1]) && q > p))) {
        ++q;
      }
      return q;
    };
    auto is_dec = [](char ch) { return IsDigit(ch); };
    // Float: (?<!\.) digits ((\.digits)? e[+-]?digits | \.digits)
    const bool after_dot = start > 0 && src_[start - 1] == '.';
    if (!after_dot) {
      size_t p = digits(start, is_dec);
      size_t frac_end = p;
      if (p + 1 < src_.size() && src_[p] == '.' && IsDigit(src_[p + 1])) {
        frac_end = digits(p + 1, is_dec);
      }
      size_t exp_end = 0;
      size_t e = frac_end;
      if (e < src_.size() && (src_[e] == 'e' || src_[e] == 'E')) {
        size_t f = e + 1;
        if (f < src_.size() && (src_[f] == '+' || src_[f] == '-')) ++f;
        if (f < src_.size() && IsDigit(src_[f])) exp_end = digits(f, is_dec);
      }
      const size_t end = exp_end != 0 ? exp_end : frac_end;
      if (end != p) {
        std::string text;
        for (size_t k = start; k < end; ++k) {
          if (src_[k] != '_') text.push_back(src_[k]);
        }
        Token t;
        t.type = TokenType::kFloat;
        t.value = std::string(src_.substr(start, end - start));
        t.float_value = std::strtod(text.c_str(), nullptr);
        SetPos(&t, start);
        tokens_.push_back(std::move(t));
        pos_ = end;
        return absl::OkStatus();
      }
    }
    // Integer: 0b / 0o / 0x / [1-9](_?\d)* / 0(_?0)*
    int base = 10;
    size_t p = start;
    if (src_[p] == '0' && p + 1 < src_.size()) {
      const char b = static_cast<char>(src_[p + 1] | 0x20);
      if (b == 'b') base = 2;
      if (b == 'o') base = 8;
      if (b == 'x') base = 16;
    }
    std::string text;
    size_t end;
    if (base != 10) {
      auto ok = [base](char ch) {
        const char l = static_cast<char>(ch | 0x20);
        if (base == 2) return ch == '0' || ch == '1';
        if (base == 8) return ch >= '0' && ch <= '7';
        return IsDigit(ch) || (l >= 'a' && l <= 'f');
      };
      end = p + 2;
      while (end < src_.size() && (ok(src_[end]) || (src_[end] == '_' && end + 1 < src_.size() &&
                                                     ok(src_[end + 1])))) {
        if (src_[end] != '_') text.push_back(src_[end]);
        ++end;
      }
      if (text.empty()) {
        base = 10;
      }
    }
    if (base == 10) {
      text.clear();
      if (src_[p] == '0') {
        end = p + 1;
        while (end < src_.size() && (src_[end] == '0' || (src_[end] == '_' && end + 1 < src_.size() &&
                                                          src_[end + 1] == '0'))) {
          ++end;
        }
        text = "0";
      } else {
        end = digits(p, is_dec);
        for (size_t k = p; k < end; ++k) {
          if (src_[k] != '_') text.push_back(src_[k]);
        }
      }
    }
    errno = 0;
    const long long v = std::strtoll(text.c_str(), nullptr, base);
    if (errno == ERANGE) return Error(start, "integer literal too large");
    Token t;
    t.type = TokenType::kInteger;
    t.value = std::string(src_.substr(start, end - start));
    t.int_value = v;
    SetPos(&t, start);
    tokens_.push_back(std::move(t));
    pos_ = end;
    return absl::OkStatus();
  }

  absl::Status LexString() {
    const size_t start = pos_;
    const char quote = src_[pos_];
    size_t p = pos_ + 1;
    while (p < src_.size() && src_[p] != quote) {
      if (src_[p] == '\\') ++p;
      ++p;
    }
    if (p >= src_.size()) return Error(start, "unexpected char '" + std::string(1, quote) + "'");
    ASSIGN_OR_RETURN(std::string value, Unescape(src_.substr(start + 1, p - start - 1), start));
    Emit(TokenType::kString, std::move(value), start);
    pos_ = p + 1;
    return absl::OkStatus();
  }

  // Python's unicode-escape decoding of a string literal body.
  absl::StatusOr<std::string> Unescape(std::string_view body, size_t offset) const {
    std::string out;
    out.reserve(body.size());
    auto hex = [&](size_t at, int n, char32_t* cp) {
      if (at + n > body.size()) return false;
      char32_t v = 0;
      for (int k = 0; k < n; ++k) {
        const char ch = body[at + k];
        int d;
        if (IsDigit(ch)) {
          d = ch - '0';
        } else if ((ch | 0x20) >= 'a' && (ch | 0x20) <= 'f') {
          d = (ch | 0x20) - 'a' + 10;
        } else {
          return false;
        }
        v = v * 16 + static_cast<char32_t>(d);
      }
      *cp = v;
      return true;
    };
    for (size_t i = 0; i < body.size(); ++i) {
      const char c = body[i];
      if (c != '\\' || i + 1 >= body.size()) {
        out.push_back(c);
        continue;
      }
      const char e = body[++i];
      switch (e) {
        case '\n': break;
        case '\\': out.push_back('\\'); break;
        case '\'': out.push_back('\''); break;
        case '"': out.push_back('"'); break;
        case 'a': out.push_back('\a'); break;
        case 'b': out.push_back('\b'); break;
        case 'f': out.push_back('\f'); break;
        case 'n': out.push_back('\n'); break;
        case 'r': out.push_back('\r'); break;
        case 't': out.push_back('\t'); break;
        case 'v': out.push_back('\v'); break;
        case 'x': case 'u': case 'U': {
          const int n = e == 'x' ? 2 : (e == 'u' ? 4 : 8);
          char32_t cp;
          if (!hex(i + 1, n, &cp) || cp > 0x10FFFF) {
            return Error(offset, std::string("truncated \\") + e + " escape");
          }
          AppendUtf8(cp, &out);
          i += n;
          break;
        }
        default:
          if (e >= '0' && e <= '7') {
            char32_t v = static_cast<char32_t>(e - '0');
            for (int k = 0; k < 2 && i + 1 < body.size() && body[i + 1] >= '0' && body[i + 1] <= '7';
                 ++k) {
              v = v * 8 + static_cast<char32_t>(body[++i] - '0');
            }
            AppendUtf8(v, &out);
          } else if (e == 'N') {
            return Error(offset, "\\N{...} escapes are not supported");
          } else {
            out.push_back('\\');
            out.push_back(e);
          }
      }
    }
    return out;
  }

  absl::Status LexOperator(std::vector<char>* balance) {
    static const char* const kOps[] = {"//", "**", "==", "!=", ">=", "<=", "+", "-", "/", "*",
                                       "%",  "~",  "[",  "]",  "(",  ")",  "{", "}", "=", ".",
                                       ":",  "|",  ",",  ";",  ">",  "<"};
    for (const char* op : kOps) {
      const size_t n = std::char_traits<char>::length(op);
      if (src_.compare(pos_, n, op) != 0) continue;
      const char c = op[0];
      if (n == 1 && (c == '{' || c == '(' || c == '[')) {
        balance->push_back(c == '{' ? '}' : (c == '(' ? ')' : ']'));
      } else if (n == 1 && (c == '}' || c == ')' || c == ']')) {
        if (balance->empty()) return Error(pos_, StrCat("unexpected '", c, "'"));
        const char want = balance->back();
        balance->pop_back();
        if (want != c) return Error(pos_, StrCat("unexpected '", c, "', expected '", want, "'"));
      }
      Emit(TokenType::kOperator, op, pos_);
      pos_ += n;
      return absl::OkStatus();
    }
    const std::u32string cp = DecodeUtf8(src_.substr(pos_, 4));
    std::string ch;
    AppendUtf8(cp.empty() ? U'?' : cp[0], &ch);
    return Error(pos_, StrCat("unexpected char '", ch, "'"));
  }

  std::string_view src_;
  const std::string& name_;
  std::vector<size_t> line_starts_;
  size_t pos_ = 0;
  bool line_starting_ = true;
  std::vector<Token> tokens_;
};

}  // namespace

std::string DescribeToken(const Token& token) {
  switch (token.type) {
    case TokenType::kData: return "template data";
    case TokenType::kVariableBegin: return "begin of print statement";
    case TokenType::kVariableEnd: return "end of print statement";
    case TokenType::kBlockBegin: return "begin of statement block";
    case TokenType::kBlockEnd: return "end of statement block";
    case TokenType::kEof: return "end of template";
    case TokenType::kString: return "string";
    case TokenType::kInteger: return "integer";
    case TokenType::kFloat: return "float";
    default: return token.value;
  }
}

absl::StatusOr<std::vector<Token>> Tokenize(std::string_view source, const std::string& name) {
  const std::string normalized = Normalize(source);
  Lexer lexer(normalized, name);
  return lexer.Run();
}

}  // namespace krasis::chat_template
