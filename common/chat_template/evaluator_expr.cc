// Expression evaluation: names and scopes, attribute/item access, slices, calls,
// filters, tests and operators with Python semantics (see evaluator.h).
#include "common/chat_template/builtins.h"
#include "common/chat_template/evaluator.h"
#include "common/chat_template/pystr.h"
#include "common/chat_template/unicode.h"
#include "common/status.h"

namespace krasis::chat_template {

absl::StatusOr<Value> Evaluator::Eval(const Expr& e, const FramePtr& frame) {
  auto v = EvalInner(e, frame);
  if (!v.ok()) return Locate(v.status(), e.pos);
  return v;
}

absl::StatusOr<Value> Evaluator::Lookup(const std::string& name, const FramePtr& frame) {
  if (const Value* v = frame->Find(name)) return *v;
  if (auto it = globals_.find(name); it != globals_.end()) return it->second;
  if (std::optional<Value> g = FindGlobal(name, *this)) {
    globals_.emplace(name, *g);
    return *g;
  }
  return Value::Undefined(StrCat("'", name, "' is undefined"));
}

absl::Status Evaluator::EvalArgs(const Expr& e, const FramePtr& frame, CallArgs* args) {
  for (const ExprPtr& a : e.args) {
    ASSIGN_OR_RETURN(Value v, Eval(*a, frame));
    args->positional.push_back(std::move(v));
  }
  if (e.star_args) {
    ASSIGN_OR_RETURN(Value v, Eval(*e.star_args, frame));
    auto items = Iterate(v);
    if (!items.ok()) return Locate(items.status(), e.star_args->pos);
    for (Value& item : *items) args->positional.push_back(std::move(item));
  }
  for (const auto& [k, expr] : e.kwargs) {
    ASSIGN_OR_RETURN(Value v, Eval(*expr, frame));
    args->keyword.emplace_back(k, std::move(v));
  }
  if (e.star_kwargs) {
    ASSIGN_OR_RETURN(Value v, Eval(*e.star_kwargs, frame));
    if (!v.is_dict()) {
      return Locate(InvalidArgumentError("argument after ** must be a mapping, not ",
                                         PyTypeName(v)),
                    e.star_kwargs->pos);
    }
    for (const auto& [k, val] : v.dict().entries()) {
      if (!k.is_string()) {
        return Locate(InvalidArgumentError("keywords must be strings"), e.star_kwargs->pos);
      }
      args->keyword.emplace_back(k.string_value(), val);
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<Value> Evaluator::ApplyFilterChain(const Expr& e, const FramePtr& frame,
                                                  const Value& subject) {
  Value sub = subject;
  if (!e.operands.empty()) {
    ASSIGN_OR_RETURN(sub, ApplyFilterChain(*e.operands[0], frame, subject));
  }
  CallArgs args;
  RETURN_IF_ERROR(EvalArgs(e, frame, &args));
  auto v = e.filter(*this, sub, args);
  if (!v.ok()) return Locate(v.status(), e.pos);
  return v;
}

absl::StatusOr<Value> Evaluator::EvalSlice(const Expr& e, const FramePtr& frame) {
  ASSIGN_OR_RETURN(Value obj, Eval(*e.operands[0], frame));
  std::optional<int64_t> parts[3];
  for (int i = 0; i < 3; ++i) {
    if (!e.slice_parts[i]) continue;
    ASSIGN_OR_RETURN(Value p, Eval(*e.slice_parts[i], frame));
    if (p.is_none()) continue;
    if (!p.is_integral()) {
      return InvalidArgumentError(
          "slice indices must be integers or None or have an __index__ method");
    }
    parts[i] = p.int_value();
  }
  const int64_t step = parts[2].value_or(1);
  if (step == 0) return InvalidArgumentError("slice step cannot be zero");
  if (obj.is_undefined()) return InvalidArgumentError(obj.undefined_message());
  if (obj.is_string()) {
    const std::u32string u = DecodeUtf8(obj.string_value());
    std::string out;
    for (int64_t i : pystr::SliceIndices(static_cast<int64_t>(u.size()), parts[0], parts[1], step)) {
      AppendUtf8(u[static_cast<size_t>(i)], &out);
    }
    if (obj.is_markup()) return Value::Markup(std::move(out));
    return Value::String(std::move(out));
  }
  if (obj.is_sequence()) {
    const auto& items = obj.items();
    std::vector<Value> out;
    for (int64_t i :
         pystr::SliceIndices(static_cast<int64_t>(items.size()), parts[0], parts[1], step)) {
      out.push_back(items[static_cast<size_t>(i)]);
    }
    return obj.is_tuple() ? Value::Tuple(std::move(out)) : Value::List(std::move(out));
  }
  return Value::Undefined(StrCat(ObjectTypeRepr(obj), " has no element slice"));
}

absl::StatusOr<Value> Evaluator::EvalInner(const Expr& e, const FramePtr& frame) {
  switch (e.kind) {
    case Expr::Kind::kConst:
      return e.value;
    case Expr::Kind::kName:
      return Lookup(e.name, frame);
    case Expr::Kind::kGetAttr: {
      ASSIGN_OR_RETURN(Value obj, Eval(*e.operands[0], frame));
      return GetAttr(obj, e.name);
    }
    case Expr::Kind::kGetItem: {
      ASSIGN_OR_RETURN(Value obj, Eval(*e.operands[0], frame));
      ASSIGN_OR_RETURN(Value key, Eval(*e.operands[1], frame));
      return GetItem(obj, key);
    }
    case Expr::Kind::kSlice:
      return EvalSlice(e, frame);
    case Expr::Kind::kCall: {
      ASSIGN_OR_RETURN(Value callee, Eval(*e.operands[0], frame));
      CallArgs args;
      RETURN_IF_ERROR(EvalArgs(e, frame, &args));
      return CallValue(callee, args);
    }
    case Expr::Kind::kFilter: {
      if (e.operands.empty()) return InvalidArgumentError("filter without a subject");
      ASSIGN_OR_RETURN(Value subject, Eval(*e.operands[0], frame));
      CallArgs args;
      RETURN_IF_ERROR(EvalArgs(e, frame, &args));
      return e.filter(*this, subject, args);
    }
    case Expr::Kind::kTest: {
      ASSIGN_OR_RETURN(Value subject, Eval(*e.operands[0], frame));
      CallArgs args;
      RETURN_IF_ERROR(EvalArgs(e, frame, &args));
      ASSIGN_OR_RETURN(bool result, e.test(*this, subject, args));
      return Value::Bool(result);
    }
    case Expr::Kind::kUnary: {
      ASSIGN_OR_RETURN(Value v, Eval(*e.operands[0], frame));
      if (e.name == "not") return Value::Bool(!Truthy(v));
      if (v.is_undefined()) return InvalidArgumentError(v.undefined_message());
      if (v.is_float()) return Value::Float(e.name == "-" ? -v.number_value() : v.number_value());
      if (v.is_integral()) {
        if (e.name == "+") return Value::Int(v.int_value());
        if (v.int_value() == INT64_MIN) return InvalidArgumentError("integer overflow");
        return Value::Int(-v.int_value());
      }
      return InvalidArgumentError("bad operand type for unary ", e.name, ": '", PyTypeName(v), "'");
    }
    case Expr::Kind::kBinary: {
      ASSIGN_OR_RETURN(Value a, Eval(*e.operands[0], frame));
      if (e.name == "and") return Truthy(a) ? Eval(*e.operands[1], frame) : a;
      if (e.name == "or") return Truthy(a) ? a : Eval(*e.operands[1], frame);
      ASSIGN_OR_RETURN(Value b, Eval(*e.operands[1], frame));
      return BinaryOp(e.name, a, b);
    }
    case Expr::Kind::kCompare: {
      ASSIGN_OR_RETURN(Value left, Eval(*e.operands[0], frame));
      for (size_t i = 0; i < e.compare_ops.size(); ++i) {
        ASSIGN_OR_RETURN(Value right, Eval(*e.operands[i + 1], frame));
        const std::string& op = e.compare_ops[i];
        bool r;
        if (op == "==") {
          r = PyEquals(left, right);
        } else if (op == "!=") {
          r = !PyEquals(left, right);
        } else if (op == "in" || op == "notin") {
          ASSIGN_OR_RETURN(r, Contains(right, left));
          if (op == "notin") r = !r;
        } else {
          ASSIGN_OR_RETURN(r, PyCompare(left, right, op));
        }
        if (!r) return Value::Bool(false);
        left = std::move(right);
      }
      return Value::Bool(true);
    }
    case Expr::Kind::kCondExpr: {
      ASSIGN_OR_RETURN(Value cond, Eval(*e.operands[1], frame));
      if (Truthy(cond)) return Eval(*e.operands[0], frame);
      if (e.operands.size() > 2) return Eval(*e.operands[2], frame);
      return Value::Undefined(StrCat("the inline if-expression on line ", e.pos.line,
                                     " evaluated to false and no else section was defined."));
    }
    case Expr::Kind::kList:
    case Expr::Kind::kTuple: {
      std::vector<Value> items;
      items.reserve(e.operands.size());
      for (const ExprPtr& o : e.operands) {
        ASSIGN_OR_RETURN(Value v, Eval(*o, frame));
        items.push_back(std::move(v));
      }
      return e.kind == Expr::Kind::kList ? Value::List(std::move(items))
                                         : Value::Tuple(std::move(items));
    }
    case Expr::Kind::kDict: {
      Dict d;
      for (size_t i = 0; i + 1 < e.operands.size(); i += 2) {
        ASSIGN_OR_RETURN(Value k, Eval(*e.operands[i], frame));
        ASSIGN_OR_RETURN(Value v, Eval(*e.operands[i + 1], frame));
        if (!IsHashable(k)) return InvalidArgumentError("unhashable type: '", PyTypeName(k), "'");
        d.Set(std::move(k), std::move(v));
      }
      return Value::MakeDict(std::move(d));
    }
  }
  return InvalidArgumentError("unknown expression");
}

absl::StatusOr<Value> Evaluator::GetAttr(const Value& obj, std::string_view name) {
  return SandboxGetAttr(*this, obj, name);
}

absl::StatusOr<Value> Evaluator::GetItem(const Value& obj, const Value& key) {
  return SandboxGetItem(*this, obj, key);
}

absl::StatusOr<Value> Evaluator::CallValue(const Value& callee, CallArgs& args) {
  switch (callee.kind()) {
    case Value::Kind::kFunction:
      return callee.function().call(args);
    case Value::Kind::kObject:
      if (callee.object()->IsCallable()) return callee.object()->Call(args);
      break;
    case Value::Kind::kUndefined:
      return InvalidArgumentError(callee.undefined_message());
    default:
      break;
  }
  return InvalidArgumentError("'", PyTypeName(callee), "' object is not callable");
}

absl::StatusOr<Value> Evaluator::CallFilterByName(std::string_view name, const Value& subject,
                                                  CallArgs& args) {
  FilterFn f = FindFilter(name);
  if (f == nullptr) return InvalidArgumentError("no filter named '", name, "'");
  return f(*this, subject, args);
}

absl::StatusOr<bool> Evaluator::CallTestByName(std::string_view name, const Value& subject,
                                               CallArgs& args) {
  TestFn t = FindTest(name);
  if (t == nullptr) return InvalidArgumentError("no test named '", name, "'");
  return t(*this, subject, args);
}

}  // namespace krasis::chat_template
