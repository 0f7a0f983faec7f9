// printf-style formatting, str.format() and json.dumps() with CPython's output
// (see pyformat.h).
#include "common/chat_template/pyformat.h"

#include <algorithm>
#include <cmath>
#include <cstdio>

#include "common/chat_template/evaluator.h"
#include "common/chat_template/pystr.h"
#include "common/chat_template/unicode.h"
#include "common/status.h"

namespace krasis::chat_template {
namespace {

struct Spec {
  std::string fill = " ";
  char align = 0;  // '<' '>' '^' '=' or 0 (type default)
  char sign = '-';
  bool alt = false;
  bool zero = false;
  int64_t width = -1;
  char grouping = 0;
  int precision = -1;
  char type = 0;
};

std::string Group(const std::string& digits, char sep) {
  std::string out;
  const size_t n = digits.size();
  for (size_t i = 0; i < n; ++i) {
    if (i > 0 && (n - i) % 3 == 0) out.push_back(sep);
    out.push_back(digits[i]);
  }
  return out;
}

std::string Pad(const std::string& sign, const std::string& body, const Spec& spec,
                char default_align) {
  const char align = spec.align ? spec.align : default_align;
  const int64_t len = static_cast<int64_t>(CodePointCount(sign) + CodePointCount(body));
  if (spec.width <= len) return sign + body;
  const int64_t pad = spec.width - len;
  std::string fill;
  for (int64_t i = 0; i < pad; ++i) fill += spec.fill;
  switch (align) {
    case '<': return sign + body + fill;
    case '=': return sign + fill + body;
    case '^': {
      std::string left, right;
      for (int64_t i = 0; i < pad / 2; ++i) left += spec.fill;
      for (int64_t i = 0; i < pad - pad / 2; ++i) right += spec.fill;
      return left + sign + body + right;
    }
    default: return fill + sign + body;
  }
}

// Formats a number (bool, int or float) for conversion `type`; sets *sign.
absl::StatusOr<std::string> NumberBody(const Value& v, char type, int precision, bool alt,
                                       char grouping, char sign_flag, std::string* sign) {
  char buf[512];
  if (type == 'd' || type == 'i' || type == 'u' || type == 'n' || type == 'x' ||
      type == 'X' || type == 'o' || type == 'b' || type == 'c') {
    int64_t i = v.is_float() ? static_cast<int64_t>(v.number_value()) : v.int_value();
    if (type == 'c') {
      std::string s;
      AppendUtf8(static_cast<char32_t>(i), &s);
      return s;
    }
    const bool neg = i < 0;
    const uint64_t u = neg ? 0 - static_cast<uint64_t>(i) : static_cast<uint64_t>(i);
    std::string digits;
    if (type == 'b') {
      uint64_t x = u;
      do {
        digits.insert(digits.begin(), static_cast<char>('0' + (x & 1)));
        x >>= 1;
      } while (x != 0);
    } else {
      const char* f = type == 'x' ? "%llx" : type == 'X' ? "%llX" : type == 'o' ? "%llo" : "%llu";
      std::snprintf(buf, sizeof(buf), f, static_cast<unsigned long long>(u));
      digits = buf;
    }
    if (grouping) digits = Group(digits, grouping);
    if (alt && (type == 'x' || type == 'X' || type == 'o' || type == 'b')) {
      digits = std::string("0") + (type == 'o' ? 'o' : type) + digits;
    }
    *sign = neg ? "-" : (sign_flag == '+' ? "+" : (sign_flag == ' ' ? " " : ""));
    return digits;
  }
  double d = v.number_value();
  const bool neg = std::signbit(d) && !std::isnan(d);
  *sign = neg ? "-" : (sign_flag == '+' ? "+" : (sign_flag == ' ' ? " " : ""));
  d = std::fabs(d);
  if (std::isinf(d) || std::isnan(d)) {
    std::string s = std::isnan(d) ? "nan" : "inf";
    if (type == 'F' || type == 'E' || type == 'G') s = pystr::Upper(s);
    return s;
  }
  if (type == 0) {
    std::string s = pystr::FloatRepr(d);
    if (grouping) {
      const size_t dot = s.find('.');
      s = Group(s.substr(0, dot), grouping) + (dot == std::string::npos ? "" : s.substr(dot));
    }
    return s;
  }
  const int p = precision < 0 ? 6 : precision;
  std::string s;
  if (type == '%') {
    std::snprintf(buf, sizeof(buf), alt ? "%#.*f" : "%.*f", p, d * 100);
    s = std::string(buf) + "%";
  } else {
    char fmt[8];
    std::snprintf(fmt, sizeof(fmt), alt ? "%%#.*%c" : "%%.*%c", type);
    std::snprintf(buf, sizeof(buf), fmt, p, d);
    s = buf;
  }
  if (grouping) {
    size_t end = 0;
    while (end < s.size() && s[end] >= '0' && s[end] <= '9') ++end;
    s = Group(s.substr(0, end), grouping) + s.substr(end);
  }
  return s;
}

absl::StatusOr<std::string> FormatWithSpec(const Value& v, std::string_view spec_text) {
  if (spec_text.empty()) return PyStr(v);
  Spec spec;
  const std::u32string u = DecodeUtf8(spec_text);
  size_t i = 0;
  auto is_align = [](char32_t c) { return c == '<' || c == '>' || c == '^' || c == '='; };
  if (u.size() >= 2 && is_align(u[1])) {
    spec.fill = EncodeUtf8(u.substr(0, 1));
    spec.align = static_cast<char>(u[1]);
    i = 2;
  } else if (!u.empty() && is_align(u[0])) {
    spec.align = static_cast<char>(u[0]);
    i = 1;
  }
  if (i < u.size() && (u[i] == '+' || u[i] == '-' || u[i] == ' ')) spec.sign = static_cast<char>(u[i++]);
  if (i < u.size() && u[i] == '#') {
    spec.alt = true;
    ++i;
  }
  if (i < u.size() && u[i] == '0') {
    spec.zero = true;
    ++i;
  }
  int64_t width = -1;
  while (i < u.size() && u[i] >= '0' && u[i] <= '9') width = (width < 0 ? 0 : width * 10) + (u[i++] - '0');
  spec.width = width;
  if (i < u.size() && (u[i] == ',' || u[i] == '_')) spec.grouping = static_cast<char>(u[i++]);
  if (i < u.size() && u[i] == '.') {
    ++i;
    int p = 0;
    while (i < u.size() && u[i] >= '0' && u[i] <= '9') p = p * 10 + static_cast<int>(u[i++] - '0');
    spec.precision = p;
  }
  if (i < u.size()) spec.type = static_cast<char>(u[i++]);
  if (i != u.size()) return InvalidArgumentError("Invalid format specifier");
  if (spec.zero && !spec.align) {
    spec.fill = "0";
    spec.align = '=';
  }
  if (v.is_string()) {
    if (spec.type != 0 && spec.type != 's') {
      return InvalidArgumentError("Unknown format code '", spec.type, "' for object of type 'str'");
    }
    std::string s = v.string_value();
    if (spec.precision >= 0) {
      s = s.substr(0, ByteOffsetOfCodePoint(s, static_cast<size_t>(spec.precision)));
    }
    return Pad("", s, spec, '<');
  }
  if (v.is_number()) {
    char type = spec.type;
    if (v.is_integral() && type == 0) type = 'd';
    if (v.is_float() && std::string_view("dxXobcn").find(type) != std::string_view::npos &&
        type != 0) {
      return InvalidArgumentError("Unknown format code '", type, "' for object of type 'float'");
    }
    if (v.is_float() && type == 0 && spec.precision >= 0) type = 'g';
    std::string sign;
    ASSIGN_OR_RETURN(std::string body, NumberBody(v, type, spec.precision, spec.alt,
                                                  spec.grouping, spec.sign, &sign));
    return Pad(sign, body, spec, '>');
  }
  return InvalidArgumentError("unsupported format string passed to ", PyTypeName(v),
                              ".__format__");
}

absl::Status AppendJson(const Value& v, const JsonOptions& o, int level, std::string* out);

std::string NewlineIndent(const JsonOptions& o, int level) {
  std::string s = "\n";
  for (int i = 0; i < level; ++i) s += *o.indent;
  return s;
}

absl::StatusOr<std::string> JsonKey(const Value& k) {
  switch (k.kind()) {
    case Value::Kind::kString: return k.string_value();
    case Value::Kind::kBool: return std::string(k.bool_value() ? "true" : "false");
    case Value::Kind::kNone: return std::string("null");
    case Value::Kind::kInt: return std::to_string(k.int_value());
    case Value::Kind::kFloat: {
      const double d = k.number_value();
      if (std::isnan(d)) return std::string("NaN");
      if (std::isinf(d)) return std::string(d > 0 ? "Infinity" : "-Infinity");
      return pystr::FloatRepr(d);
    }
    default:
      return InvalidArgumentError("keys must be str, int, float, bool or None, not ",
                                  PyTypeName(k));
  }
}

absl::Status AppendJson(const Value& v, const JsonOptions& o, int level, std::string* out) {
  switch (v.kind()) {
    case Value::Kind::kNone: out->append("null"); return absl::OkStatus();
    case Value::Kind::kBool: out->append(v.bool_value() ? "true" : "false"); return absl::OkStatus();
    case Value::Kind::kInt: out->append(std::to_string(v.int_value())); return absl::OkStatus();
    case Value::Kind::kFloat: {
      const double d = v.number_value();
      if (std::isnan(d)) {
        out->append("NaN");
      } else if (std::isinf(d)) {
        out->append(d > 0 ? "Infinity" : "-Infinity");
      } else {
        out->append(pystr::FloatRepr(d));
      }
      return absl::OkStatus();
    }
    case Value::Kind::kString:
      pystr::AppendJsonString(v.string_value(), o.ensure_ascii, out);
      return absl::OkStatus();
    case Value::Kind::kList:
    case Value::Kind::kTuple: {
      if (v.items().empty()) {
        out->append("[]");
        return absl::OkStatus();
      }
      out->push_back('[');
      const std::string nl = o.indent ? NewlineIndent(o, level + 1) : "";
      out->append(nl);
      bool first = true;
      for (const Value& item : v.items()) {
        if (!first) out->append(o.item_separator + nl);
        first = false;
        RETURN_IF_ERROR(AppendJson(item, o, level + 1, out));
      }
      if (o.indent) out->append(NewlineIndent(o, level));
      out->push_back(']');
      return absl::OkStatus();
    }
    case Value::Kind::kDict: {
      if (v.dict().empty()) {
        out->append("{}");
        return absl::OkStatus();
      }
      std::vector<const Dict::Entry*> entries;
      for (const auto& e : v.dict().entries()) entries.push_back(&e);
      if (o.sort_keys) {
        absl::Status st;
        std::stable_sort(entries.begin(), entries.end(), [&st](auto* a, auto* b) {
          auto lt = PyCompare(a->first, b->first, "<");
          if (!lt.ok()) {
            st = lt.status();
            return false;
          }
          return *lt;
        });
        RETURN_IF_ERROR(st);
      }
      out->push_back('{');
      const std::string nl = o.indent ? NewlineIndent(o, level + 1) : "";
      out->append(nl);
      bool first = true;
      for (const auto* e : entries) {
        if (!first) out->append(o.item_separator + nl);
        first = false;
        ASSIGN_OR_RETURN(std::string key, JsonKey(e->first));
        pystr::AppendJsonString(key, o.ensure_ascii, out);
        out->append(o.key_separator);
        RETURN_IF_ERROR(AppendJson(e->second, o, level + 1, out));
      }
      if (o.indent) out->append(NewlineIndent(o, level));
      out->push_back('}');
      return absl::OkStatus();
    }
    default:
      return InvalidArgumentError("Object of type ", PyTypeName(v), " is not JSON serializable");
  }
}

}  // namespace

absl::StatusOr<std::string> PercentFormat(std::string_view fmt, const Value& args) {
  std::vector<Value> positional;
  const Dict* mapping = nullptr;
  if (args.is_tuple()) {
    positional = args.items();
  } else {
    if (args.is_dict()) mapping = &args.dict();
    positional.push_back(args);
  }
  size_t next = 0;
  bool used_mapping = false;
  std::string out;
  for (size_t i = 0; i < fmt.size(); ++i) {
    if (fmt[i] != '%') {
      out.push_back(fmt[i]);
      continue;
    }
    if (++i >= fmt.size()) return InvalidArgumentError("incomplete format");
    Value arg;
    bool have_arg = false;
    if (fmt[i] == '(') {
      const size_t close = fmt.find(')', i);
      if (close == std::string_view::npos) return InvalidArgumentError("incomplete format key");
      if (args.is_undefined()) return InvalidArgumentError(args.undefined_message());
      if (mapping == nullptr) return InvalidArgumentError("format requires a mapping");
      const Value* found = mapping->Find(fmt.substr(i + 1, close - i - 1));
      if (found == nullptr) {
        return InvalidArgumentError("KeyError: '", fmt.substr(i + 1, close - i - 1), "'");
      }
      arg = *found;
      have_arg = used_mapping = true;
      i = close + 1;
    }
    Spec spec;
    char sign_flag = '-';
    for (; i < fmt.size() && std::string_view("-+ #0").find(fmt[i]) != std::string_view::npos; ++i) {
      if (fmt[i] == '-') spec.align = '<';
      if (fmt[i] == '+') sign_flag = '+';
      if (fmt[i] == ' ' && sign_flag != '+') sign_flag = ' ';
      if (fmt[i] == '#') spec.alt = true;
      if (fmt[i] == '0') spec.zero = true;
    }
    auto take = [&]() -> absl::StatusOr<Value> {
      if (next >= positional.size()) return InvalidArgumentError("not enough arguments for format string");
      return positional[next++];
    };
    if (i < fmt.size() && fmt[i] == '*') {
      ASSIGN_OR_RETURN(Value w, take());
      spec.width = w.int_value();
      ++i;
    } else {
      for (; i < fmt.size() && fmt[i] >= '0' && fmt[i] <= '9'; ++i) {
        spec.width = (spec.width < 0 ? 0 : spec.width * 10) + (fmt[i] - '0');
      }
    }
    if (i < fmt.size() && fmt[i] == '.') {
      ++i;
      spec.precision = 0;
      if (i < fmt.size() && fmt[i] == '*') {
        ASSIGN_OR_RETURN(Value p, take());
        spec.precision = static_cast<int>(p.int_value());
        ++i;
      } else {
        for (; i < fmt.size() && fmt[i] >= '0' && fmt[i] <= '9'; ++i) {
          spec.precision = spec.precision * 10 + (fmt[i] - '0');
        }
      }
    }
    while (i < fmt.size() && (fmt[i] == 'h' || fmt[i] == 'l' || fmt[i] == 'L')) ++i;
    if (i >= fmt.size()) return InvalidArgumentError("incomplete format");
    const char type = fmt[i];
    if (type == '%') {
      out.push_back('%');
      continue;
    }
    if (!have_arg) {
      ASSIGN_OR_RETURN(arg, take());
    }
    std::string sign, body;
    if (type == 's' || type == 'r' || type == 'a') {
      body = type == 's' ? PyStr(arg) : PyRepr(arg);
      if (spec.precision >= 0) {
        body = body.substr(0, ByteOffsetOfCodePoint(body, static_cast<size_t>(spec.precision)));
      }
      spec.zero = false;
    } else if (std::string_view("diouxXeEfFgGc").find(type) != std::string_view::npos) {
      if (!arg.is_number()) {
        return InvalidArgumentError("%", type, " format: a real number is required, not ",
                                    PyTypeName(arg));
      }
      const char t = (type == 'i' || type == 'u') ? 'd' : type;
      ASSIGN_OR_RETURN(body, NumberBody(arg, t, spec.precision, spec.alt, 0, sign_flag, &sign));
    } else {
      return InvalidArgumentError("unsupported format character '", std::string(1, type), "'");
    }
    if (spec.zero && spec.align != '<') {
      spec.fill = "0";
      spec.align = '=';
    }
    out += Pad(sign, body, spec, '>');
  }
  // CPython treats any non-tuple, non-str argument with __getitem__ (dict, list) as a
  // mapping and does not complain when it goes unused.
  const bool mapping_like =
      !args.is_tuple() && (args.is_dict() || args.is_list() || args.is_undefined());
  if (!used_mapping && !mapping_like && next < positional.size()) {
    return InvalidArgumentError("not all arguments converted during string formatting");
  }
  return out;
}

absl::StatusOr<std::string> BraceFormat(Evaluator& ev, std::string_view fmt, const CallArgs& args) {
  std::string out;
  size_t auto_index = 0;
  for (size_t i = 0; i < fmt.size(); ++i) {
    const char c = fmt[i];
    if (c == '}') {
      if (i + 1 < fmt.size() && fmt[i + 1] == '}') {
        out.push_back('}');
        ++i;
        continue;
      }
      return InvalidArgumentError("Single '}' encountered in format string");
    }
    if (c != '{') {
      out.push_back(c);
      continue;
    }
    if (i + 1 < fmt.size() && fmt[i + 1] == '{') {
      out.push_back('{');
      ++i;
      continue;
    }
    const size_t close = fmt.find('}', i);
    if (close == std::string_view::npos) {
      return InvalidArgumentError("expected '}' before end of string");
    }
    std::string_view field = fmt.substr(i + 1, close - i - 1);
    i = close;
    std::string_view spec, conversion;
    if (const size_t colon = field.find(':'); colon != std::string_view::npos) {
      spec = field.substr(colon + 1);
      field = field.substr(0, colon);
    }
    if (const size_t bang = field.find('!'); bang != std::string_view::npos) {
      conversion = field.substr(bang + 1);
      field = field.substr(0, bang);
    }
    size_t end = 0;
    while (end < field.size() && field[end] != '.' && field[end] != '[') ++end;
    const std::string_view head = field.substr(0, end);
    Value value;
    if (head.empty() || std::all_of(head.begin(), head.end(), [](char ch) { return ch >= '0' && ch <= '9'; })) {
      const size_t idx = head.empty() ? auto_index++ : std::stoul(std::string(head));
      if (idx >= args.positional.size()) {
        return InvalidArgumentError("Replacement index ", idx, " out of range for positional args tuple");
      }
      value = args.positional[idx];
    } else {
      bool found = false;
      for (const auto& [k, v] : args.keyword) {
        if (k == head) {
          value = v;
          found = true;
        }
      }
      if (!found) return InvalidArgumentError("KeyError: '", head, "'");
    }
    while (end < field.size()) {
      if (field[end] == '.') {
        size_t e = end + 1;
        while (e < field.size() && field[e] != '.' && field[e] != '[') ++e;
        const std::string_view attr = field.substr(end + 1, e - end - 1);
        if (!attr.empty() && attr[0] == '_') {
          return InvalidArgumentError("access to attribute '", attr, "' of '", PyTypeName(value),
                                      "' object is unsafe.");
        }
        ASSIGN_OR_RETURN(value, ev.GetAttr(value, attr));
        end = e;
      } else {
        const size_t e = field.find(']', end);
        if (e == std::string_view::npos) return InvalidArgumentError("Missing ']' in format string");
        const std::string key(field.substr(end + 1, e - end - 1));
        Value k = !key.empty() && std::all_of(key.begin(), key.end(), [](char ch) { return ch >= '0' && ch <= '9'; })
                      ? Value::Int(std::stoll(key))
                      : Value::String(key);
        ASSIGN_OR_RETURN(value, ev.GetItem(value, k));
        end = e + 1;
      }
    }
    if (value.is_undefined()) return InvalidArgumentError(value.undefined_message());
    if (conversion == "r" || conversion == "a") {
      value = Value::String(PyRepr(value));
    } else if (conversion == "s") {
      value = Value::String(PyStr(value));
    }
    ASSIGN_OR_RETURN(std::string formatted, FormatWithSpec(value, spec));
    out += formatted;
  }
  return out;
}

absl::StatusOr<std::string> JsonDumps(const Value& v, const JsonOptions& options) {
  std::string out;
  RETURN_IF_ERROR(AppendJson(v, options, 0, &out));
  return out;
}

}  // namespace krasis::chat_template
