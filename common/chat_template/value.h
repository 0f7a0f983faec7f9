// Values of the chat-template interpreter.
//
// A Jinja2 template running under transformers sees Python objects: None, bool,
// int, float, str, list, tuple and dict (from the request JSON and from template
// literals), Jinja's Undefined, and a few Jinja objects (namespace(), the loop
// variable, macros, builtin functions). Value models exactly these, with Python's
// rules for truth, equality (1 == 1.0 == True), ordering, str() and repr(), so that
// printed values and dict/list reprs come out byte-identical to Python.
//
// Lists and dicts are immutable once built (transformers renders in Jinja's
// ImmutableSandboxedEnvironment, which refuses list.append and friends), so they are
// shared by pointer and copied freely. Only namespace objects are mutable.
// Dicts keep insertion order, as Python's do.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"

namespace krasis::chat_template {

class Value;
class Dict;
class Object;

// Arguments of a call: positional, then keyword in source order.
struct CallArgs {
  std::vector<Value> positional;
  std::vector<std::pair<std::string, Value>> keyword;
};

using NativeFunction = std::function<absl::StatusOr<Value>(CallArgs& args)>;

struct Function {
  std::string name;  // shown in errors and repr
  NativeFunction call;
};

class Value {
 public:
  enum class Kind : uint8_t {
    kUndefined, kNone, kBool, kInt, kFloat, kString, kList, kTuple, kDict, kObject,
    kFunction,
    kView,  // dict.keys() / values() / items(): iterable, sized, not subscriptable
  };
  enum class ViewKind : uint8_t { kKeys = 1, kValues = 2, kItems = 3 };

  Value() = default;  // Undefined without a hint
  static Value Undefined(std::string hint);
  static Value None();
  static Value Bool(bool v);
  static Value Int(int64_t v);
  static Value Float(double v);
  static Value String(std::string v);
  // A markupsafe.Markup string (what |safe and |escape return): concatenating a
  // plain str to it HTML-escapes the str, and its repr is Markup('...').
  static Value Markup(std::string v);
  static Value List(std::vector<Value> items);
  static Value View(ViewKind kind, std::vector<Value> items);
  static Value Tuple(std::vector<Value> items);
  static Value MakeDict(Dict dict);
  static Value MakeObject(std::shared_ptr<Object> object);
  static Value MakeFunction(std::string name, NativeFunction fn);

  Kind kind() const { return kind_; }
  bool is_undefined() const { return kind_ == Kind::kUndefined; }
  bool is_none() const { return kind_ == Kind::kNone; }
  bool is_bool() const { return kind_ == Kind::kBool; }
  bool is_int() const { return kind_ == Kind::kInt; }
  bool is_float() const { return kind_ == Kind::kFloat; }
  bool is_string() const { return kind_ == Kind::kString; }
  bool is_markup() const { return kind_ == Kind::kString && flavor_ != 0; }
  bool is_view() const { return kind_ == Kind::kView; }
  ViewKind view_kind() const { return static_cast<ViewKind>(flavor_); }
  bool is_list() const { return kind_ == Kind::kList; }
  bool is_tuple() const { return kind_ == Kind::kTuple; }
  bool is_sequence() const { return kind_ == Kind::kList || kind_ == Kind::kTuple; }
  bool is_dict() const { return kind_ == Kind::kDict; }
  bool is_object() const { return kind_ == Kind::kObject; }
  bool is_function() const { return kind_ == Kind::kFunction; }
  // Python's numbers.Number: bool, int and float.
  bool is_number() const {
    return kind_ == Kind::kBool || kind_ == Kind::kInt || kind_ == Kind::kFloat;
  }
  // bool or int (Python's bool is an int).
  bool is_integral() const { return kind_ == Kind::kBool || kind_ == Kind::kInt; }

  bool bool_value() const { return scalar_.b; }
  // For bool and int.
  int64_t int_value() const { return kind_ == Kind::kBool ? (scalar_.b ? 1 : 0) : scalar_.i; }
  // For bool, int and float.
  double number_value() const {
    return kind_ == Kind::kFloat ? scalar_.f : static_cast<double>(int_value());
  }
  const std::string& string_value() const;
  const std::vector<Value>& items() const;  // list, tuple or view
  const Dict& dict() const;
  Object* object() const;
  std::shared_ptr<Object> object_ptr() const;
  const Function& function() const;
  // The message an error about this undefined value reports ("'x' is undefined").
  std::string undefined_message() const;

 private:
  Kind kind_ = Kind::kUndefined;
  uint8_t flavor_ = 0;  // strings: 1 for Markup; views: ViewKind
  union {
    bool b;
    int64_t i;
    double f;
  } scalar_ = {};
  std::shared_ptr<const void> ptr_;  // string, items, dict, object, function or hint
};

class Dict {
 public:
  using Entry = std::pair<Value, Value>;

  // Python dict lookup: keys compare by Python equality.
  const Value* Find(const Value& key) const;
  const Value* Find(std::string_view key) const;
  // Inserts or replaces (keeping the original position, as Python does).
  void Set(Value key, Value value);
  const std::vector<Entry>& entries() const { return entries_; }
  size_t size() const { return entries_.size(); }
  bool empty() const { return entries_.empty(); }

 private:
  std::vector<Entry> entries_;
};

// Jinja objects with attributes: namespace(), the loop variable, cycler().
class Object : public std::enable_shared_from_this<Object> {
 public:
  virtual ~Object() = default;
  // Python type name ("Namespace") and jinja2's object_type_repr module path.
  virtual std::string TypeName() const = 0;
  virtual std::string ModuleName() const { return "jinja2.utils"; }
  // nullopt when there is no such attribute.
  virtual std::optional<Value> GetAttr(std::string_view name) = 0;
  virtual absl::Status SetAttr(std::string_view name, Value value);
  virtual std::string Repr() const = 0;
  virtual bool IsNamespace() const { return false; }
  virtual bool IsCallable() const { return false; }
  virtual absl::StatusOr<Value> Call(CallArgs& args);
};

// Python truth value (Undefined is false, objects and functions are true).
bool Truthy(const Value& v);
// Python ==. Undefined equals only Undefined.
bool PyEquals(const Value& a, const Value& b);
// Python's <, <=, >, >= ("<" etc. in `op`); a TypeError message for unorderable types.
absl::StatusOr<bool> PyCompare(const Value& a, const Value& b, std::string_view op);
// Python type name: "int", "str", "NoneType", "dict" ...
std::string PyTypeName(const Value& v);
// jinja2.utils.object_type_repr: "None", "dict object", "jinja2.utils.Namespace object".
std::string ObjectTypeRepr(const Value& v);
// Python str() (Undefined prints as "") and repr().
std::string PyStr(const Value& v);
std::string PyRepr(const Value& v);
void AppendPyStr(const Value& v, std::string* out);
// Python hashable (may be a dict key).
bool IsHashable(const Value& v);

// JSON (the request body, template kwargs) to Value. Object key order is kept for
// ordered_json; nlohmann::json has already sorted its keys.
Value FromJson(const nlohmann::ordered_json& j);
Value FromJson(const nlohmann::json& j);

}  // namespace krasis::chat_template
