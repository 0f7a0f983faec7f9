// namespace(), loop and cycler() objects (see objects.h).
#include "common/chat_template/objects.h"

#include "common/status.h"

namespace krasis::chat_template {

std::optional<Value> NamespaceObject::GetAttr(std::string_view name) {
  const Value* v = attrs_.Find(name);
  if (v == nullptr) return std::nullopt;
  return *v;
}

absl::Status NamespaceObject::SetAttr(std::string_view name, Value value) {
  attrs_.Set(Value::String(std::string(name)), std::move(value));
  return absl::OkStatus();
}

std::string NamespaceObject::Repr() const {
  return StrCat("<Namespace ", PyStr(Value::MakeDict(attrs_)), ">");
}

std::optional<Value> LoopObject::GetAttr(std::string_view name) {
  const auto n = static_cast<int64_t>(items_.size());
  const auto i = static_cast<int64_t>(index0_);
  if (name == "index0") return Value::Int(i);
  if (name == "index") return Value::Int(i + 1);
  if (name == "revindex0") return Value::Int(n - i - 1);
  if (name == "revindex") return Value::Int(n - i);
  if (name == "first") return Value::Bool(i == 0);
  if (name == "last") return Value::Bool(i + 1 == n);
  if (name == "length") return Value::Int(n);
  if (name == "depth") return Value::Int(depth_);
  if (name == "depth0") return Value::Int(depth_ - 1);
  if (name == "previtem") {
    if (i == 0) return Value::Undefined("there is no previous item");
    return items_[index0_ - 1];
  }
  if (name == "nextitem") {
    if (i + 1 >= n) return Value::Undefined("there is no next item");
    return items_[index0_ + 1];
  }
  if (name == "cycle") {
    const size_t idx = index0_;
    return Value::MakeFunction("loop.cycle", [idx](CallArgs& args) -> absl::StatusOr<Value> {
      if (args.positional.empty()) return InvalidArgumentError("no items for cycling given");
      return args.positional[idx % args.positional.size()];
    });
  }
  if (name == "changed") {
    auto self = std::static_pointer_cast<LoopObject>(shared_from_this());
    return Value::MakeFunction("loop.changed", [self](CallArgs& args) -> absl::StatusOr<Value> {
      Value v = Value::Tuple(args.positional);
      if (self->last_changed_ && PyEquals(*self->last_changed_, v)) return Value::Bool(false);
      self->last_changed_ = std::move(v);
      return Value::Bool(true);
    });
  }
  return std::nullopt;
}

std::string LoopObject::Repr() const {
  return StrCat("<LoopContext ", index0_ + 1, "/", items_.size(), ">");
}

absl::StatusOr<Value> LoopObject::Call(CallArgs& args) {
  if (!stmt_->recursive) {
    return InvalidArgumentError("The loop must be marked as 'recursive' to call it.");
  }
  if (args.positional.size() != 1 || !args.keyword.empty()) {
    return InvalidArgumentError("loop() takes exactly one argument");
  }
  ASSIGN_OR_RETURN(std::string out, ev_->RenderLoop(*stmt_, frame_, args.positional[0], depth_ + 1));
  return Value::String(std::move(out));
}

std::optional<Value> CyclerObject::GetAttr(std::string_view name) {
  if (name == "current") return items_.empty() ? Value::None() : items_[pos_];
  if (name == "next") {
    auto self = std::static_pointer_cast<CyclerObject>(shared_from_this());
    return Value::MakeFunction("cycler.next", [self](CallArgs&) -> absl::StatusOr<Value> {
      if (self->items_.empty()) return Value::None();
      Value v = self->items_[self->pos_];
      self->pos_ = (self->pos_ + 1) % self->items_.size();
      return v;
    });
  }
  if (name == "reset") {
    auto self = std::static_pointer_cast<CyclerObject>(shared_from_this());
    return Value::MakeFunction("cycler.reset", [self](CallArgs&) -> absl::StatusOr<Value> {
      self->pos_ = 0;
      return Value::None();
    });
  }
  return std::nullopt;
}

}  // namespace krasis::chat_template
