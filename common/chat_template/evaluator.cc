// Statement execution: output, if, for (loop object, else, inline if, recursion,
// break/continue), set, macros and call blocks, filter/with/generation blocks
// (see evaluator.h; expressions are in evaluator_expr.cc).
#include "common/chat_template/evaluator.h"

#include "common/chat_template/objects.h"
#include "common/status.h"

namespace krasis::chat_template {
namespace {

// Nested macro calls / recursive loops before rendering stops (Python's own limit
// stops jinja2 at a similar depth).
constexpr int kMaxCallDepth = 256;

FramePtr Inner(const FramePtr& parent) {
  auto f = std::make_shared<Frame>();
  f->parent = parent;
  return f;
}

}  // namespace

const Value* Frame::Find(std::string_view name) const {
  for (const Frame* f = this; f != nullptr; f = f->parent.get()) {
    for (const auto& [k, v] : f->vars) {
      if (k == name) return &v;
    }
  }
  return nullptr;
}

void Frame::Set(std::string_view name, Value value) {
  for (auto& [k, v] : vars) {
    if (k == name) {
      v = std::move(value);
      return;
    }
  }
  vars.emplace_back(std::string(name), std::move(value));
}

Evaluator::Evaluator(const Program& program, const Value& context)
    : program_(program), root_(std::make_shared<Frame>()) {
  for (const auto& [k, v] : context.dict().entries()) {
    if (k.is_string()) root_->Set(k.string_value(), v);
  }
}

Evaluator::~Evaluator() {
  // Macros hold their defining frames, which hold the macros: break the cycles.
  for (const FramePtr& f : closure_frames_) {
    f->vars.clear();
    f->parent.reset();
  }
  root_->vars.clear();
}

absl::StatusOr<std::string> Evaluator::Render() {
  std::string out;
  RETURN_IF_ERROR(ExecBody(program_.body, root_, &out));
  return out;
}

absl::Status Evaluator::Locate(absl::Status status, Pos pos) {
  if (status.ok() || error_located_) return status;
  error_located_ = true;
  return absl::Status(status.code(), StrCat(program_.name, ":", pos.line, ":", pos.column, ": ",
                                            status.message()));
}

absl::Status Evaluator::ExecBody(const Body& body, const FramePtr& frame, std::string* out) {
  for (const StmtPtr& s : body) {
    RETURN_IF_ERROR(Exec(*s, frame, out));
    if (flow_ != Flow::kNone) return absl::OkStatus();
  }
  return absl::OkStatus();
}

absl::Status Evaluator::Exec(const Stmt& s, const FramePtr& frame, std::string* out) {
  switch (s.kind) {
    case Stmt::Kind::kOutput:
      out->append(s.text);
      return absl::OkStatus();
    case Stmt::Kind::kPrint: {
      if (s.expr) {
        ASSIGN_OR_RETURN(Value v, Eval(*s.expr, frame));
        AppendPyStr(v, out);
      }
      for (const ExprPtr& e : s.values) {  // {% print a, b %}
        ASSIGN_OR_RETURN(Value v, Eval(*e, frame));
        AppendPyStr(v, out);
      }
      return absl::OkStatus();
    }
    case Stmt::Kind::kIf:
      return ExecIf(s, frame, out);
    case Stmt::Kind::kFor: {
      ASSIGN_OR_RETURN(Value iterable, Eval(*s.expr, frame));
      return ExecFor(s, frame, iterable, 1, out);
    }
    case Stmt::Kind::kSet: {
      ASSIGN_OR_RETURN(Value v, Eval(*s.expr, frame));
      return Locate(Assign(s.target, v, frame), s.pos);
    }
    case Stmt::Kind::kSetBlock: {
      std::string text;
      RETURN_IF_ERROR(ExecBody(s.body, Inner(frame), &text));
      Value v = Value::String(std::move(text));
      if (s.expr) {
        ASSIGN_OR_RETURN(v, ApplyFilterChain(*s.expr, frame, v));
      }
      return Locate(Assign(s.target, v, frame), s.pos);
    }
    case Stmt::Kind::kMacro:
      frame->Set(s.macro->name, MakeMacro(s.macro, frame));
      return absl::OkStatus();
    case Stmt::Kind::kCallBlock:
      return ExecCallBlock(s, frame, out);
    case Stmt::Kind::kFilterBlock: {
      std::string text;
      RETURN_IF_ERROR(ExecBody(s.body, Inner(frame), &text));
      ASSIGN_OR_RETURN(Value v, ApplyFilterChain(*s.expr, frame, Value::String(std::move(text))));
      AppendPyStr(v, out);
      return absl::OkStatus();
    }
    case Stmt::Kind::kWith: {
      FramePtr inner = Inner(frame);
      for (size_t i = 0; i < s.targets.size(); ++i) {
        ASSIGN_OR_RETURN(Value v, Eval(*s.values[i], frame));
        RETURN_IF_ERROR(Locate(Assign(s.targets[i], v, inner), s.targets[i].pos));
      }
      return ExecBody(s.body, inner, out);
    }
    case Stmt::Kind::kBreak:
      flow_ = Flow::kBreak;
      return absl::OkStatus();
    case Stmt::Kind::kContinue:
      flow_ = Flow::kContinue;
      return absl::OkStatus();
    case Stmt::Kind::kGeneration:
      return ExecBody(s.body, Inner(frame), out);
  }
  return absl::OkStatus();
}

absl::Status Evaluator::ExecIf(const Stmt& s, const FramePtr& frame, std::string* out) {
  for (size_t i = 0; i < s.conditions.size(); ++i) {
    ASSIGN_OR_RETURN(Value cond, Eval(*s.conditions[i], frame));
    if (Truthy(cond)) return ExecBody(s.bodies[i], frame, out);
  }
  return ExecBody(s.else_body, frame, out);
}

absl::Status Evaluator::ExecFor(const Stmt& s, const FramePtr& frame, const Value& iterable,
                                int depth, std::string* out) {
  auto items = Iterate(iterable);
  if (!items.ok()) return Locate(items.status(), s.expr->pos);
  std::vector<Value> selected;
  if (s.filter) {
    for (const Value& item : *items) {
      FramePtr f = Inner(frame);
      RETURN_IF_ERROR(Locate(Assign(s.target, item, f), s.target.pos));
      ASSIGN_OR_RETURN(Value keep, Eval(*s.filter, f));
      if (Truthy(keep)) selected.push_back(item);
    }
  } else {
    selected = std::move(*items);
  }
  if (selected.empty()) return ExecBody(s.else_body, Inner(frame), out);
  auto loop = std::make_shared<LoopObject>(std::move(selected), depth, this, &s, frame);
  const Value loop_value = Value::MakeObject(loop);
  for (size_t i = 0; i < loop->items().size(); ++i) {
    FramePtr f = Inner(frame);
    RETURN_IF_ERROR(Locate(Assign(s.target, loop->items()[i], f), s.target.pos));
    f->Set("loop", loop_value);
    loop->set_index0(i);
    RETURN_IF_ERROR(ExecBody(s.body, f, out));
    if (flow_ == Flow::kBreak) {
      flow_ = Flow::kNone;
      break;
    }
    flow_ = Flow::kNone;
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> Evaluator::RenderLoop(const Stmt& stmt, const FramePtr& frame,
                                                  const Value& iterable, int depth) {
  if (++call_depth_ > kMaxCallDepth) {
    --call_depth_;
    return InvalidArgumentError("maximum recursion depth exceeded");
  }
  std::string out;
  const absl::Status st = ExecFor(stmt, frame, iterable, depth, &out);
  --call_depth_;
  RETURN_IF_ERROR(st);
  return out;
}

absl::Status Evaluator::ExecCallBlock(const Stmt& s, const FramePtr& frame, std::string* out) {
  const Expr& call = *s.expr;
  ASSIGN_OR_RETURN(Value callee, Eval(*call.operands[0], frame));
  CallArgs args;
  RETURN_IF_ERROR(EvalArgs(call, frame, &args));
  args.keyword.emplace_back("caller", MakeMacro(s.macro, frame));
  auto result = CallValue(callee, args);
  if (!result.ok()) return Locate(result.status(), call.pos);
  AppendPyStr(*result, out);
  return absl::OkStatus();
}

absl::Status Evaluator::Assign(const Target& target, const Value& value, const FramePtr& frame) {
  switch (target.kind) {
    case Target::Kind::kName:
      frame->Set(target.name, value);
      return absl::OkStatus();
    case Target::Kind::kNamespaceAttr: {
      const Value* ns = frame->Find(target.name);
      if (ns == nullptr || !ns->is_object() || !ns->object()->IsNamespace()) {
        return InvalidArgumentError("cannot assign attribute on non-namespace object");
      }
      return ns->object()->SetAttr(target.attr, value);
    }
    case Target::Kind::kTuple: {
      auto items = Iterate(value);
      if (!items.ok()) {
        return InvalidArgumentError("cannot unpack non-iterable ", PyTypeName(value), " object");
      }
      const size_t n = target.items.size();
      if (items->size() > n) {
        return InvalidArgumentError("too many values to unpack (expected ", n, ")");
      }
      if (items->size() < n) {
        return InvalidArgumentError("not enough values to unpack (expected ", n, ", got ",
                                    items->size(), ")");
      }
      for (size_t i = 0; i < n; ++i) RETURN_IF_ERROR(Assign(target.items[i], (*items)[i], frame));
      return absl::OkStatus();
    }
  }
  return absl::OkStatus();
}

Value Evaluator::MakeMacro(const std::shared_ptr<MacroDef>& def, const FramePtr& frame) {
  closure_frames_.push_back(frame);
  return Value::MakeFunction(def->name, [this, def, frame](CallArgs& args) {
    return CallMacro(*def, frame, args);
  });
}

absl::StatusOr<Value> Evaluator::CallMacro(const MacroDef& def, const FramePtr& closure,
                                           CallArgs& args) {
  const size_t np = def.params.size();
  FramePtr f = Inner(closure);
  std::vector<bool> bound(np, false);
  std::vector<Value> varargs;
  for (size_t i = 0; i < args.positional.size(); ++i) {
    if (i < np) {
      f->Set(def.params[i], args.positional[i]);
      bound[i] = true;
    } else if (def.uses_varargs) {
      varargs.push_back(args.positional[i]);
    } else {
      return InvalidArgumentError("macro '", def.name, "' takes not more than ", np,
                                  " argument(s)");
    }
  }
  Dict kwargs;
  Value caller = Value::Undefined("No caller defined");
  for (auto& [key, value] : args.keyword) {
    if (key == "caller" && def.uses_caller) {
      caller = value;
      continue;
    }
    size_t i = 0;
    while (i < np && def.params[i] != key) ++i;
    if (i < np) {
      if (bound[i]) {
        return InvalidArgumentError("macro '", def.name, "' got multiple values for argument '",
                                    key, "'");
      }
      f->Set(key, value);
      bound[i] = true;
    } else if (def.uses_kwargs) {
      kwargs.Set(Value::String(key), value);
    } else {
      return InvalidArgumentError("macro '", def.name, "' takes no keyword argument '", key, "'");
    }
  }
  const size_t first_default = np - def.defaults.size();
  for (size_t i = 0; i < np; ++i) {
    if (bound[i]) continue;
    if (i >= first_default) {
      ASSIGN_OR_RETURN(Value v, Eval(*def.defaults[i - first_default], f));
      f->Set(def.params[i], std::move(v));
    } else {
      f->Set(def.params[i], Value::Undefined(StrCat("parameter '", def.params[i],
                                                    "' was not provided")));
    }
  }
  if (def.uses_varargs) f->Set("varargs", Value::Tuple(std::move(varargs)));
  if (def.uses_kwargs) f->Set("kwargs", Value::MakeDict(std::move(kwargs)));
  if (def.uses_caller) f->Set("caller", caller);
  if (++call_depth_ > kMaxCallDepth) {
    --call_depth_;
    return InvalidArgumentError("maximum recursion depth exceeded");
  }
  std::string out;
  const absl::Status st = ExecBody(def.body, f, &out);
  --call_depth_;
  flow_ = Flow::kNone;
  RETURN_IF_ERROR(st);
  return Value::String(std::move(out));
}

}  // namespace krasis::chat_template
