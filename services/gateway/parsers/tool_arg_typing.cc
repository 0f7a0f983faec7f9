// Schema-driven typing of raw tool-call argument text (see tool_arg_typing.h).
#include "services/gateway/parsers/tool_arg_typing.h"

#include <cctype>
#include <cmath>
#include <cstdint>

#include "services/gateway/parsers/text_scan.h"

namespace krasis::gateway {
namespace {

using ordered_json = nlohmann::ordered_json;

std::string Lower(std::string_view text) {
  std::string out(text);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

// The declared type of a parameter schema, lower-case; "" when there is none.
std::string DeclaredType(const nlohmann::json* schema) {
  if (schema == nullptr || !schema->is_object()) return "";
  auto it = schema->find("type");
  if (it == schema->end()) return "";
  if (it->is_string()) return Lower(it->get_ref<const std::string&>());
  if (it->is_array()) {
    for (const auto& entry : *it) {
      if (entry.is_string() && entry.get_ref<const std::string&>() != "null") {
        return Lower(entry.get_ref<const std::string&>());
      }
    }
  }
  return "";
}

ordered_json StringValue(std::string_view raw) { return ordered_json(std::string(raw)); }

}  // namespace

ToolSchemas::ToolSchemas(const nlohmann::json& tools) {
  if (!tools.is_array()) return;
  for (const auto& tool : tools) {
    if (!tool.is_object()) continue;
    const nlohmann::json* fn = &tool;
    auto wrapped = tool.find("function");
    if (wrapped != tool.end() && wrapped->is_object()) fn = &*wrapped;
    auto name = fn->find("name");
    auto params = fn->find("parameters");
    if (name == fn->end() || !name->is_string()) continue;
    if (params == fn->end() || !params->is_object()) continue;
    auto props = params->find("properties");
    if (props == params->end() || !props->is_object()) continue;
    properties_.emplace(name->get<std::string>(), *props);
  }
}

const nlohmann::json* ToolSchemas::Param(std::string_view function,
                                         std::string_view param) const {
  auto fn = properties_.find(function);
  if (fn == properties_.end()) return nullptr;
  auto it = fn->second.find(std::string(param));
  return it == fn->second.end() ? nullptr : &*it;
}

ordered_json ParseJsonOrDiscard(std::string_view text) {
  return ordered_json::parse(text.begin(), text.end(), nullptr, /*allow_exceptions=*/false);
}

std::string DumpJson(const ordered_json& value) {
  return value.dump(-1, ' ', /*ensure_ascii=*/false, ordered_json::error_handler_t::replace);
}

ordered_json TypedValue(std::string_view raw, const nlohmann::json* schema) {
  std::string type = DeclaredType(schema);
  if (type == "string" || type == "str" || type == "text") return StringValue(raw);

  std::string_view trimmed = TrimSpace(raw);
  std::string lower = Lower(trimmed);
  if (lower == "null") return nullptr;

  if (type == "boolean" || type == "bool") {
    if (lower == "true") return true;
    if (lower == "false") return false;
    return StringValue(raw);
  }
  ordered_json parsed = ParseJsonOrDiscard(trimmed);
  bool ok = !parsed.is_discarded();
  if (type == "integer" || type == "int") {
    if (ok && parsed.is_number_integer()) return parsed;
    if (ok && parsed.is_number_float()) {
      double v = parsed.get<double>();
      if (std::isfinite(v) && v == std::floor(v) && std::fabs(v) < 9.0e15) {
        return static_cast<int64_t>(v);
      }
    }
    return StringValue(raw);
  }
  if (type == "number" || type == "float") {
    return ok && parsed.is_number() ? parsed : StringValue(raw);
  }
  if (type == "object") return ok && parsed.is_object() ? parsed : StringValue(raw);
  if (type == "array") return ok && parsed.is_array() ? parsed : StringValue(raw);
  if (type == "null") return StringValue(raw);  // "null" itself was handled above
  // No schema or no usable type: JSON when it is JSON, else the text.
  return ok ? parsed : StringValue(raw);
}

}  // namespace krasis::gateway
