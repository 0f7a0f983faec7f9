// Syntax tree of the chat-template interpreter (what parser.cc builds and
// evaluator.cc walks). One node struct per family, tagged by kind, mirroring
// jinja2's nodes: expressions (constants, names, attribute/item access, slices,
// calls, filters, tests, operators, literals) and statements (output, if, for, set,
// macro, call, filter, with, break/continue, generation). Every node keeps its
// source position for error messages.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "common/chat_template/value.h"

namespace krasis::chat_template {

class Evaluator;
struct Expr;
struct Stmt;
using ExprPtr = std::unique_ptr<Expr>;
using StmtPtr = std::unique_ptr<Stmt>;
using Body = std::vector<StmtPtr>;

struct Pos {
  int line = 0;
  int column = 0;
};

// A filter or test implementation: (evaluator, subject, arguments) -> result.
using FilterFn = absl::StatusOr<Value> (*)(Evaluator& ev, const Value& subject, CallArgs& args);
using TestFn = absl::StatusOr<bool> (*)(Evaluator& ev, const Value& subject, CallArgs& args);

struct Expr {
  enum class Kind {
    kConst,      // value
    kName,       // name
    kGetAttr,    // operands[0].name
    kGetItem,    // operands[0][operands[1]]
    kSlice,      // operands[0][a:b:c]; slice_parts (null when omitted)
    kCall,       // operands[0](args)
    kFilter,     // operands[0] | name(args); operands empty inside {% filter %}
    kTest,       // operands[0] is name(args)
    kUnary,      // op in {"-", "+", "not"}
    kBinary,     // op in {"+","-","*","/","//","%","**","~","and","or"}
    kCompare,    // operands[0] then compare_ops[i] operands[i+1] (chained, Python style)
    kCondExpr,   // operands: [then, cond, else?]
    kList,       // operands
    kTuple,      // operands
    kDict,       // operands: k0, v0, k1, v1 ...
  };
  Kind kind;
  Pos pos;
  Value value;                          // kConst
  std::string name;                     // kName, kGetAttr, kFilter, kTest; op for kUnary/kBinary
  std::vector<ExprPtr> operands;
  std::vector<std::string> compare_ops;  // kCompare: "==", "!=", "<", "<=", ">", ">=", "in", "notin"
  ExprPtr slice_parts[3];               // kSlice: start, stop, step
  // Call-like nodes (kCall, kFilter, kTest).
  std::vector<ExprPtr> args;
  std::vector<std::pair<std::string, ExprPtr>> kwargs;
  ExprPtr star_args, star_kwargs;
  FilterFn filter = nullptr;
  TestFn test = nullptr;
};

// Assignment target of set / for / with: a name, ns.attr, or a tuple of targets.
struct Target {
  enum class Kind { kName, kNamespaceAttr, kTuple };
  Kind kind = Kind::kName;
  Pos pos;
  std::string name;
  std::string attr;
  std::vector<Target> items;
};

struct MacroDef {
  std::string name;
  std::vector<std::string> params;
  std::vector<ExprPtr> defaults;  // aligned to the last defaults.size() params
  Body body;
  bool uses_caller = false, uses_varargs = false, uses_kwargs = false;
};

struct Stmt {
  enum class Kind {
    kOutput,       // text
    kPrint,        // {{ expr }}
    kIf,           // conditions[i] -> bodies[i]; else_body
    kFor,          // target in expr [if filter] [recursive]: body, else_body
    kSet,          // target = expr
    kSetBlock,     // {% set target | filter %}body{% endset %}
    kMacro,        // macro
    kCallBlock,    // {% call(params) expr %}body{% endcall %}
    kFilterBlock,  // {% filter expr %}body{% endfilter %}; expr is a kFilter chain
    kWith,         // targets = values; body
    kBreak,
    kContinue,
    kGeneration,   // transformers' {% generation %}body{% endgeneration %}
  };
  Kind kind;
  Pos pos;
  std::string text;
  ExprPtr expr;      // print, set, for iterable, call expr, set-block/filter-block filters
  ExprPtr filter;    // for: inline `if`
  Target target;
  std::vector<Target> targets;  // with
  std::vector<ExprPtr> values;  // with
  std::vector<ExprPtr> conditions;
  std::vector<Body> bodies;
  Body body;
  Body else_body;
  bool recursive = false;
  std::shared_ptr<MacroDef> macro;  // kMacro; kCallBlock (the caller)
};

// A parsed template.
struct Program {
  std::string name;
  Body body;
};

}  // namespace krasis::chat_template
