// Registries of the chat-template interpreter's builtin filters, tests and globals
// (implemented in filters.cc, tests.cc and globals.cc).
#pragma once

#include <optional>
#include <string_view>

#include "common/chat_template/ast.h"

namespace krasis::chat_template {

// nullptr when jinja2 (as transformers configures it) has no such filter / test.
FilterFn FindFilter(std::string_view name);
TestFn FindTest(std::string_view name);
// Builtin global functions (range, namespace, dict, cycler, joiner,
// raise_exception, strftime_now); nullopt when `name` is none of them.
std::optional<Value> FindGlobal(std::string_view name, Evaluator& ev);

// Attribute and item access as jinja2's ImmutableSandboxedEnvironment does it
// (methods.cc): str/list/dict methods are bound functions, mutating methods and
// "_" attributes are refused, missing ones give Undefined.
absl::StatusOr<Value> SandboxGetAttr(Evaluator& ev, const Value& obj, std::string_view name);
absl::StatusOr<Value> SandboxGetItem(Evaluator& ev, const Value& obj, const Value& key);
// Python getattr() alone (no item fallback), sandboxed; nullopt when the type has
// no such attribute. NoAttribute() is the Undefined jinja2 returns then.
std::optional<Value> PythonAttribute(Evaluator& ev, const Value& obj, std::string_view name);
Value NoAttribute(const Value& obj, std::string_view name);

}  // namespace krasis::chat_template
