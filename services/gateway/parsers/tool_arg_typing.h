// Typing of tool-call argument values that models write as plain text.
//
// The XML-style tool-call formats (Qwen3-Coder's <parameter=K>V</parameter>,
// GLM's <arg_key>K</arg_key><arg_value>V</arg_value>) carry every value as raw
// text; the OpenAI response needs a JSON arguments object. The declared type in
// the request's tool schema decides how a value is read:
//   string                      kept verbatim
//   integer                     JSON integer (an integral float such as 5.0 too)
//   number                      JSON number
//   boolean                     true/false, any case (Qwen templates print True)
//   object, array               parsed as JSON
//   null                        null
//   no schema / no usable type  parsed as JSON when it is valid JSON, else a string
// A value that does not fit its declared type stays a string (never dropped,
// never an error); the text "null" (any case) is null for every non-string type.
// A "type" array (["integer", "null"]) uses its first non-null entry; anyOf /
// oneOf / enum without a type count as "no usable type".
//
// Arguments are built as nlohmann::ordered_json so keys keep the model's order,
// and serialized compactly with invalid UTF-8 replaced (serialization never throws).
#pragma once

#include <map>
#include <string>
#include <string_view>

#include "nlohmann/json.hpp"

namespace krasis::gateway {

// Index of the parameter schemas in an OpenAI "tools" array:
//   [{"type": "function", "function": {"name": ..., "parameters": {"properties": {...}}}}]
// Entries without the "function" wrapper ({"name", "parameters"}) are accepted too;
// anything malformed is skipped.
class ToolSchemas {
 public:
  ToolSchemas() = default;
  explicit ToolSchemas(const nlohmann::json& tools);

  // The schema of one parameter of one function, or nullptr when unknown.
  const nlohmann::json* Param(std::string_view function, std::string_view param) const;

 private:
  std::map<std::string, nlohmann::json, std::less<>> properties_;  // function -> properties
};

// Reads `raw` as the type `schema` declares (schema may be nullptr), by the table above.
nlohmann::ordered_json TypedValue(std::string_view raw, const nlohmann::json* schema);

// Compact JSON text of `value`; invalid UTF-8 in strings becomes U+FFFD.
std::string DumpJson(const nlohmann::ordered_json& value);

// Parses `text` as one JSON value; returns a discarded value when it is not JSON.
nlohmann::ordered_json ParseJsonOrDiscard(std::string_view text);

}  // namespace krasis::gateway
