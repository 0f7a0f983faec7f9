// Builtin global functions of the chat-template interpreter: jinja2's range (with
// the sandbox's 100000 limit), dict, namespace, cycler and joiner, plus the two
// transformers adds: raise_exception(message) and strftime_now(format).
#include <ctime>

#include "common/chat_template/builtins.h"
#include "common/chat_template/evaluator.h"
#include "common/chat_template/objects.h"
#include "common/status.h"

namespace krasis::chat_template {
namespace {

constexpr int64_t kMaxRange = 100000;  // jinja2.sandbox.MAX_RANGE

absl::StatusOr<Value> Range(CallArgs& args) {
  if (!args.keyword.empty()) return InvalidArgumentError("range() takes no keyword arguments");
  const auto& a = args.positional;
  if (a.empty() || a.size() > 3) {
    return InvalidArgumentError("range expected at least 1 argument, got ", a.size());
  }
  for (const Value& x : a) {
    if (!x.is_integral()) {
      return InvalidArgumentError("'", PyTypeName(x), "' object cannot be interpreted as an integer");
    }
  }
  int64_t start = 0, stop, step = 1;
  if (a.size() == 1) {
    stop = a[0].int_value();
  } else {
    start = a[0].int_value();
    stop = a[1].int_value();
    if (a.size() == 3) step = a[2].int_value();
  }
  if (step == 0) return InvalidArgumentError("range() arg 3 must not be zero");
  int64_t n = 0;
  if (step > 0 && stop > start) n = (stop - start + step - 1) / step;
  if (step < 0 && stop < start) n = (start - stop - step - 1) / -step;
  if (n > kMaxRange) {
    return InvalidArgumentError(
        "Range too big. The sandbox blocks ranges larger than MAX_RANGE (100000).");
  }
  std::vector<Value> out;
  out.reserve(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) out.push_back(Value::Int(start + i * step));
  return Value::List(std::move(out));
}

// Python dict(*args, **kwargs).
absl::StatusOr<Dict> MakeDictFromArgs(std::string_view fn, CallArgs& args) {
  Dict d;
  if (args.positional.size() > 1) {
    return InvalidArgumentError(fn, " expected at most 1 argument, got ", args.positional.size());
  }
  if (args.positional.size() == 1) {
    const Value& src = args.positional[0];
    if (src.is_dict()) {
      d = src.dict();
    } else if (src.is_object() && src.object()->IsNamespace()) {
      return InvalidArgumentError("'Namespace' object is not iterable");
    } else {
      ASSIGN_OR_RETURN(std::vector<Value> items, Iterate(src));
      for (const Value& item : items) {
        ASSIGN_OR_RETURN(std::vector<Value> pair, Iterate(item));
        if (pair.size() != 2) {
          return InvalidArgumentError("dictionary update sequence element has length ",
                                      pair.size(), "; 2 is required");
        }
        if (!IsHashable(pair[0])) {
          return InvalidArgumentError("unhashable type: '", PyTypeName(pair[0]), "'");
        }
        d.Set(pair[0], pair[1]);
      }
    }
  }
  for (auto& [k, v] : args.keyword) d.Set(Value::String(k), v);
  return d;
}

// strftime with Python's behaviour for the common directives (C library strftime).
absl::StatusOr<Value> StrftimeNow(CallArgs& args) {
  std::vector<Value> a;
  RETURN_IF_ERROR(BindArgs("strftime_now", args, {{"format", Value(), true}}, &a));
  if (!a[0].is_string()) {
    return InvalidArgumentError("strftime() argument 1 must be str, not ", PyTypeName(a[0]));
  }
  const std::time_t now = std::time(nullptr);
  std::tm tm{};
  localtime_r(&now, &tm);
  const std::string& fmt = a[0].string_value();
  if (fmt.empty()) return Value::String("");
  for (size_t cap = 256; cap <= 65536; cap *= 4) {
    std::string buf(cap, '\0');
    const size_t n = std::strftime(buf.data(), buf.size(), fmt.c_str(), &tm);
    if (n > 0) {
      buf.resize(n);
      return Value::String(std::move(buf));
    }
  }
  return Value::String("");
}

}  // namespace

std::optional<Value> FindGlobal(std::string_view name, Evaluator& ev) {
  if (name == "range") return Value::MakeFunction("range", Range);
  if (name == "dict") {
    return Value::MakeFunction("dict", [](CallArgs& args) -> absl::StatusOr<Value> {
      ASSIGN_OR_RETURN(Dict d, MakeDictFromArgs("dict", args));
      return Value::MakeDict(std::move(d));
    });
  }
  if (name == "namespace") {
    return Value::MakeFunction("namespace", [](CallArgs& args) -> absl::StatusOr<Value> {
      ASSIGN_OR_RETURN(Dict d, MakeDictFromArgs("namespace", args));
      return Value::MakeObject(std::make_shared<NamespaceObject>(std::move(d)));
    });
  }
  if (name == "cycler") {
    return Value::MakeFunction("cycler", [](CallArgs& args) -> absl::StatusOr<Value> {
      return Value::MakeObject(std::make_shared<CyclerObject>(args.positional));
    });
  }
  if (name == "joiner") {
    return Value::MakeFunction("joiner", [](CallArgs& args) -> absl::StatusOr<Value> {
      std::vector<Value> a;
      RETURN_IF_ERROR(BindArgs("joiner", args, {{"sep", Value::String(", ")}}, &a));
      auto used = std::make_shared<bool>(false);
      const std::string sep = PyStr(a[0]);
      return Value::MakeFunction("joiner", [used, sep](CallArgs&) -> absl::StatusOr<Value> {
        if (!*used) {
          *used = true;
          return Value::String("");
        }
        return Value::String(sep);
      });
    });
  }
  if (name == "raise_exception") {
    return Value::MakeFunction("raise_exception", [&ev](CallArgs& args) -> absl::StatusOr<Value> {
      std::vector<Value> a;
      RETURN_IF_ERROR(BindArgs("raise_exception", args, {{"message", Value(), true}}, &a));
      ev.MarkErrorLocated();
      return absl::InvalidArgumentError(PyStr(a[0]));
    });
  }
  if (name == "strftime_now") return Value::MakeFunction("strftime_now", StrftimeNow);
  return std::nullopt;
}

}  // namespace krasis::chat_template
