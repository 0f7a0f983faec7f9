// Sequence and mapping filters (|map, |select, |selectattr, |join, |sort, |unique,
// |dictsort, |items, |first, |last, |sum, |min, |max, |batch ...) following
// jinja2 3.1. Filters that return generators in jinja2 return lists here.
#include <algorithm>

#include "common/chat_template/filters_internal.h"
#include "common/chat_template/pystr.h"
#include "common/chat_template/unicode.h"
#include "common/status.h"

namespace krasis::chat_template {
namespace {

absl::StatusOr<std::vector<Value>> Bind(std::string_view fn, CallArgs& args,
                                        const std::vector<Param>& params) {
  std::vector<Value> out;
  RETURN_IF_ERROR(BindArgs(fn, args, params, &out));
  return out;
}

Value IgnoreCase(const Value& v) {
  return v.is_string() ? Value::String(pystr::Lower(v.string_value())) : v;
}

// Key for sort / unique / min / max: the attribute (or item itself), lowercased
// unless case_sensitive.
absl::StatusOr<Value> KeyOf(Evaluator& ev, const Value& item, const Value& attribute,
                            bool case_sensitive) {
  Value key = item;
  if (!attribute.is_none() && !attribute.is_undefined()) {
    ASSIGN_OR_RETURN(key, GetAttributePath(ev, item, attribute));
  }
  return case_sensitive ? key : IgnoreCase(key);
}

// Stable sort by precomputed keys with Python's < (reverse keeps equal items in order).
absl::Status SortByKeys(std::vector<Value>* items, const std::vector<Value>& keys, bool reverse) {
  std::vector<size_t> order(items->size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  absl::Status st;
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    if (!st.ok()) return false;
    auto lt = reverse ? PyCompare(keys[b], keys[a], "<") : PyCompare(keys[a], keys[b], "<");
    if (!lt.ok()) {
      st = lt.status();
      return false;
    }
    return *lt;
  });
  RETURN_IF_ERROR(st);
  std::vector<Value> sorted;
  sorted.reserve(items->size());
  for (size_t i : order) sorted.push_back((*items)[i]);
  *items = std::move(sorted);
  return absl::OkStatus();
}

// select / reject / selectattr / rejectattr.
absl::StatusOr<Value> SelectOrReject(Evaluator& ev, const Value& v, CallArgs& args, bool select,
                                     bool lookup_attr) {
  if (!Truthy(v)) return Value::List({});  // jinja2: `if value:` before iterating
  ASSIGN_OR_RETURN(std::vector<Value> items, Iterate(v));
  size_t off = 0;
  Value attr;
  if (lookup_attr) {
    if (args.positional.empty()) return InvalidArgumentError("Missing parameter for attribute name");
    attr = args.positional[0];
    off = 1;
  }
  std::string test;
  CallArgs test_args;
  const bool have_test = args.positional.size() > off;
  if (have_test) {
    test = PyStr(args.positional[off]);
    test_args.positional.assign(args.positional.begin() + static_cast<long>(off) + 1,
                                args.positional.end());
    test_args.keyword = args.keyword;
  }
  std::vector<Value> out;
  for (const Value& item : items) {
    Value x = item;
    if (lookup_attr) {
      ASSIGN_OR_RETURN(x, GetAttributePath(ev, item, attr));
    }
    bool r;
    if (have_test) {
      CallArgs a = test_args;
      ASSIGN_OR_RETURN(r, ev.CallTestByName(test, x, a));
    } else {
      r = Truthy(x);
    }
    if (r == select) out.push_back(item);
  }
  return Value::List(std::move(out));
}

absl::StatusOr<Value> MinOrMax(Evaluator& ev, const Value& v, CallArgs& args, bool max) {
  ASSIGN_OR_RETURN(auto a, Bind(max ? "max" : "min", args, {{"case_sensitive", Value::Bool(false)},
                                                            {"attribute", Value::None()}}));
  ASSIGN_OR_RETURN(std::vector<Value> items, Iterate(v));
  if (items.empty()) return Value::Undefined("No aggregated item, sequence was empty.");
  size_t best = 0;
  ASSIGN_OR_RETURN(Value best_key, KeyOf(ev, items[0], a[1], Truthy(a[0])));
  for (size_t i = 1; i < items.size(); ++i) {
    ASSIGN_OR_RETURN(Value key, KeyOf(ev, items[i], a[1], Truthy(a[0])));
    ASSIGN_OR_RETURN(bool better, max ? PyCompare(key, best_key, ">") : PyCompare(key, best_key, "<"));
    if (better) {
      best = i;
      best_key = key;
    }
  }
  return items[best];
}

}  // namespace

absl::StatusOr<Value> GetAttributePath(Evaluator& ev, const Value& item, const Value& attribute) {
  if (attribute.is_integral()) return ev.GetItem(item, attribute);
  Value cur = item;
  for (const std::string& part : pystr::Split(PyStr(attribute), std::string("."), -1)) {
    const bool numeric = !part.empty() && std::all_of(part.begin(), part.end(), [](char c) {
      return c >= '0' && c <= '9';
    });
    ASSIGN_OR_RETURN(cur, ev.GetItem(cur, numeric ? Value::Int(std::stoll(part)) : Value::String(part)));
  }
  return cur;
}

KRASIS_FILTER(FilterBatch) {
  ASSIGN_OR_RETURN(auto a, Bind("batch", args, {{"linecount", Value(), true},
                                                {"fill_with", Value::None()}}));
  if (!a[0].is_integral() || a[0].int_value() <= 0) {
    return InvalidArgumentError("batch linecount must be a positive integer");
  }
  const auto n = static_cast<size_t>(a[0].int_value());
  ASSIGN_OR_RETURN(std::vector<Value> items, Iterate(v));
  std::vector<Value> out, tmp;
  for (const Value& item : items) {
    if (tmp.size() == n) {
      out.push_back(Value::List(std::move(tmp)));
      tmp.clear();
    }
    tmp.push_back(item);
  }
  if (!tmp.empty()) {
    if (!a[1].is_none()) {
      while (tmp.size() < n) tmp.push_back(a[1]);
    }
    out.push_back(Value::List(std::move(tmp)));
  }
  return Value::List(std::move(out));
}

KRASIS_FILTER(FilterDictsort) {
  ASSIGN_OR_RETURN(auto a, Bind("dictsort", args, {{"case_sensitive", Value::Bool(false)},
                                                   {"by", Value::String("key")},
                                                   {"reverse", Value::Bool(false)}}));
  if (!v.is_dict()) return InvalidArgumentError("dictsort requires a mapping");
  const std::string by = PyStr(a[1]);
  if (by != "key" && by != "value") {
    return InvalidArgumentError("You can only sort by either \"key\" or \"value\"");
  }
  std::vector<Value> items, keys;
  for (const auto& [k, val] : v.dict().entries()) {
    items.push_back(Value::Tuple({k, val}));
    const Value& key = by == "key" ? k : val;
    keys.push_back(Truthy(a[0]) ? key : IgnoreCase(key));
  }
  RETURN_IF_ERROR(SortByKeys(&items, keys, Truthy(a[2])));
  return Value::List(std::move(items));
}

KRASIS_FILTER(FilterFirst) {
  RETURN_IF_ERROR(Bind("first", args, {}).status());
  ASSIGN_OR_RETURN(std::vector<Value> items, Iterate(v));
  if (items.empty()) return Value::Undefined("No first item, sequence was empty.");
  return items.front();
}

KRASIS_FILTER(FilterLast) {
  RETURN_IF_ERROR(Bind("last", args, {}).status());
  ASSIGN_OR_RETURN(std::vector<Value> items, Iterate(v));
  if (items.empty()) return Value::Undefined("No last item, sequence was empty.");
  return items.back();
}

KRASIS_FILTER(FilterItems) {
  RETURN_IF_ERROR(Bind("items", args, {}).status());
  if (v.is_undefined()) return Value::List({});
  if (!v.is_dict()) return InvalidArgumentError("Can only get item pairs from a mapping.");
  std::vector<Value> out;
  for (const auto& [k, val] : v.dict().entries()) out.push_back(Value::Tuple({k, val}));
  return Value::List(std::move(out));
}

KRASIS_FILTER(FilterJoin) {
  ASSIGN_OR_RETURN(auto a, Bind("join", args, {{"d", Value::String("")},
                                               {"attribute", Value::None()}}));
  ASSIGN_OR_RETURN(std::vector<Value> items, Iterate(v));
  const std::string sep = PyStr(a[0]);
  std::string out;
  for (size_t i = 0; i < items.size(); ++i) {
    Value item = items[i];
    if (!a[1].is_none()) {
      ASSIGN_OR_RETURN(item, GetAttributePath(ev, item, a[1]));
    }
    if (i > 0) out += sep;
    AppendPyStr(item, &out);
  }
  return Value::String(std::move(out));
}

KRASIS_FILTER(FilterLength) {
  RETURN_IF_ERROR(Bind("length", args, {}).status());
  ASSIGN_OR_RETURN(int64_t n, Length(v));
  return Value::Int(n);
}

KRASIS_FILTER(FilterList) {
  RETURN_IF_ERROR(Bind("list", args, {}).status());
  ASSIGN_OR_RETURN(std::vector<Value> items, Iterate(v));
  return Value::List(std::move(items));
}

KRASIS_FILTER(FilterMap) {
  if (!Truthy(v)) return Value::List({});  // jinja2: `if value:` before iterating
  ASSIGN_OR_RETURN(std::vector<Value> items, Iterate(v));
  std::vector<Value> out;
  out.reserve(items.size());
  if (args.positional.empty()) {
    Value attribute, default_value = Value::None();
    bool have_attribute = false;
    for (auto& [k, val] : args.keyword) {
      if (k == "attribute") {
        attribute = val;
        have_attribute = true;
      } else if (k == "default") {
        default_value = val;
      } else {
        return InvalidArgumentError("Unexpected keyword argument '", k, "'");
      }
    }
    if (!have_attribute) return InvalidArgumentError("map requires a filter argument");
    for (const Value& item : items) {
      ASSIGN_OR_RETURN(Value x, GetAttributePath(ev, item, attribute));
      if (x.is_undefined() && !default_value.is_none()) x = default_value;
      out.push_back(std::move(x));
    }
    return Value::List(std::move(out));
  }
  const std::string filter = PyStr(args.positional[0]);
  CallArgs rest;
  rest.positional.assign(args.positional.begin() + 1, args.positional.end());
  rest.keyword = args.keyword;
  for (const Value& item : items) {
    CallArgs a = rest;
    ASSIGN_OR_RETURN(Value x, ev.CallFilterByName(filter, item, a));
    out.push_back(std::move(x));
  }
  return Value::List(std::move(out));
}

KRASIS_FILTER(FilterMax) { return MinOrMax(ev, v, args, true); }
KRASIS_FILTER(FilterMin) { return MinOrMax(ev, v, args, false); }
KRASIS_FILTER(FilterSelect) { return SelectOrReject(ev, v, args, true, false); }
KRASIS_FILTER(FilterReject) { return SelectOrReject(ev, v, args, false, false); }
KRASIS_FILTER(FilterSelectattr) { return SelectOrReject(ev, v, args, true, true); }
KRASIS_FILTER(FilterRejectattr) { return SelectOrReject(ev, v, args, false, true); }

KRASIS_FILTER(FilterReverse) {
  RETURN_IF_ERROR(Bind("reverse", args, {}).status());
  if (v.is_string()) {
    std::u32string u = DecodeUtf8(v.string_value());
    std::reverse(u.begin(), u.end());
    return Value::String(EncodeUtf8(u));
  }
  auto items = Iterate(v);
  if (!items.ok()) return InvalidArgumentError("argument must be iterable");
  std::reverse(items->begin(), items->end());
  return Value::List(std::move(*items));
}

KRASIS_FILTER(FilterSlice) {
  ASSIGN_OR_RETURN(auto a, Bind("slice", args, {{"slices", Value(), true},
                                                {"fill_with", Value::None()}}));
  if (!a[0].is_integral() || a[0].int_value() <= 0) {
    return InvalidArgumentError("slice count must be a positive integer");
  }
  ASSIGN_OR_RETURN(std::vector<Value> seq, Iterate(v));
  const int64_t slices = a[0].int_value();
  const auto length = static_cast<int64_t>(seq.size());
  const int64_t per = length / slices, extra = length % slices;
  int64_t offset = 0;
  std::vector<Value> out;
  for (int64_t n = 0; n < slices; ++n) {
    const int64_t start = offset + n * per;
    if (n < extra) ++offset;
    const int64_t end = offset + (n + 1) * per;
    std::vector<Value> tmp(seq.begin() + start, seq.begin() + end);
    if (!a[1].is_none() && n >= extra) tmp.push_back(a[1]);
    out.push_back(Value::List(std::move(tmp)));
  }
  return Value::List(std::move(out));
}

KRASIS_FILTER(FilterSort) {
  ASSIGN_OR_RETURN(auto a, Bind("sort", args, {{"reverse", Value::Bool(false)},
                                               {"case_sensitive", Value::Bool(false)},
                                               {"attribute", Value::None()}}));
  ASSIGN_OR_RETURN(std::vector<Value> items, Iterate(v));
  std::vector<Value> keys;
  keys.reserve(items.size());
  for (const Value& item : items) {
    if (a[2].is_string() && a[2].string_value().find(',') != std::string::npos) {
      std::vector<Value> parts;
      for (const std::string& attr : pystr::Split(a[2].string_value(), std::string(","), -1)) {
        ASSIGN_OR_RETURN(Value k, KeyOf(ev, item, Value::String(attr), Truthy(a[1])));
        parts.push_back(std::move(k));
      }
      keys.push_back(Value::List(std::move(parts)));
    } else {
      ASSIGN_OR_RETURN(Value k, KeyOf(ev, item, a[2], Truthy(a[1])));
      keys.push_back(std::move(k));
    }
  }
  RETURN_IF_ERROR(SortByKeys(&items, keys, Truthy(a[0])));
  return Value::List(std::move(items));
}

KRASIS_FILTER(FilterSum) {
  ASSIGN_OR_RETURN(auto a, Bind("sum", args, {{"attribute", Value::None()},
                                              {"start", Value::Int(0)}}));
  ASSIGN_OR_RETURN(std::vector<Value> items, Iterate(v));
  Value total = a[1];
  if (total.is_string()) return InvalidArgumentError("sum() can't sum strings [use ''.join(seq) instead]");
  for (const Value& item : items) {
    Value x = item;
    if (!a[0].is_none()) {
      ASSIGN_OR_RETURN(x, GetAttributePath(ev, item, a[0]));
    }
    ASSIGN_OR_RETURN(total, BinaryOp("+", total, x));
  }
  return total;
}

KRASIS_FILTER(FilterUnique) {
  ASSIGN_OR_RETURN(auto a, Bind("unique", args, {{"case_sensitive", Value::Bool(false)},
                                                 {"attribute", Value::None()}}));
  ASSIGN_OR_RETURN(std::vector<Value> items, Iterate(v));
  std::vector<Value> out, seen;
  for (const Value& item : items) {
    ASSIGN_OR_RETURN(Value key, KeyOf(ev, item, a[1], Truthy(a[0])));
    if (!IsHashable(key)) return InvalidArgumentError("unhashable type: '", PyTypeName(key), "'");
    bool dup = false;
    for (const Value& s : seen) {
      if (PyEquals(s, key)) {
        dup = true;
        break;
      }
    }
    if (dup) continue;
    seen.push_back(key);
    out.push_back(item);
  }
  return Value::List(std::move(out));
}

}  // namespace krasis::chat_template
