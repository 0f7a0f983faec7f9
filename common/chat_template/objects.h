// Jinja's runtime objects for the chat-template interpreter: namespace() (the one
// mutable object templates have, used to carry state out of loops), the `loop`
// variable of for-loops, and cycler().
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "common/chat_template/ast.h"
#include "common/chat_template/evaluator.h"
#include "common/chat_template/value.h"

namespace krasis::chat_template {

class NamespaceObject : public Object {
 public:
  explicit NamespaceObject(Dict attrs) : attrs_(std::move(attrs)) {}
  std::string TypeName() const override { return "Namespace"; }
  std::optional<Value> GetAttr(std::string_view name) override;
  absl::Status SetAttr(std::string_view name, Value value) override;
  std::string Repr() const override;
  bool IsNamespace() const override { return true; }

 private:
  Dict attrs_;
};

// jinja2.runtime.LoopContext. One object per for-loop run; index0 advances as the
// loop iterates, so a captured `loop` sees the live state, as in jinja2.
class LoopObject : public Object {
 public:
  LoopObject(std::vector<Value> items, int depth, Evaluator* ev, const Stmt* stmt, FramePtr frame)
      : items_(std::move(items)), depth_(depth), ev_(ev), stmt_(stmt), frame_(std::move(frame)) {}
  std::string TypeName() const override { return "LoopContext"; }
  std::string ModuleName() const override { return "jinja2.runtime"; }
  std::optional<Value> GetAttr(std::string_view name) override;
  std::string Repr() const override;
  bool IsCallable() const override { return true; }
  absl::StatusOr<Value> Call(CallArgs& args) override;  // recursive loops: loop(children)

  const std::vector<Value>& items() const { return items_; }
  void set_index0(size_t i) { index0_ = i; }

 private:
  std::vector<Value> items_;
  size_t index0_ = 0;
  int depth_;
  Evaluator* ev_;
  const Stmt* stmt_;
  FramePtr frame_;
  std::optional<Value> last_changed_;
};

class CyclerObject : public Object {
 public:
  explicit CyclerObject(std::vector<Value> items) : items_(std::move(items)) {}
  std::string TypeName() const override { return "Cycler"; }
  std::optional<Value> GetAttr(std::string_view name) override;
  std::string Repr() const override { return "<jinja2.utils.Cycler object>"; }

 private:
  std::vector<Value> items_;
  size_t pos_ = 0;
};

}  // namespace krasis::chat_template
