// Python operator semantics for the chat-template interpreter: arithmetic with
// Python's int/float rules, concatenation and repetition of sequences, membership,
// iteration, len() and builtin argument binding (see evaluator.h).
#include <cmath>

#include "common/chat_template/evaluator.h"
#include "common/chat_template/pyformat.h"
#include "common/chat_template/pystr.h"
#include "common/chat_template/unicode.h"
#include "common/status.h"

namespace krasis::chat_template {
namespace {

absl::Status Unsupported(std::string_view op, const Value& a, const Value& b) {
  return InvalidArgumentError("unsupported operand type(s) for ", op, ": '", PyTypeName(a),
                              "' and '", PyTypeName(b), "'");
}

absl::StatusOr<Value> Repeat(const Value& seq, int64_t n) {
  if (seq.is_string()) {
    std::string out;
    for (int64_t i = 0; i < n; ++i) out += seq.string_value();
    return seq.is_markup() ? Value::Markup(std::move(out)) : Value::String(std::move(out));
  }
  std::vector<Value> out;
  for (int64_t i = 0; i < n; ++i) out.insert(out.end(), seq.items().begin(), seq.items().end());
  return seq.is_tuple() ? Value::Tuple(std::move(out)) : Value::List(std::move(out));
}

absl::Status Overflow() { return InvalidArgumentError("integer overflow"); }

int64_t FloorDiv(int64_t a, int64_t b) {
  int64_t q = a / b;
  if ((a % b != 0) && ((a < 0) != (b < 0))) --q;
  return q;
}

// CPython's float floor division (float_floor_div), exact where floor(a / b) is not.
double FloatFloorDiv(double a, double b) {
  double mod = std::fmod(a, b);
  double div = (a - mod) / b;
  if (mod != 0) {
    if ((b < 0) != (mod < 0)) div -= 1.0;
  }
  if (div != 0) {
    double floordiv = std::floor(div);
    if (div - floordiv > 0.5) floordiv += 1.0;
    return floordiv;
  }
  return std::copysign(0.0, a / b);
}

double FloatMod(double a, double b) {
  double m = std::fmod(a, b);
  if (m != 0 && ((m < 0) != (b < 0))) m += b;
  if (m == 0) m = std::copysign(0.0, b);
  return m;
}

}  // namespace

absl::StatusOr<std::vector<Value>> Iterate(const Value& v) {
  switch (v.kind()) {
    case Value::Kind::kUndefined:
      return std::vector<Value>();
    case Value::Kind::kList:
    case Value::Kind::kTuple:
    case Value::Kind::kView:
      return v.items();
    case Value::Kind::kDict: {
      std::vector<Value> keys;
      keys.reserve(v.dict().size());
      for (const auto& [k, val] : v.dict().entries()) keys.push_back(k);
      return keys;
    }
    case Value::Kind::kString: {
      std::vector<Value> chars;
      for (char32_t c : DecodeUtf8(v.string_value())) {
        std::string s;
        AppendUtf8(c, &s);
        chars.push_back(Value::String(std::move(s)));
      }
      return chars;
    }
    default:
      return InvalidArgumentError("'", PyTypeName(v), "' object is not iterable");
  }
}

absl::StatusOr<int64_t> Length(const Value& v) {
  switch (v.kind()) {
    case Value::Kind::kUndefined:
      return 0;
    case Value::Kind::kString:
      return static_cast<int64_t>(CodePointCount(v.string_value()));
    case Value::Kind::kList:
    case Value::Kind::kTuple:
    case Value::Kind::kView:
      return static_cast<int64_t>(v.items().size());
    case Value::Kind::kDict:
      return static_cast<int64_t>(v.dict().size());
    default:
      return InvalidArgumentError("object of type '", PyTypeName(v), "' has no len()");
  }
}

absl::StatusOr<bool> Contains(const Value& container, const Value& item) {
  switch (container.kind()) {
    case Value::Kind::kUndefined:
      return false;
    case Value::Kind::kString:
      if (!item.is_string()) {
        return InvalidArgumentError("'in <string>' requires string as left operand, not ",
                                    PyTypeName(item));
      }
      return container.string_value().find(item.string_value()) != std::string::npos;
    case Value::Kind::kList:
    case Value::Kind::kTuple:
    case Value::Kind::kView:
      for (const Value& x : container.items()) {
        if (PyEquals(x, item)) return true;
      }
      return false;
    case Value::Kind::kDict:
      if (!IsHashable(item)) {
        return InvalidArgumentError("unhashable type: '", PyTypeName(item), "'");
      }
      return container.dict().Find(item) != nullptr;
    default:
      return InvalidArgumentError("argument of type '", PyTypeName(container),
                                  "' is not iterable");
  }
}

absl::StatusOr<Value> BinaryOp(std::string_view op, const Value& a, const Value& b) {
  if (op == "~") return Value::String(PyStr(a) + PyStr(b));
  if (a.is_undefined()) return InvalidArgumentError(a.undefined_message());
  // str % Undefined: CPython takes an object with __getitem__ as a mapping argument.
  if (b.is_undefined() && !(op == "%" && a.is_string())) {
    return InvalidArgumentError(b.undefined_message());
  }
  const bool nums = a.is_number() && b.is_number();
  const bool ints = a.is_integral() && b.is_integral();
  if (op == "+") {
    if (ints) {
      int64_t r;
      if (__builtin_add_overflow(a.int_value(), b.int_value(), &r)) return Overflow();
      return Value::Int(r);
    }
    if (nums) return Value::Float(a.number_value() + b.number_value());
    if (a.is_string() && b.is_string()) {
      if (a.is_markup() || b.is_markup()) {  // Markup escapes the plain operand
        const std::string x = a.is_markup() ? a.string_value() : pystr::HtmlEscape(a.string_value());
        const std::string y = b.is_markup() ? b.string_value() : pystr::HtmlEscape(b.string_value());
        return Value::Markup(x + y);
      }
      return Value::String(a.string_value() + b.string_value());
    }
    if ((a.is_list() && b.is_list()) || (a.is_tuple() && b.is_tuple())) {
      std::vector<Value> out = a.items();
      out.insert(out.end(), b.items().begin(), b.items().end());
      return a.is_tuple() ? Value::Tuple(std::move(out)) : Value::List(std::move(out));
    }
    if (a.is_string() || a.is_sequence()) {
      return InvalidArgumentError("can only concatenate ", PyTypeName(a), " (not \"",
                                  PyTypeName(b), "\") to ", PyTypeName(a));
    }
    return Unsupported("+", a, b);
  }
  if (op == "-") {
    if (ints) {
      int64_t r;
      if (__builtin_sub_overflow(a.int_value(), b.int_value(), &r)) return Overflow();
      return Value::Int(r);
    }
    if (nums) return Value::Float(a.number_value() - b.number_value());
    return Unsupported("-", a, b);
  }
  if (op == "*") {
    if (ints) {
      int64_t r;
      if (__builtin_mul_overflow(a.int_value(), b.int_value(), &r)) return Overflow();
      return Value::Int(r);
    }
    if (nums) return Value::Float(a.number_value() * b.number_value());
    if ((a.is_string() || a.is_sequence()) && b.is_integral()) return Repeat(a, b.int_value());
    if ((b.is_string() || b.is_sequence()) && a.is_integral()) return Repeat(b, a.int_value());
    if (a.is_string() || a.is_sequence()) {
      return InvalidArgumentError("can't multiply sequence by non-int of type '", PyTypeName(b),
                                  "'");
    }
    return Unsupported("*", a, b);
  }
  if (op == "/") {
    if (!nums) return Unsupported("/", a, b);
    if (b.number_value() == 0) return InvalidArgumentError("division by zero");
    return Value::Float(a.number_value() / b.number_value());
  }
  if (op == "//") {
    if (!nums) return Unsupported("//", a, b);
    if (b.number_value() == 0) return InvalidArgumentError("integer division or modulo by zero");
    if (ints) return Value::Int(FloorDiv(a.int_value(), b.int_value()));
    return Value::Float(FloatFloorDiv(a.number_value(), b.number_value()));
  }
  if (op == "%") {
    if (a.is_string()) {
      if (a.is_markup()) {  // Markup % args escapes string arguments
        auto escape = [](const Value& x) {
          return x.is_string() && !x.is_markup() ? Value::Markup(pystr::HtmlEscape(x.string_value())) : x;
        };
        Value args = b;
        if (b.is_tuple()) {
          std::vector<Value> items;
          for (const Value& x : b.items()) items.push_back(escape(x));
          args = Value::Tuple(std::move(items));
        } else {
          args = escape(b);
        }
        ASSIGN_OR_RETURN(std::string s, PercentFormat(a.string_value(), args));
        return Value::Markup(std::move(s));
      }
      ASSIGN_OR_RETURN(std::string s, PercentFormat(a.string_value(), b));
      return Value::String(std::move(s));
    }
    if (!nums) return Unsupported("%", a, b);
    if (b.number_value() == 0) return InvalidArgumentError("integer division or modulo by zero");
    if (ints) {
      const int64_t x = a.int_value(), y = b.int_value();
      return Value::Int(x - FloorDiv(x, y) * y);
    }
    return Value::Float(FloatMod(a.number_value(), b.number_value()));
  }
  if (op == "**") {
    if (!nums) return Unsupported("** or pow()", a, b);
    if (a.number_value() < 0 && std::floor(b.number_value()) != b.number_value()) {
      return InvalidArgumentError("complex numbers are not supported");
    }
    if (ints && b.int_value() >= 0) {
      int64_t r = 1, base = a.int_value();
      for (int64_t e = b.int_value(); e > 0; e >>= 1) {
        if (e & 1) {
          if (__builtin_mul_overflow(r, base, &r)) return Overflow();
        }
        if (e > 1 && __builtin_mul_overflow(base, base, &base)) return Overflow();
      }
      return Value::Int(r);
    }
    if (a.number_value() == 0 && b.number_value() < 0) {
      return InvalidArgumentError("0.0 cannot be raised to a negative power");
    }
    const double r = std::pow(a.number_value(), b.number_value());
    if (std::isinf(r) && std::isfinite(a.number_value()) && std::isfinite(b.number_value())) {
      return InvalidArgumentError("(34, 'Numerical result out of range')");
    }
    return Value::Float(r);
  }
  return InvalidArgumentError("unknown operator ", op);
}

absl::Status BindArgs(std::string_view fn, CallArgs& args, const std::vector<Param>& params,
                      std::vector<Value>* out) {
  out->assign(params.size(), Value());
  std::vector<bool> set(params.size(), false);
  if (args.positional.size() > params.size()) {
    return InvalidArgumentError(fn, "() takes at most ", params.size(), " argument(s) (",
                                args.positional.size(), " given)");
  }
  for (size_t i = 0; i < args.positional.size(); ++i) {
    (*out)[i] = args.positional[i];
    set[i] = true;
  }
  for (auto& [key, value] : args.keyword) {
    size_t i = 0;
    while (i < params.size() && key != params[i].name) ++i;
    if (i == params.size()) {
      return InvalidArgumentError(fn, "() got an unexpected keyword argument '", key, "'");
    }
    if (set[i]) {
      return InvalidArgumentError(fn, "() got multiple values for argument '", key, "'");
    }
    (*out)[i] = value;
    set[i] = true;
  }
  for (size_t i = 0; i < params.size(); ++i) {
    if (set[i]) continue;
    if (params[i].required) {
      return InvalidArgumentError(fn, "() missing required argument '", params[i].name, "'");
    }
    (*out)[i] = params[i].default_value;
  }
  return absl::OkStatus();
}

}  // namespace krasis::chat_template
