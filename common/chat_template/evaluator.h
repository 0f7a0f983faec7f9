// Evaluator of the chat-template interpreter: walks the syntax tree with Jinja2's
// semantics and writes the output.
//
// Scoping follows jinja2: the template body and `if` blocks share one scope; each
// for-loop iteration, macro call, call/filter/set block and `with` gets a fresh
// scope whose parent is the enclosing one, so `set` inside a loop does not leak out
// (templates use namespace() for that). Name lookup walks the scopes, then the
// render context, then the builtin globals. Attribute and item access follow
// ImmutableSandboxedEnvironment (Python attributes first for getattr, items first
// for getitem, mutating methods refused). Runtime errors carry the position of the
// innermost failing expression: "<name>:<line>:<column>: <message>"; the message
// of raise_exception(msg) is returned as is.
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "absl/status/statusor.h"
#include "common/chat_template/ast.h"
#include "common/chat_template/value.h"

namespace krasis::chat_template {

// A variable scope.
struct Frame {
  std::shared_ptr<Frame> parent;
  std::vector<std::pair<std::string, Value>> vars;

  const Value* Find(std::string_view name) const;
  void Set(std::string_view name, Value value);
};
using FramePtr = std::shared_ptr<Frame>;

class Evaluator {
 public:
  // `context` must be a dict: the template's variables.
  Evaluator(const Program& program, const Value& context);
  ~Evaluator();
  Evaluator(const Evaluator&) = delete;
  Evaluator& operator=(const Evaluator&) = delete;

  absl::StatusOr<std::string> Render();

  // Services for filters, tests, methods and globals.
  absl::StatusOr<Value> GetAttr(const Value& obj, std::string_view name);
  absl::StatusOr<Value> GetItem(const Value& obj, const Value& key);
  absl::StatusOr<Value> CallValue(const Value& callee, CallArgs& args);
  absl::StatusOr<Value> CallFilterByName(std::string_view name, const Value& subject,
                                         CallArgs& args);
  absl::StatusOr<bool> CallTestByName(std::string_view name, const Value& subject,
                                      CallArgs& args);
  // Marks the error being raised as final: no position is prepended to it.
  void MarkErrorLocated() { error_located_ = true; }

  // Used by the loop object for recursive loops.
  absl::StatusOr<std::string> RenderLoop(const Stmt& stmt, const FramePtr& frame,
                                         const Value& iterable, int depth);

 private:
  enum class Flow { kNone, kBreak, kContinue };

  absl::Status Locate(absl::Status status, Pos pos);
  absl::Status ExecBody(const Body& body, const FramePtr& frame, std::string* out);
  absl::Status Exec(const Stmt& s, const FramePtr& frame, std::string* out);
  absl::Status ExecIf(const Stmt& s, const FramePtr& frame, std::string* out);
  absl::Status ExecFor(const Stmt& s, const FramePtr& frame, const Value& iterable, int depth,
                       std::string* out);
  absl::Status ExecCallBlock(const Stmt& s, const FramePtr& frame, std::string* out);
  absl::Status Assign(const Target& target, const Value& value, const FramePtr& frame);
  Value MakeMacro(const std::shared_ptr<MacroDef>& def, const FramePtr& frame);
  absl::StatusOr<Value> CallMacro(const MacroDef& def, const FramePtr& closure, CallArgs& args);

  absl::StatusOr<Value> Eval(const Expr& e, const FramePtr& frame);
  absl::StatusOr<Value> EvalInner(const Expr& e, const FramePtr& frame);
  absl::StatusOr<Value> Lookup(const std::string& name, const FramePtr& frame);
  absl::Status EvalArgs(const Expr& e, const FramePtr& frame, CallArgs* args);
  // Applies a filter chain whose innermost filter has no operand to `subject`.
  absl::StatusOr<Value> ApplyFilterChain(const Expr& e, const FramePtr& frame,
                                         const Value& subject);
  absl::StatusOr<Value> EvalSlice(const Expr& e, const FramePtr& frame);

  const Program& program_;
  FramePtr root_;
  std::unordered_map<std::string, Value> globals_;
  std::vector<FramePtr> closure_frames_;  // cleared at the end to break cycles
  Flow flow_ = Flow::kNone;
  bool error_located_ = false;
  int call_depth_ = 0;
};

// Python iteration: items of a list/tuple, keys of a dict, characters of a str,
// nothing for Undefined; a TypeError message otherwise.
absl::StatusOr<std::vector<Value>> Iterate(const Value& v);
// Python len() (Undefined has length 0).
absl::StatusOr<int64_t> Length(const Value& v);
// Python `item in container`.
absl::StatusOr<bool> Contains(const Value& container, const Value& item);
// Python binary operators + - * / // % ** and Jinja's ~.
absl::StatusOr<Value> BinaryOp(std::string_view op, const Value& a, const Value& b);
// Argument binding for builtins: fills `out` (one slot per name, defaults where
// absent) from positional and keyword arguments, Python style.
struct Param {
  const char* name;
  Value default_value;
  bool required = false;
};
absl::Status BindArgs(std::string_view fn, CallArgs& args, const std::vector<Param>& params,
                      std::vector<Value>* out);

}  // namespace krasis::chat_template
