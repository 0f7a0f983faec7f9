// Jinja's builtin tests (`x is defined`, `x is string`, `x is divisibleby 3` ...)
// with jinja2 3.1's Python semantics, e.g. `true is number` holds and an undefined
// value is iterable and a sequence.
#include "common/chat_template/builtins.h"
#include "common/chat_template/evaluator.h"
#include "common/chat_template/pystr.h"
#include "common/status.h"

namespace krasis::chat_template {
namespace {

#define KRASIS_TEST(fn)                                                                    \
  absl::StatusOr<bool> fn([[maybe_unused]] Evaluator& ev, [[maybe_unused]] const Value& v, \
                          [[maybe_unused]] CallArgs& args)

absl::StatusOr<Value> OneArg(std::string_view test, CallArgs& args) {
  std::vector<Value> out;
  RETURN_IF_ERROR(BindArgs(test, args, {{"other", Value(), true}}, &out));
  return out[0];
}

absl::Status NoArgs(std::string_view test, CallArgs& args) {
  std::vector<Value> out;
  return BindArgs(test, args, {}, &out);
}

KRASIS_TEST(TestDefined) {
  RETURN_IF_ERROR(NoArgs("defined", args));
  return !v.is_undefined();
}
KRASIS_TEST(TestUndefined) {
  RETURN_IF_ERROR(NoArgs("undefined", args));
  return v.is_undefined();
}
KRASIS_TEST(TestNone) {
  RETURN_IF_ERROR(NoArgs("none", args));
  return v.is_none();
}
KRASIS_TEST(TestBoolean) {
  RETURN_IF_ERROR(NoArgs("boolean", args));
  return v.is_bool();
}
KRASIS_TEST(TestTrue) {
  RETURN_IF_ERROR(NoArgs("true", args));
  return v.is_bool() && v.bool_value();
}
KRASIS_TEST(TestFalse) {
  RETURN_IF_ERROR(NoArgs("false", args));
  return v.is_bool() && !v.bool_value();
}
KRASIS_TEST(TestInteger) {
  RETURN_IF_ERROR(NoArgs("integer", args));
  return v.is_int();
}
KRASIS_TEST(TestFloat) {
  RETURN_IF_ERROR(NoArgs("float", args));
  return v.is_float();
}
KRASIS_TEST(TestNumber) {
  RETURN_IF_ERROR(NoArgs("number", args));
  return v.is_number();
}
KRASIS_TEST(TestString) {
  RETURN_IF_ERROR(NoArgs("string", args));
  return v.is_string();
}
KRASIS_TEST(TestMapping) {
  RETURN_IF_ERROR(NoArgs("mapping", args));
  return v.is_dict();
}
KRASIS_TEST(TestSequence) {  // has len() and __getitem__
  RETURN_IF_ERROR(NoArgs("sequence", args));
  return v.is_undefined() || v.is_string() || v.is_sequence() || v.is_dict();
}
KRASIS_TEST(TestIterable) {
  RETURN_IF_ERROR(NoArgs("iterable", args));
  return v.is_undefined() || v.is_string() || v.is_sequence() || v.is_dict() || v.is_view() ||
         (v.is_object() && v.object()->TypeName() == "LoopContext");
}
KRASIS_TEST(TestCallable) {
  RETURN_IF_ERROR(NoArgs("callable", args));
  return v.is_function() || v.is_undefined() || (v.is_object() && v.object()->IsCallable());
}
KRASIS_TEST(TestEscaped) {
  RETURN_IF_ERROR(NoArgs("escaped", args));
  return v.is_markup();
}
KRASIS_TEST(TestLower) {
  RETURN_IF_ERROR(NoArgs("lower", args));
  return *pystr::Predicate("islower", PyStr(v));
}
KRASIS_TEST(TestUpper) {
  RETURN_IF_ERROR(NoArgs("upper", args));
  return *pystr::Predicate("isupper", PyStr(v));
}

absl::StatusOr<bool> ModuloIs(const Value& v, const Value& divisor, int64_t want) {
  ASSIGN_OR_RETURN(Value r, BinaryOp("%", v, divisor));
  return PyEquals(r, Value::Int(want));
}

KRASIS_TEST(TestOdd) {
  RETURN_IF_ERROR(NoArgs("odd", args));
  return ModuloIs(v, Value::Int(2), 1);
}
KRASIS_TEST(TestEven) {
  RETURN_IF_ERROR(NoArgs("even", args));
  return ModuloIs(v, Value::Int(2), 0);
}
KRASIS_TEST(TestDivisibleby) {
  std::vector<Value> a;
  RETURN_IF_ERROR(BindArgs("divisibleby", args, {{"num", Value(), true}}, &a));
  return ModuloIs(v, a[0], 0);
}
KRASIS_TEST(TestSameas) {
  ASSIGN_OR_RETURN(Value other, OneArg("sameas", args));
  if (v.kind() != other.kind()) return false;
  switch (v.kind()) {
    case Value::Kind::kNone: return true;
    case Value::Kind::kBool: return v.bool_value() == other.bool_value();
    case Value::Kind::kInt:
    case Value::Kind::kString: return PyEquals(v, other);
    case Value::Kind::kList:
    case Value::Kind::kTuple: return &v.items() == &other.items();
    case Value::Kind::kDict: return &v.dict() == &other.dict();
    case Value::Kind::kObject: return v.object() == other.object();
    default: return false;
  }
}
KRASIS_TEST(TestIn) {
  ASSIGN_OR_RETURN(Value seq, OneArg("in", args));
  return Contains(seq, v);
}
KRASIS_TEST(TestEq) {
  ASSIGN_OR_RETURN(Value other, OneArg("eq", args));
  return PyEquals(v, other);
}
KRASIS_TEST(TestNe) {
  ASSIGN_OR_RETURN(Value other, OneArg("ne", args));
  return !PyEquals(v, other);
}
KRASIS_TEST(TestLt) {
  ASSIGN_OR_RETURN(Value other, OneArg("lt", args));
  return PyCompare(v, other, "<");
}
KRASIS_TEST(TestLe) {
  ASSIGN_OR_RETURN(Value other, OneArg("le", args));
  return PyCompare(v, other, "<=");
}
KRASIS_TEST(TestGt) {
  ASSIGN_OR_RETURN(Value other, OneArg("gt", args));
  return PyCompare(v, other, ">");
}
KRASIS_TEST(TestGe) {
  ASSIGN_OR_RETURN(Value other, OneArg("ge", args));
  return PyCompare(v, other, ">=");
}
KRASIS_TEST(TestFilter) {
  RETURN_IF_ERROR(NoArgs("filter", args));
  return v.is_string() && FindFilter(v.string_value()) != nullptr;
}
KRASIS_TEST(TestTest) {
  RETURN_IF_ERROR(NoArgs("test", args));
  return v.is_string() && FindTest(v.string_value()) != nullptr;
}

struct TestEntry {
  std::string_view name;
  TestFn fn;
};

constexpr TestEntry kTests[] = {
    {"boolean", TestBoolean}, {"callable", TestCallable}, {"defined", TestDefined},
    {"divisibleby", TestDivisibleby}, {"eq", TestEq}, {"equalto", TestEq}, {"==", TestEq},
    {"escaped", TestEscaped}, {"even", TestEven}, {"false", TestFalse}, {"filter", TestFilter},
    {"float", TestFloat}, {"ge", TestGe}, {">=", TestGe}, {"gt", TestGt},
    {"greaterthan", TestGt}, {">", TestGt}, {"in", TestIn}, {"integer", TestInteger},
    {"iterable", TestIterable}, {"le", TestLe}, {"<=", TestLe}, {"lower", TestLower},
    {"lt", TestLt}, {"lessthan", TestLt}, {"<", TestLt}, {"mapping", TestMapping},
    {"ne", TestNe}, {"!=", TestNe}, {"none", TestNone}, {"number", TestNumber},
    {"odd", TestOdd}, {"sameas", TestSameas}, {"sequence", TestSequence},
    {"string", TestString}, {"test", TestTest}, {"true", TestTrue},
    {"undefined", TestUndefined}, {"upper", TestUpper},
};

}  // namespace

TestFn FindTest(std::string_view name) {
  for (const TestEntry& e : kTests) {
    if (e.name == name) return e.fn;
  }
  return nullptr;
}

}  // namespace krasis::chat_template
