// Python text formatting for the chat-template interpreter: printf-style
// (`"%s" % x`, the |format filter), str.format() and json.dumps() (transformers'
// |tojson filter: ensure_ascii=False, optional indent, separators, sort_keys), each
// producing what CPython produces.
#pragma once

#include <optional>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "common/chat_template/value.h"

namespace krasis::chat_template {

class Evaluator;

// fmt % args (args: a tuple, a dict for %(name)s, or a single value).
absl::StatusOr<std::string> PercentFormat(std::string_view fmt, const Value& args);
// fmt.format(*args, **kwargs).
absl::StatusOr<std::string> BraceFormat(Evaluator& ev, std::string_view fmt, const CallArgs& args);

struct JsonOptions {
  bool ensure_ascii = false;
  std::optional<std::string> indent;  // nullopt: one line
  std::string item_separator = ", ";
  std::string key_separator = ": ";
  bool sort_keys = false;
};
absl::StatusOr<std::string> JsonDumps(const Value& v, const JsonOptions& options);

}  // namespace krasis::chat_template
