// Value construction, Python semantics (truth, ==, <, str, repr) and JSON input
// (see value.h).
#include "common/chat_template/value.h"

#include <cmath>

#include "common/chat_template/pystr.h"
#include "common/status.h"

namespace krasis::chat_template {
namespace {

const std::string& EmptyString() {
  static const std::string* const kEmpty = new std::string();
  return *kEmpty;
}

const std::vector<Value>& EmptyItems() {
  static const std::vector<Value>* const kEmpty = new std::vector<Value>();
  return *kEmpty;
}

template <typename Json>
Value FromJsonImpl(const Json& j) {
  switch (j.type()) {
    case nlohmann::json::value_t::null:
      return Value::None();
    case nlohmann::json::value_t::boolean:
      return Value::Bool(j.template get<bool>());
    case nlohmann::json::value_t::number_integer:
      return Value::Int(j.template get<int64_t>());
    case nlohmann::json::value_t::number_unsigned: {
      const auto u = j.template get<uint64_t>();
      if (u <= static_cast<uint64_t>(INT64_MAX)) return Value::Int(static_cast<int64_t>(u));
      return Value::Float(static_cast<double>(u));
    }
    case nlohmann::json::value_t::number_float:
      return Value::Float(j.template get<double>());
    case nlohmann::json::value_t::string:
      return Value::String(j.template get<std::string>());
    case nlohmann::json::value_t::array: {
      std::vector<Value> items;
      items.reserve(j.size());
      for (const auto& e : j) items.push_back(FromJsonImpl(e));
      return Value::List(std::move(items));
    }
    case nlohmann::json::value_t::object: {
      Dict d;
      for (auto it = j.begin(); it != j.end(); ++it) {
        d.Set(Value::String(it.key()), FromJsonImpl(it.value()));
      }
      return Value::MakeDict(std::move(d));
    }
    default:
      return Value::None();  // binary / discarded: not produced by JSON text
  }
}

bool SequenceEquals(const std::vector<Value>& a, const std::vector<Value>& b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    if (!PyEquals(a[i], b[i])) return false;
  }
  return true;
}

void AppendRepr(const Value& v, std::string* out);

void AppendItems(const std::vector<Value>& items, std::string* out) {
  for (size_t i = 0; i < items.size(); ++i) {
    if (i > 0) out->append(", ");
    AppendRepr(items[i], out);
  }
}

void AppendRepr(const Value& v, std::string* out) {
  switch (v.kind()) {
    case Value::Kind::kString:
      if (v.is_markup()) out->append("Markup(");
      out->append(pystr::Repr(v.string_value()));
      if (v.is_markup()) out->push_back(')');
      return;
    case Value::Kind::kUndefined:
      out->append("Undefined");
      return;
    default:
      AppendPyStr(v, out);
  }
}

}  // namespace

Value Value::Undefined(std::string hint) {
  Value v;
  v.ptr_ = std::make_shared<const std::string>(std::move(hint));
  return v;
}

Value Value::None() {
  Value v;
  v.kind_ = Kind::kNone;
  return v;
}

Value Value::Bool(bool b) {
  Value v;
  v.kind_ = Kind::kBool;
  v.scalar_.b = b;
  return v;
}

Value Value::Int(int64_t i) {
  Value v;
  v.kind_ = Kind::kInt;
  v.scalar_.i = i;
  return v;
}

Value Value::Float(double f) {
  Value v;
  v.kind_ = Kind::kFloat;
  v.scalar_.f = f;
  return v;
}

Value Value::String(std::string s) {
  Value v;
  v.kind_ = Kind::kString;
  v.ptr_ = std::make_shared<const std::string>(std::move(s));
  return v;
}

Value Value::Markup(std::string s) {
  Value v = String(std::move(s));
  v.flavor_ = 1;
  return v;
}

Value Value::View(ViewKind kind, std::vector<Value> items) {
  Value v = List(std::move(items));
  v.kind_ = Kind::kView;
  v.flavor_ = static_cast<uint8_t>(kind);
  return v;
}

Value Value::List(std::vector<Value> items) {
  Value v;
  v.kind_ = Kind::kList;
  v.ptr_ = std::make_shared<const std::vector<Value>>(std::move(items));
  return v;
}

Value Value::Tuple(std::vector<Value> items) {
  Value v = List(std::move(items));
  v.kind_ = Kind::kTuple;
  return v;
}

Value Value::MakeDict(Dict dict) {
  Value v;
  v.kind_ = Kind::kDict;
  v.ptr_ = std::make_shared<const Dict>(std::move(dict));
  return v;
}

Value Value::MakeObject(std::shared_ptr<Object> object) {
  Value v;
  v.kind_ = Kind::kObject;
  v.ptr_ = std::move(object);
  return v;
}

Value Value::MakeFunction(std::string name, NativeFunction fn) {
  Value v;
  v.kind_ = Kind::kFunction;
  v.ptr_ = std::make_shared<const Function>(Function{std::move(name), std::move(fn)});
  return v;
}

const std::string& Value::string_value() const {
  return kind_ == Kind::kString ? *static_cast<const std::string*>(ptr_.get()) : EmptyString();
}

const std::vector<Value>& Value::items() const {
  return is_sequence() || is_view() ? *static_cast<const std::vector<Value>*>(ptr_.get())
                                    : EmptyItems();
}

const Dict& Value::dict() const {
  static const Dict* const kEmpty = new Dict();
  return kind_ == Kind::kDict ? *static_cast<const Dict*>(ptr_.get()) : *kEmpty;
}

Object* Value::object() const {
  return kind_ == Kind::kObject
             ? const_cast<Object*>(static_cast<const Object*>(ptr_.get()))
             : nullptr;
}

std::shared_ptr<Object> Value::object_ptr() const {
  if (kind_ != Kind::kObject) return nullptr;
  return std::const_pointer_cast<Object>(std::static_pointer_cast<const Object>(ptr_));
}

const Function& Value::function() const { return *static_cast<const Function*>(ptr_.get()); }

std::string Value::undefined_message() const {
  if (kind_ == Kind::kUndefined && ptr_ != nullptr) {
    return *static_cast<const std::string*>(ptr_.get());
  }
  return "value is undefined";
}

const Value* Dict::Find(const Value& key) const {
  if (key.is_string()) return Find(std::string_view(key.string_value()));
  for (const auto& [k, v] : entries_) {
    if (PyEquals(k, key)) return &v;
  }
  return nullptr;
}

const Value* Dict::Find(std::string_view key) const {
  for (const auto& [k, v] : entries_) {
    if (k.is_string() && k.string_value() == key) return &v;
  }
  return nullptr;
}

void Dict::Set(Value key, Value value) {
  for (auto& [k, v] : entries_) {
    if (PyEquals(k, key)) {
      v = std::move(value);
      return;
    }
  }
  entries_.emplace_back(std::move(key), std::move(value));
}

absl::Status Object::SetAttr(std::string_view name, Value) {
  return InvalidArgumentError("cannot set attribute '", name, "' of ", TypeName(), " object");
}

absl::StatusOr<Value> Object::Call(CallArgs&) {
  return InvalidArgumentError("'", TypeName(), "' object is not callable");
}

bool Truthy(const Value& v) {
  switch (v.kind()) {
    case Value::Kind::kUndefined:
    case Value::Kind::kNone:
      return false;
    case Value::Kind::kBool:
      return v.bool_value();
    case Value::Kind::kInt:
      return v.int_value() != 0;
    case Value::Kind::kFloat:
      return v.number_value() != 0.0;
    case Value::Kind::kString:
      return !v.string_value().empty();
    case Value::Kind::kList:
    case Value::Kind::kTuple:
    case Value::Kind::kView:
      return !v.items().empty();
    case Value::Kind::kDict:
      return !v.dict().empty();
    default:
      return true;
  }
}

bool PyEquals(const Value& a, const Value& b) {
  if (a.is_number() && b.is_number()) {
    if (a.is_float() || b.is_float()) return a.number_value() == b.number_value();
    return a.int_value() == b.int_value();
  }
  if (a.kind() != b.kind()) return false;
  switch (a.kind()) {
    case Value::Kind::kUndefined:
    case Value::Kind::kNone:
      return true;
    case Value::Kind::kString:
      return a.string_value() == b.string_value();
    case Value::Kind::kList:
    case Value::Kind::kTuple:
      return SequenceEquals(a.items(), b.items());
    case Value::Kind::kDict: {
      const Dict& da = a.dict();
      const Dict& db = b.dict();
      if (da.size() != db.size()) return false;
      for (const auto& [k, v] : da.entries()) {
        const Value* other = db.Find(k);
        if (other == nullptr || !PyEquals(v, *other)) return false;
      }
      return true;
    }
    case Value::Kind::kObject:
      return a.object() == b.object();
    case Value::Kind::kFunction:
      return &a.function() == &b.function();
    case Value::Kind::kView: {  // keys and items views compare as sets
      if (a.view_kind() != b.view_kind() || a.view_kind() == Value::ViewKind::kValues) {
        return &a.items() == &b.items();
      }
      if (a.items().size() != b.items().size()) return false;
      for (const Value& x : a.items()) {
        bool found = false;
        for (const Value& y : b.items()) found = found || PyEquals(x, y);
        if (!found) return false;
      }
      return true;
    }
    default:
      return false;
  }
}

absl::StatusOr<bool> PyCompare(const Value& a, const Value& b, std::string_view op) {
  if (a.is_undefined()) return InvalidArgumentError(a.undefined_message());
  if (b.is_undefined()) return InvalidArgumentError(b.undefined_message());
  int cmp = 0;  // <0, 0, >0
  if (a.is_number() && b.is_number()) {
    if (a.is_float() || b.is_float()) {
      const double x = a.number_value(), y = b.number_value();
      if (std::isnan(x) || std::isnan(y)) return false;
      cmp = x < y ? -1 : (x > y ? 1 : 0);
    } else {
      const int64_t x = a.int_value(), y = b.int_value();
      cmp = x < y ? -1 : (x > y ? 1 : 0);
    }
  } else if (a.is_string() && b.is_string()) {
    cmp = a.string_value().compare(b.string_value());
  } else if ((a.is_list() && b.is_list()) || (a.is_tuple() && b.is_tuple())) {
    const auto& x = a.items();
    const auto& y = b.items();
    size_t i = 0;
    while (i < x.size() && i < y.size() && PyEquals(x[i], y[i])) ++i;
    if (i < x.size() && i < y.size()) return PyCompare(x[i], y[i], op);
    cmp = x.size() < y.size() ? -1 : (x.size() > y.size() ? 1 : 0);
  } else {
    return InvalidArgumentError("'", op, "' not supported between instances of '",
                                PyTypeName(a), "' and '", PyTypeName(b), "'");
  }
  if (op == "<") return cmp < 0;
  if (op == "<=") return cmp <= 0;
  if (op == ">") return cmp > 0;
  return cmp >= 0;
}

std::string PyTypeName(const Value& v) {
  switch (v.kind()) {
    case Value::Kind::kUndefined: return "Undefined";
    case Value::Kind::kNone: return "NoneType";
    case Value::Kind::kBool: return "bool";
    case Value::Kind::kInt: return "int";
    case Value::Kind::kFloat: return "float";
    case Value::Kind::kString: return "str";
    case Value::Kind::kList: return "list";
    case Value::Kind::kTuple: return "tuple";
    case Value::Kind::kDict: return "dict";
    case Value::Kind::kObject: return v.object()->TypeName();
    case Value::Kind::kFunction: return "function";
    case Value::Kind::kView:
      return v.view_kind() == Value::ViewKind::kKeys
                 ? "dict_keys"
                 : (v.view_kind() == Value::ViewKind::kValues ? "dict_values" : "dict_items");
  }
  return "object";
}

std::string ObjectTypeRepr(const Value& v) {
  if (v.is_none()) return "None";
  if (v.is_object()) return StrCat(v.object()->ModuleName(), ".", v.object()->TypeName(), " object");
  if (v.is_undefined()) return "jinja2.runtime.Undefined object";
  return StrCat(PyTypeName(v), " object");
}

void AppendPyStr(const Value& v, std::string* out) {
  switch (v.kind()) {
    case Value::Kind::kUndefined:
      return;
    case Value::Kind::kNone:
      out->append("None");
      return;
    case Value::Kind::kBool:
      out->append(v.bool_value() ? "True" : "False");
      return;
    case Value::Kind::kInt:
      out->append(std::to_string(v.int_value()));
      return;
    case Value::Kind::kFloat:
      out->append(pystr::FloatRepr(v.number_value()));
      return;
    case Value::Kind::kString:
      out->append(v.string_value());
      return;
    case Value::Kind::kList:
      out->push_back('[');
      AppendItems(v.items(), out);
      out->push_back(']');
      return;
    case Value::Kind::kTuple:
      out->push_back('(');
      AppendItems(v.items(), out);
      if (v.items().size() == 1) out->push_back(',');
      out->push_back(')');
      return;
    case Value::Kind::kDict: {
      out->push_back('{');
      bool first = true;
      for (const auto& [k, val] : v.dict().entries()) {
        if (!first) out->append(", ");
        first = false;
        AppendRepr(k, out);
        out->append(": ");
        AppendRepr(val, out);
      }
      out->push_back('}');
      return;
    }
    case Value::Kind::kObject:
      out->append(v.object()->Repr());
      return;
    case Value::Kind::kFunction:
      out->append(StrCat("<function ", v.function().name, ">"));
      return;
    case Value::Kind::kView:
      out->append(PyTypeName(v));
      out->append("([");
      AppendItems(v.items(), out);
      out->append("])");
      return;
  }
}

std::string PyStr(const Value& v) {
  if (v.is_string()) return v.string_value();
  std::string out;
  AppendPyStr(v, &out);
  return out;
}

std::string PyRepr(const Value& v) {
  std::string out;
  AppendRepr(v, &out);
  return out;
}

bool IsHashable(const Value& v) {
  switch (v.kind()) {
    case Value::Kind::kList:
    case Value::Kind::kDict:
    case Value::Kind::kView:
      return false;
    case Value::Kind::kTuple:
      for (const Value& item : v.items()) {
        if (!IsHashable(item)) return false;
      }
      return true;
    default:
      return true;
  }
}

Value FromJson(const nlohmann::ordered_json& j) { return FromJsonImpl(j); }
Value FromJson(const nlohmann::json& j) { return FromJsonImpl(j); }

}  // namespace krasis::chat_template
