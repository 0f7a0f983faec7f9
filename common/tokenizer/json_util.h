// Checked field access for tokenizer.json / tokenizer_config.json: each helper
// returns a Status naming the component and field instead of throwing, so a
// malformed file gives an error a user can act on.
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "common/status.h"

namespace krasis::tokenizer {

using Json = nlohmann::json;

// The "type" string of a component object (normalizer, pre_tokenizer, ...).
inline absl::StatusOr<std::string> ComponentType(const Json& j, std::string_view what) {
  if (!j.is_object()) return InvalidArgumentError(what, " must be an object or null");
  auto it = j.find("type");
  if (it == j.end() || !it->is_string()) {
    return InvalidArgumentError(what, " has no string field 'type'");
  }
  return it->get<std::string>();
}

// A required string field.
inline absl::StatusOr<std::string> StringField(const Json& j, const char* key,
                                               std::string_view what) {
  auto it = j.find(key);
  if (it == j.end() || !it->is_string()) {
    return InvalidArgumentError(what, ": field '", key, "' must be a string");
  }
  return it->get<std::string>();
}

// An optional boolean field (missing or null gives `fallback`).
inline absl::StatusOr<bool> BoolField(const Json& j, const char* key, bool fallback,
                                      std::string_view what) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return fallback;
  if (!it->is_boolean()) return InvalidArgumentError(what, ": field '", key, "' must be a boolean");
  return it->get<bool>();
}

// An optional non-negative integer field.
inline absl::StatusOr<int64_t> IntField(const Json& j, const char* key, int64_t fallback,
                                        std::string_view what) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return fallback;
  if (!it->is_number_integer() || it->get<int64_t>() < 0) {
    return InvalidArgumentError(what, ": field '", key, "' must be a non-negative integer");
  }
  return it->get<int64_t>();
}

// An optional string field (missing or null gives `fallback`).
inline absl::StatusOr<std::string> OptStringField(const Json& j, const char* key,
                                                  std::string fallback, std::string_view what) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return fallback;
  if (!it->is_string()) return InvalidArgumentError(what, ": field '", key, "' must be a string");
  return it->get<std::string>();
}

}  // namespace krasis::tokenizer
