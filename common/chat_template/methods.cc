// Attribute and item access (jinja2's ImmutableSandboxedEnvironment.getattr /
// getitem) and the Python methods of str, list, tuple and dict that templates
// call: s.startswith(...), s.split(...), d.items(), d.get(k) ...
#include <algorithm>
#include <cmath>

#include "common/chat_template/builtins.h"
#include "common/chat_template/evaluator.h"
#include "common/chat_template/pyformat.h"
#include "common/chat_template/pystr.h"
#include "common/chat_template/unicode.h"
#include "common/status.h"

namespace krasis::chat_template {
namespace {

constexpr std::string_view kStrMethods[] = {
    "capitalize", "casefold", "center", "count", "encode", "endswith", "expandtabs", "find",
    "format", "format_map", "index", "isalnum", "isalpha", "isascii", "isdecimal", "isdigit",
    "isidentifier", "islower", "isnumeric", "isprintable", "isspace", "istitle", "isupper",
    "join", "ljust", "lower", "lstrip", "maketrans", "partition", "removeprefix",
    "removesuffix", "replace", "rfind", "rindex", "rjust", "rpartition", "rsplit", "rstrip",
    "split", "splitlines", "startswith", "strip", "swapcase", "title", "translate", "upper",
    "zfill"};
constexpr std::string_view kListMethods[] = {"append", "clear", "copy", "count", "extend",
                                             "index", "insert", "pop", "remove", "reverse",
                                             "sort"};
constexpr std::string_view kListMutators[] = {"append", "clear", "extend", "insert", "pop",
                                              "remove", "reverse", "sort"};
constexpr std::string_view kTupleMethods[] = {"count", "index"};
constexpr std::string_view kDictMethods[] = {"clear", "copy", "fromkeys", "get", "items",
                                             "keys", "pop", "popitem", "setdefault", "update",
                                             "values"};
constexpr std::string_view kDictMutators[] = {"clear", "pop", "popitem", "setdefault", "update"};

template <size_t N>
bool In(const std::string_view (&list)[N], std::string_view name) {
  return std::find(std::begin(list), std::end(list), name) != std::end(list);
}

Value Unsafe(const Value& obj, std::string_view name) {
  return Value::Undefined(StrCat("access to attribute '", name, "' of '", PyTypeName(obj),
                                 "' object is unsafe."));
}

}  // namespace

Value NoAttribute(const Value& obj, std::string_view name) {
  return Value::Undefined(StrCat("'", ObjectTypeRepr(obj), "' has no attribute '", name, "'"));
}

namespace {

// Optional int argument (None counts as absent).
absl::StatusOr<std::optional<int64_t>> OptInt(const Value& v, std::string_view what) {
  if (v.is_undefined() || v.is_none()) return std::optional<int64_t>();
  if (!v.is_integral()) {
    return InvalidArgumentError(what, " must be an integer, not ", PyTypeName(v));
  }
  return std::optional<int64_t>(v.int_value());
}

absl::StatusOr<std::optional<std::string>> OptStr(const Value& v, std::string_view fn) {
  if (v.is_undefined() || v.is_none()) return std::optional<std::string>();
  if (!v.is_string()) {
    return InvalidArgumentError(fn, " arg must be None or str, not ", PyTypeName(v));
  }
  return std::optional<std::string>(v.string_value());
}

Value StringList(std::vector<std::string> parts) {
  std::vector<Value> items;
  items.reserve(parts.size());
  for (auto& p : parts) items.push_back(Value::String(std::move(p)));
  return Value::List(std::move(items));
}

absl::StatusOr<Value> AffixTest(const std::string& s, const std::vector<Value>& a, bool start,
                                std::string_view fn) {
  if (a.empty()) return InvalidArgumentError(fn, "() takes at least 1 argument (0 given)");
  ASSIGN_OR_RETURN(auto b, OptInt(a.size() > 1 ? a[1] : Value(), "slice index"));
  ASSIGN_OR_RETURN(auto e, OptInt(a.size() > 2 ? a[2] : Value(), "slice index"));
  std::vector<Value> candidates;
  if (a[0].is_tuple()) {
    candidates = a[0].items();
  } else {
    candidates.push_back(a[0]);
  }
  for (const Value& c : candidates) {
    if (!c.is_string()) {
      return InvalidArgumentError(fn, " first arg must be str or a tuple of str, not ",
                                  PyTypeName(c));
    }
    const bool hit = start ? pystr::StartsWith(s, c.string_value(), b, e)
                           : pystr::EndsWith(s, c.string_value(), b, e);
    if (hit) return Value::Bool(true);
  }
  return Value::Bool(false);
}

absl::StatusOr<Value> CallStrMethod(Evaluator& ev, const std::string& s, std::string_view name,
                                    CallArgs& args) {
  const std::vector<Value>& a = args.positional;
  auto arg = [&a](size_t i) { return i < a.size() ? a[i] : Value(); };
  if (name == "format") {
    ASSIGN_OR_RETURN(std::string r, BraceFormat(ev, s, args));
    return Value::String(std::move(r));
  }
  if (!args.keyword.empty() && name != "split" && name != "rsplit" && name != "splitlines" &&
      name != "replace") {
    return InvalidArgumentError("str.", name, "() takes no keyword arguments");
  }
  auto kw = [&](const char* key, size_t pos) {
    for (auto& [k, v] : args.keyword) {
      if (k == key) return v;
    }
    return arg(pos);
  };
  if (name == "strip" || name == "lstrip" || name == "rstrip") {
    ASSIGN_OR_RETURN(auto chars, OptStr(arg(0), name));
    return Value::String(pystr::Strip(s, chars, name != "rstrip", name != "lstrip"));
  }
  if (name == "split" || name == "rsplit") {
    ASSIGN_OR_RETURN(auto sep, OptStr(kw("sep", 0), name));
    if (sep && sep->empty()) return InvalidArgumentError("empty separator");
    ASSIGN_OR_RETURN(auto maxsplit, OptInt(kw("maxsplit", 1), "maxsplit"));
    return StringList(name == "split" ? pystr::Split(s, sep, maxsplit.value_or(-1))
                                      : pystr::RSplit(s, sep, maxsplit.value_or(-1)));
  }
  if (name == "splitlines") return StringList(pystr::SplitLines(s, Truthy(kw("keepends", 0))));
  if (name == "startswith" || name == "endswith") {
    return AffixTest(s, a, name == "startswith", name);
  }
  if (name == "replace") {
    const Value old = kw("old", 0), repl = kw("new", 1);
    if (!old.is_string() || !repl.is_string()) {
      return InvalidArgumentError("replace() arguments must be str");
    }
    ASSIGN_OR_RETURN(auto count, OptInt(kw("count", 2), "count"));
    return Value::String(pystr::Replace(s, old.string_value(), repl.string_value(),
                                        count.value_or(-1)));
  }
  if (name == "upper") return Value::String(pystr::Upper(s));
  if (name == "lower" || name == "casefold") return Value::String(pystr::Lower(s));
  if (name == "title") return Value::String(pystr::Title(s));
  if (name == "capitalize") return Value::String(pystr::Capitalize(s));
  if (name == "swapcase") return Value::String(pystr::SwapCase(s));
  if (name == "find" || name == "rfind" || name == "index" || name == "rindex" ||
      name == "count") {
    if (a.empty() || !a[0].is_string()) {
      return InvalidArgumentError("must be str, not ", PyTypeName(arg(0)));
    }
    ASSIGN_OR_RETURN(auto b, OptInt(arg(1), "slice index"));
    ASSIGN_OR_RETURN(auto e, OptInt(arg(2), "slice index"));
    if (name == "count") return Value::Int(pystr::Count(s, a[0].string_value(), b, e));
    const bool reverse = name[0] == 'r';
    const int64_t at = pystr::Find(s, a[0].string_value(), b, e, reverse);
    if (at < 0 && (name == "index" || name == "rindex")) {
      return InvalidArgumentError("substring not found");
    }
    return Value::Int(at);
  }
  if (name == "join") {
    ASSIGN_OR_RETURN(std::vector<Value> items, Iterate(arg(0)));
    std::string out;
    for (size_t i = 0; i < items.size(); ++i) {
      if (!items[i].is_string()) {
        return InvalidArgumentError("sequence item ", i, ": expected str instance, ",
                                    PyTypeName(items[i]), " found");
      }
      if (i > 0) out += s;
      out += items[i].string_value();
    }
    return Value::String(std::move(out));
  }
  if (name == "center" || name == "ljust" || name == "rjust") {
    ASSIGN_OR_RETURN(auto width, OptInt(arg(0), "width"));
    const std::string fill = a.size() > 1 ? PyStr(a[1]) : " ";
    if (CodePointCount(fill) != 1) {
      return InvalidArgumentError("The fill character must be exactly one character long");
    }
    const int align = name == "center" ? 0 : (name == "ljust" ? -1 : 1);
    return Value::String(pystr::Pad(s, width.value_or(0), fill, align));
  }
  if (name == "zfill") {
    ASSIGN_OR_RETURN(auto width, OptInt(arg(0), "width"));
    return Value::String(pystr::ZFill(s, width.value_or(0)));
  }
  if (name == "partition" || name == "rpartition") {
    if (!arg(0).is_string()) return InvalidArgumentError("must be str, not ", PyTypeName(arg(0)));
    const std::string& sep = a[0].string_value();
    if (sep.empty()) return InvalidArgumentError("empty separator");
    const size_t at = name == "partition" ? s.find(sep) : s.rfind(sep);
    if (at == std::string::npos) {
      return name == "partition"
                 ? Value::Tuple({Value::String(s), Value::String(""), Value::String("")})
                 : Value::Tuple({Value::String(""), Value::String(""), Value::String(s)});
    }
    return Value::Tuple({Value::String(s.substr(0, at)), Value::String(sep),
                         Value::String(s.substr(at + sep.size()))});
  }
  if (name == "removeprefix" || name == "removesuffix") {
    if (!arg(0).is_string()) return InvalidArgumentError("must be str, not ", PyTypeName(arg(0)));
    const std::string& x = a[0].string_value();
    if (name == "removeprefix") {
      return Value::String(s.compare(0, x.size(), x) == 0 ? s.substr(x.size()) : s);
    }
    const bool ends = s.size() >= x.size() && s.compare(s.size() - x.size(), x.size(), x) == 0;
    return Value::String(ends ? s.substr(0, s.size() - x.size()) : s);
  }
  if (std::optional<bool> p = pystr::Predicate(name, s)) return Value::Bool(*p);
  return UnimplementedError("str.", name, "() is not supported");
}

absl::StatusOr<Value> CallSequenceMethod(const Value& obj, std::string_view name, CallArgs& args) {
  const std::vector<Value>& a = args.positional;
  if (name == "copy") return Value::List(obj.items());
  if (a.empty()) return InvalidArgumentError(name, "() takes at least 1 argument (0 given)");
  if (name == "count") {
    int64_t n = 0;
    for (const Value& x : obj.items()) n += PyEquals(x, a[0]) ? 1 : 0;
    return Value::Int(n);
  }
  for (size_t i = 0; i < obj.items().size(); ++i) {  // index
    if (PyEquals(obj.items()[i], a[0])) return Value::Int(static_cast<int64_t>(i));
  }
  return InvalidArgumentError(PyRepr(a[0]), " is not in list");
}

absl::StatusOr<Value> CallDictMethod(const Value& obj, std::string_view name, CallArgs& args) {
  const Dict& d = obj.dict();
  if (name == "get") {
    if (args.positional.empty()) return InvalidArgumentError("get expected at least 1 argument, got 0");
    if (!IsHashable(args.positional[0])) {
      return InvalidArgumentError("unhashable type: '", PyTypeName(args.positional[0]), "'");
    }
    const Value* v = d.Find(args.positional[0]);
    if (v != nullptr) return *v;
    return args.positional.size() > 1 ? args.positional[1] : Value::None();
  }
  std::vector<Value> out;
  out.reserve(d.size());
  for (const auto& [k, v] : d.entries()) {  // a snapshot: dicts are immutable here
    if (name == "keys") {
      out.push_back(k);
    } else if (name == "values") {
      out.push_back(v);
    } else if (name == "items") {
      out.push_back(Value::Tuple({k, v}));
    }
  }
  if (name == "copy") return obj;
  if (name == "keys") return Value::View(Value::ViewKind::kKeys, std::move(out));
  if (name == "values") return Value::View(Value::ViewKind::kValues, std::move(out));
  if (name == "items") return Value::View(Value::ViewKind::kItems, std::move(out));
  return UnimplementedError("dict.", name, "() is not supported");
}

// markupsafe.Markup's methods: string arguments are escaped and str results stay Markup.
absl::StatusOr<Value> CallMarkupMethod(Evaluator& ev, const Value& obj, std::string_view name,
                                       CallArgs& args) {
  static constexpr std::string_view kWrapped[] = {
      "capitalize", "title", "lower", "upper", "replace", "ljust", "rjust", "lstrip", "rstrip",
      "center", "strip", "expandtabs", "swapcase", "zfill", "casefold", "removeprefix",
      "removesuffix", "format", "join", "partition", "rpartition"};
  auto escape = [](const Value& x) {
    return x.is_string() && !x.is_markup() ? Value::Markup(pystr::HtmlEscape(x.string_value())) : x;
  };
  auto markup = [](const Value& x) { return x.is_string() ? Value::Markup(x.string_value()) : x; };
  const bool wrapped = In(kWrapped, name);
  CallArgs a = args;
  if (wrapped) {
    for (Value& x : a.positional) x = escape(x);
    for (auto& [k, x] : a.keyword) x = escape(x);
    if (name == "join" && !a.positional.empty()) {
      ASSIGN_OR_RETURN(std::vector<Value> items, Iterate(a.positional[0]));
      for (Value& x : items) x = escape(x);
      a.positional[0] = Value::List(std::move(items));
    }
  }
  ASSIGN_OR_RETURN(Value r, CallStrMethod(ev, obj.string_value(), name, a));
  if (wrapped || name == "split" || name == "rsplit" || name == "splitlines") {
    if (r.is_sequence()) {
      std::vector<Value> items;
      for (const Value& x : r.items()) items.push_back(markup(x));
      return r.is_tuple() ? Value::Tuple(std::move(items)) : Value::List(std::move(items));
    }
    return markup(r);
  }
  return r;
}

Value BindMethod(Evaluator& ev, const Value& obj, std::string_view name) {
  std::string method(name);
  const std::string label = StrCat(PyTypeName(obj), ".", name);
  return Value::MakeFunction(label, [&ev, obj, method](CallArgs& args) -> absl::StatusOr<Value> {
    if (obj.is_markup()) return CallMarkupMethod(ev, obj, method, args);
    if (obj.is_string()) return CallStrMethod(ev, obj.string_value(), method, args);
    if (obj.is_dict()) return CallDictMethod(obj, method, args);
    return CallSequenceMethod(obj, method, args);
  });
}

}  // namespace

std::optional<Value> PythonAttribute(Evaluator& ev, const Value& obj, std::string_view name) {
  if (name.size() > 4 && name.substr(0, 2) == "__" && name.substr(name.size() - 2) == "__") {
    return Unsafe(obj, name);  // dunders exist on every object and are refused
  }
  switch (obj.kind()) {
    case Value::Kind::kString:
      if (In(kStrMethods, name)) return BindMethod(ev, obj, name);
      return std::nullopt;
    case Value::Kind::kList:
      if (In(kListMutators, name)) return Unsafe(obj, name);
      if (In(kListMethods, name)) return BindMethod(ev, obj, name);
      return std::nullopt;
    case Value::Kind::kTuple:
      if (In(kTupleMethods, name)) return BindMethod(ev, obj, name);
      return std::nullopt;
    case Value::Kind::kDict:
      if (In(kDictMutators, name)) return Unsafe(obj, name);
      if (In(kDictMethods, name)) return BindMethod(ev, obj, name);
      return std::nullopt;
    case Value::Kind::kObject:
      if (!name.empty() && name[0] == '_') return Unsafe(obj, name);
      return obj.object()->GetAttr(name);
    default:
      return std::nullopt;
  }
}

absl::StatusOr<Value> SandboxGetAttr(Evaluator& ev, const Value& obj, std::string_view name) {
  if (obj.is_undefined()) return InvalidArgumentError(obj.undefined_message());
  if (std::optional<Value> attr = PythonAttribute(ev, obj, name)) return *attr;
  if (obj.is_dict()) {  // AttributeError: fall back to obj[name]
    if (const Value* v = obj.dict().Find(name)) return *v;
  }
  return NoAttribute(obj, name);
}

absl::StatusOr<Value> SandboxGetItem(Evaluator& ev, const Value& obj, const Value& key) {
  if (obj.is_undefined()) return InvalidArgumentError(obj.undefined_message());
  if (obj.is_dict()) {
    if (IsHashable(key)) {
      if (const Value* v = obj.dict().Find(key)) return *v;
    }
  } else if ((obj.is_sequence() || obj.is_string()) && key.is_integral()) {
    const int64_t n = obj.is_string() ? static_cast<int64_t>(CodePointCount(obj.string_value()))
                                      : static_cast<int64_t>(obj.items().size());
    int64_t i = key.int_value();
    if (i < 0) i += n;
    if (i >= 0 && i < n) {
      if (obj.is_sequence()) return obj.items()[static_cast<size_t>(i)];
      const std::string& s = obj.string_value();
      const size_t b = ByteOffsetOfCodePoint(s, static_cast<size_t>(i));
      const size_t e = ByteOffsetOfCodePoint(s, static_cast<size_t>(i) + 1);
      if (obj.is_markup()) return Value::Markup(s.substr(b, e - b));
      return Value::String(s.substr(b, e - b));
    }
  } else if (obj.is_object() && key.is_string()) {
    return SandboxGetAttr(ev, obj, key.string_value());
  }
  if (key.is_string()) {  // TypeError/LookupError: fall back to getattr
    if (std::optional<Value> attr = PythonAttribute(ev, obj, key.string_value())) return *attr;
    return NoAttribute(obj, key.string_value());
  }
  return Value::Undefined(StrCat(ObjectTypeRepr(obj), " has no element ", PyRepr(key)));
}

}  // namespace krasis::chat_template
