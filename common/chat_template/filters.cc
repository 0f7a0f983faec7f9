// Filter registry and the text / number filters (|trim, |tojson, |int, |round,
// |indent, |default ...), each following jinja2 3.1 (and transformers' own tojson).
#include <cmath>
#include <cstdio>
#include <cstdlib>

#include "common/chat_template/builtins.h"
#include "common/chat_template/filters_internal.h"
#include "common/chat_template/pyformat.h"
#include "common/chat_template/pystr.h"
#include "common/chat_template/unicode.h"
#include "common/status.h"

namespace krasis::chat_template {
namespace {

absl::StatusOr<std::vector<Value>> Bind(std::string_view fn, CallArgs& args,
                                        const std::vector<Param>& params) {
  std::vector<Value> out;
  RETURN_IF_ERROR(BindArgs(fn, args, params, &out));
  return out;
}

// Result of a str method on soft_str(v): Markup in, Markup out.
Value Same(const Value& v, std::string s) {
  return v.is_markup() ? Value::Markup(std::move(s)) : Value::String(std::move(s));
}

absl::StatusOr<int64_t> IntArg(const Value& v, std::string_view what) {
  if (!v.is_integral()) {
    return InvalidArgumentError("'", PyTypeName(v), "' object cannot be interpreted as an integer (",
                                what, ")");
  }
  return v.int_value();
}

KRASIS_FILTER(FilterAbs) {
  RETURN_IF_ERROR(Bind("abs", args, {}).status());
  if (v.is_float()) return Value::Float(std::fabs(v.number_value()));
  if (v.is_integral()) {
    if (v.int_value() == INT64_MIN) return InvalidArgumentError("integer overflow");
    return Value::Int(std::llabs(v.int_value()));
  }
  return InvalidArgumentError("bad operand type for abs(): '", PyTypeName(v), "'");
}

KRASIS_FILTER(FilterAttr) {
  ASSIGN_OR_RETURN(auto a, Bind("attr", args, {{"name", Value(), true}}));
  if (v.is_undefined()) return InvalidArgumentError(v.undefined_message());
  const std::string name = PyStr(a[0]);
  if (std::optional<Value> attr = PythonAttribute(ev, v, name)) return *attr;
  return NoAttribute(v, name);
}

KRASIS_FILTER(FilterCapitalize) {
  RETURN_IF_ERROR(Bind("capitalize", args, {}).status());
  return Same(v, pystr::Capitalize(PyStr(v)));
}

KRASIS_FILTER(FilterCenter) {
  ASSIGN_OR_RETURN(auto a, Bind("center", args, {{"width", Value::Int(80)}}));
  ASSIGN_OR_RETURN(int64_t width, IntArg(a[0], "width"));
  return Same(v, pystr::Pad(PyStr(v), width, " ", 0));
}

KRASIS_FILTER(FilterDefault) {
  ASSIGN_OR_RETURN(auto a, Bind("default", args, {{"default_value", Value::String("")},
                                                  {"boolean", Value::Bool(false)}}));
  if (v.is_undefined() || (Truthy(a[1]) && !Truthy(v))) return a[0];
  return v;
}

KRASIS_FILTER(FilterEscape) {
  RETURN_IF_ERROR(Bind("escape", args, {}).status());
  if (v.is_markup()) return v;
  return Value::Markup(pystr::HtmlEscape(PyStr(v)));
}

KRASIS_FILTER(FilterForceescape) {
  RETURN_IF_ERROR(Bind("forceescape", args, {}).status());
  return Value::Markup(pystr::HtmlEscape(PyStr(v)));
}

// Python float(str): optional sign, digits with single underscores, '.', exponent,
// or inf / infinity / nan; surrounding whitespace allowed.
std::optional<double> ParsePyFloat(std::string_view text) {
  const std::string s = pystr::Strip(text, std::nullopt, true, true);
  std::string clean;
  size_t i = 0;
  if (i < s.size() && (s[i] == '+' || s[i] == '-')) clean.push_back(s[i++]);
  const std::string rest = pystr::Lower(s.substr(i));
  if (rest == "inf" || rest == "infinity" || rest == "nan") {
    clean += rest;
    return std::strtod(clean.c_str(), nullptr);
  }
  bool digits = false, dot = false, exp = false;
  for (; i < s.size(); ++i) {
    const char c = s[i];
    if (c >= '0' && c <= '9') {
      digits = true;
      clean.push_back(c);
    } else if (c == '_') {
      if (i == 0 || i + 1 >= s.size() || !(s[i - 1] >= '0' && s[i - 1] <= '9') ||
          !(s[i + 1] >= '0' && s[i + 1] <= '9')) {
        return std::nullopt;
      }
    } else if (c == '.' && !dot && !exp) {
      dot = true;
      clean.push_back(c);
    } else if ((c == 'e' || c == 'E') && digits && !exp) {
      exp = true;
      clean.push_back('e');
      if (i + 1 < s.size() && (s[i + 1] == '+' || s[i + 1] == '-')) clean.push_back(s[++i]);
      if (i + 1 >= s.size()) return std::nullopt;
    } else {
      return std::nullopt;
    }
  }
  if (!digits) return std::nullopt;
  return std::strtod(clean.c_str(), nullptr);
}

// Python int(str, base) for base 2..36 (base 0 and prefixes are not used by templates).
std::optional<int64_t> ParsePyInt(std::string_view text, int64_t base) {
  const std::string s = pystr::Strip(text, std::nullopt, true, true);
  size_t i = 0;
  bool neg = false;
  if (i < s.size() && (s[i] == '+' || s[i] == '-')) neg = s[i++] == '-';
  if (base == 16 && s.size() > i + 1 && s[i] == '0' && (s[i + 1] | 0x20) == 'x') i += 2;
  if (base == 8 && s.size() > i + 1 && s[i] == '0' && (s[i + 1] | 0x20) == 'o') i += 2;
  if (base == 2 && s.size() > i + 1 && s[i] == '0' && (s[i + 1] | 0x20) == 'b') i += 2;
  if (i >= s.size()) return std::nullopt;
  int64_t v = 0;
  bool any = false;
  for (; i < s.size(); ++i) {
    const char c = s[i];
    if (c == '_' && any && i + 1 < s.size() && s[i + 1] != '_') continue;
    int d;
    if (c >= '0' && c <= '9') {
      d = c - '0';
    } else if ((c | 0x20) >= 'a' && (c | 0x20) <= 'z') {
      d = (c | 0x20) - 'a' + 10;
    } else {
      return std::nullopt;
    }
    if (d >= base) return std::nullopt;
    if (__builtin_mul_overflow(v, base, &v) || __builtin_add_overflow(v, d, &v)) return std::nullopt;
    any = true;
  }
  return neg ? -v : v;
}

KRASIS_FILTER(FilterFloat) {
  ASSIGN_OR_RETURN(auto a, Bind("float", args, {{"default", Value::Float(0.0)}}));
  if (v.is_undefined()) return InvalidArgumentError(v.undefined_message());
  if (v.is_number()) return Value::Float(v.number_value());
  if (v.is_string()) {
    if (auto d = ParsePyFloat(v.string_value())) return Value::Float(*d);
  }
  return a[0];
}

KRASIS_FILTER(FilterInt) {
  ASSIGN_OR_RETURN(auto a, Bind("int", args, {{"default", Value::Int(0)}, {"base", Value::Int(10)}}));
  if (v.is_undefined()) return InvalidArgumentError(v.undefined_message());
  if (v.is_integral()) return Value::Int(v.int_value());
  if (v.is_float()) {
    const double d = v.number_value();
    if (std::isnan(d)) return a[0];
    if (std::isinf(d) || std::fabs(d) >= 9.2e18) return InvalidArgumentError("cannot convert float to integer");
    return Value::Int(static_cast<int64_t>(d));
  }
  if (v.is_string()) {
    if (a[1].is_integral()) {
      if (auto i = ParsePyInt(v.string_value(), a[1].int_value())) return Value::Int(*i);
    }
    if (auto d = ParsePyFloat(v.string_value())) {
      if (std::isnan(*d)) return a[0];
      if (std::isinf(*d) || std::fabs(*d) >= 9.2e18) return InvalidArgumentError("cannot convert float to integer");
      return Value::Int(static_cast<int64_t>(*d));
    }
  }
  return a[0];
}

KRASIS_FILTER(FilterFormat) {
  if (!args.positional.empty() && !args.keyword.empty()) {
    return InvalidArgumentError("can't handle positional and keyword arguments at the same time");
  }
  Value fmt_args;
  if (!args.keyword.empty()) {
    Dict d;
    for (auto& [k, val] : args.keyword) d.Set(Value::String(k), val);
    fmt_args = Value::MakeDict(std::move(d));
  } else {
    fmt_args = Value::Tuple(args.positional);
  }
  ASSIGN_OR_RETURN(std::string s, PercentFormat(PyStr(v), fmt_args));
  return Value::String(std::move(s));
}

KRASIS_FILTER(FilterIndent) {
  ASSIGN_OR_RETURN(auto a, Bind("indent", args, {{"width", Value::Int(4)},
                                                 {"first", Value::Bool(false)},
                                                 {"blank", Value::Bool(false)}}));
  if (!v.is_string()) {
    return InvalidArgumentError("unsupported operand type(s) for +=: '", PyTypeName(v), "' and 'str'");
  }
  std::string indention;
  if (a[0].is_string()) {
    indention = a[0].string_value();
  } else {
    ASSIGN_OR_RETURN(int64_t width, IntArg(a[0], "width"));
    indention = std::string(static_cast<size_t>(std::max<int64_t>(0, width)), ' ');
  }
  std::vector<std::string> lines = pystr::SplitLines(v.string_value() + "\n", false);
  std::string rv;
  if (Truthy(a[2])) {
    for (size_t i = 0; i < lines.size(); ++i) {
      if (i > 0) rv += "\n" + indention;
      rv += lines[i];
    }
  } else {
    rv = lines.empty() ? "" : lines[0];
    for (size_t i = 1; i < lines.size(); ++i) {
      rv += "\n";
      if (!lines[i].empty()) rv += indention;
      rv += lines[i];
    }
  }
  if (Truthy(a[1])) rv = indention + rv;
  return Same(v, std::move(rv));
}

KRASIS_FILTER(FilterLower) {
  RETURN_IF_ERROR(Bind("lower", args, {}).status());
  return Same(v, pystr::Lower(PyStr(v)));
}

KRASIS_FILTER(FilterUpper) {
  RETURN_IF_ERROR(Bind("upper", args, {}).status());
  return Same(v, pystr::Upper(PyStr(v)));
}

KRASIS_FILTER(FilterTitle) {
  RETURN_IF_ERROR(Bind("title", args, {}).status());
  return Value::String(pystr::JinjaTitle(PyStr(v)));
}

KRASIS_FILTER(FilterPprint) {
  RETURN_IF_ERROR(Bind("pprint", args, {}).status());
  return Value::String(PyRepr(v));
}

KRASIS_FILTER(FilterReplace) {
  ASSIGN_OR_RETURN(auto a, Bind("replace", args, {{"old", Value(), true},
                                                  {"new", Value(), true},
                                                  {"count", Value::None()}}));
  int64_t count = -1;
  if (!a[2].is_none()) {
    ASSIGN_OR_RETURN(count, IntArg(a[2], "count"));
  }
  return Value::String(pystr::Replace(PyStr(v), PyStr(a[0]), PyStr(a[1]), count));
}

// Python round(x, n) for floats: correctly rounded (half-even on the exact value).
double RoundFloat(double x, int64_t n) {
  if (!std::isfinite(x)) return x;
  if (n >= 0) {
    if (n > 300) return x;
    char buf[512];
    std::snprintf(buf, sizeof(buf), "%.*f", static_cast<int>(n), x);
    return std::strtod(buf, nullptr);
  }
  const double p = std::pow(10.0, static_cast<double>(-n));
  return std::nearbyint(x / p) * p;
}

KRASIS_FILTER(FilterRound) {
  ASSIGN_OR_RETURN(auto a, Bind("round", args, {{"precision", Value::Int(0)},
                                                {"method", Value::String("common")}}));
  const std::string method = PyStr(a[1]);
  if (method != "common" && method != "ceil" && method != "floor") {
    return InvalidArgumentError("method must be common, ceil or floor");
  }
  ASSIGN_OR_RETURN(int64_t precision, IntArg(a[0], "precision"));
  if (!v.is_number()) {
    return InvalidArgumentError("type ", PyTypeName(v), " doesn't define __round__ method");
  }
  if (method == "common") {
    if (v.is_integral()) {
      if (precision >= 0) return Value::Int(v.int_value());
      const double p = std::pow(10.0, static_cast<double>(-precision));
      return Value::Int(static_cast<int64_t>(std::nearbyint(static_cast<double>(v.int_value()) / p) * p));
    }
    return Value::Float(RoundFloat(v.number_value(), precision));
  }
  const double p = std::pow(10.0, static_cast<double>(precision));
  const double scaled = v.number_value() * p;
  const double r = method == "ceil" ? std::ceil(scaled) : std::floor(scaled);
  return Value::Float(r / p);
}

KRASIS_FILTER(FilterSafe) {
  RETURN_IF_ERROR(Bind("safe", args, {}).status());
  if (v.is_markup()) return v;
  return Value::Markup(PyStr(v));
}

KRASIS_FILTER(FilterString) {
  RETURN_IF_ERROR(Bind("string", args, {}).status());
  if (v.is_markup()) return v;
  return Value::String(PyStr(v));
}

// transformers' tojson: json.dumps(x, ensure_ascii=False, indent=None,
// separators=None, sort_keys=False).
KRASIS_FILTER(FilterTojson) {
  ASSIGN_OR_RETURN(auto a, Bind("tojson", args, {{"ensure_ascii", Value::Bool(false)},
                                                 {"indent", Value::None()},
                                                 {"separators", Value::None()},
                                                 {"sort_keys", Value::Bool(false)}}));
  JsonOptions o;
  o.ensure_ascii = Truthy(a[0]);
  if (a[1].is_string()) {
    o.indent = a[1].string_value();
  } else if (a[1].is_integral()) {
    o.indent = std::string(static_cast<size_t>(std::max<int64_t>(0, a[1].int_value())), ' ');
  } else if (!a[1].is_none()) {
    return InvalidArgumentError("indent must be an int or a str");
  }
  if (o.indent) o.item_separator.assign(1, ',');  // (not = ",": GCC 12 -Wrestrict false positive)
  if (!a[2].is_none()) {
    if (!a[2].is_sequence() || a[2].items().size() != 2 || !a[2].items()[0].is_string() ||
        !a[2].items()[1].is_string()) {
      return InvalidArgumentError("separators must be a (item_separator, key_separator) pair");
    }
    o.item_separator = a[2].items()[0].string_value();
    o.key_separator = a[2].items()[1].string_value();
  }
  o.sort_keys = Truthy(a[3]);
  ASSIGN_OR_RETURN(std::string s, JsonDumps(v, o));
  return Value::String(std::move(s));
}

KRASIS_FILTER(FilterTrim) {
  ASSIGN_OR_RETURN(auto a, Bind("trim", args, {{"chars", Value::None()}}));
  std::optional<std::string> chars;
  if (!a[0].is_none()) chars = PyStr(a[0]);
  if (v.is_markup() && chars) chars = pystr::HtmlEscape(*chars);
  return Same(v, pystr::Strip(PyStr(v), chars, true, true));
}

KRASIS_FILTER(FilterTruncate) {
  ASSIGN_OR_RETURN(auto a, Bind("truncate", args, {{"length", Value::Int(255)},
                                                   {"killwords", Value::Bool(false)},
                                                   {"end", Value::String("...")},
                                                   {"leeway", Value::Int(5)}}));
  ASSIGN_OR_RETURN(int64_t length, IntArg(a[0], "length"));
  ASSIGN_OR_RETURN(int64_t leeway, IntArg(a[3].is_none() ? Value::Int(5) : a[3], "leeway"));
  if (!v.is_string() && !v.is_undefined()) {  // jinja2 slices whatever it is given
    ASSIGN_OR_RETURN(int64_t n, Length(v));
    if (n <= length + leeway) return v;
    return InvalidArgumentError("truncate needs a string, got ", PyTypeName(v));
  }
  const std::string s = PyStr(v);
  const std::string end = PyStr(a[2]);
  const auto end_len = static_cast<int64_t>(CodePointCount(end));
  if (length < end_len) return InvalidArgumentError("expected length >= ", end_len, ", got ", length);
  if (static_cast<int64_t>(CodePointCount(s)) <= length + leeway) return Value::String(s);
  std::string head = s.substr(0, ByteOffsetOfCodePoint(s, static_cast<size_t>(length - end_len)));
  if (!Truthy(a[1])) head = pystr::RSplit(head, std::string(" "), 1)[0];
  return Value::String(head + end);
}

KRASIS_FILTER(FilterWordcount) {
  RETURN_IF_ERROR(Bind("wordcount", args, {}).status());
  int64_t n = 0;
  bool in_word = false;
  for (char32_t c : DecodeUtf8(PyStr(v))) {
    const bool w = IsWordChar(c);
    if (w && !in_word) ++n;
    in_word = w;
  }
  return Value::Int(n);
}

struct FilterEntry {
  std::string_view name;
  FilterFn fn;
};

constexpr FilterEntry kFilters[] = {
    {"abs", FilterAbs},           {"attr", FilterAttr},         {"batch", FilterBatch},
    {"capitalize", FilterCapitalize}, {"center", FilterCenter}, {"count", FilterLength},
    {"d", FilterDefault},         {"default", FilterDefault},   {"dictsort", FilterDictsort},
    {"e", FilterEscape},          {"escape", FilterEscape},     {"first", FilterFirst},
    {"float", FilterFloat},       {"forceescape", FilterForceescape}, {"format", FilterFormat},
    {"indent", FilterIndent},     {"int", FilterInt},           {"items", FilterItems},
    {"join", FilterJoin},         {"last", FilterLast},         {"length", FilterLength},
    {"list", FilterList},         {"lower", FilterLower},       {"map", FilterMap},
    {"max", FilterMax},           {"min", FilterMin},           {"pprint", FilterPprint},
    {"reject", FilterReject},     {"rejectattr", FilterRejectattr}, {"replace", FilterReplace},
    {"reverse", FilterReverse},   {"round", FilterRound},       {"safe", FilterSafe},
    {"select", FilterSelect},     {"selectattr", FilterSelectattr}, {"slice", FilterSlice},
    {"sort", FilterSort},         {"string", FilterString},     {"sum", FilterSum},
    {"title", FilterTitle},       {"tojson", FilterTojson},     {"trim", FilterTrim},
    {"truncate", FilterTruncate}, {"unique", FilterUnique},     {"upper", FilterUpper},
    {"wordcount", FilterWordcount},
};

}  // namespace

FilterFn FindFilter(std::string_view name) {
  for (const FilterEntry& e : kFilters) {
    if (e.name == name) return e.fn;
  }
  return nullptr;
}

}  // namespace krasis::chat_template
