// The tool-call text formats, one description each, for ToolCallParser.
//
// A format is described by its markers (FormatSpec) and by a CallBodyParser that
// reads the text between one call's begin and end markers:
//
//   kHermes      Qwen2.5 / Qwen3 / Qwen3-Next (instruct and thinking):
//                  <tool_call>\n{"name": "f", "arguments": {...}}\n</tool_call>
//   kQwen3Coder  Qwen3-Coder, Qwen3-Coder-Next, Qwen3.5:
//                  <tool_call>\n<function=f>\n<parameter=k>\nv\n</parameter>\n</function>\n</tool_call>
//                (a bare <function=f>...</function> without <tool_call> is accepted too)
//   kGlm45       GLM-4.5 / 4.6 (name then newline) and GLM-4.7 (no newline):
//                  <tool_call>f\n<arg_key>k</arg_key>\n<arg_value>v</arg_value>\n</tool_call>
//   kDeepseekV3  <｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>f\n```json\n{...}\n```<｜tool▁call▁end｜><｜tool▁calls▁end｜>
//   kDeepseekV31 <｜tool▁calls▁begin｜><｜tool▁call▁begin｜>f<｜tool▁sep｜>{...}<｜tool▁call▁end｜><｜tool▁calls▁end｜>
//
// JSON-bodied formats (Hermes, DeepSeek) can only be validated once the call is
// complete, so their parser reports the call at its end marker. The XML formats
// (Qwen3-Coder, GLM) cannot be malformed once the function name is read (every
// value is at worst a string), so their parser reports the name as soon as it is
// complete and each argument as soon as its closing tag arrives: long arguments
// (a file being written) stream parameter by parameter.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "services/gateway/parsers/tool_arg_typing.h"

namespace krasis::gateway {

enum class ToolCallFormat { kHermes, kQwen3Coder, kGlm45, kDeepseekV3, kDeepseekV31 };

struct CallMarkers {
  std::string_view begin;
  std::string_view end;
};

struct FormatSpec {
  // Markers around a group of calls (DeepSeek); empty for formats without one.
  std::string_view section_begin;
  std::string_view section_end;
  // The ways one call can be marked (the first is the canonical one).
  std::vector<CallMarkers> calls;
};

const FormatSpec& SpecFor(ToolCallFormat format);

// What a body parser learned from the latest Feed().
struct BodyUpdate {
  // The call is not a valid call of this format. Only reported with
  // complete = true, and never after `name` was reported.
  bool malformed = false;
  std::optional<std::string> name;  // reported exactly once
  std::string arguments;            // new text of the arguments JSON string
};

// Reads one call's body (the text between its begin and end markers). Feed() is
// called with ever longer prefixes of the body (each call sees the previous text
// plus more) and finally once with the whole body and complete = true (also when
// the output ended before the end marker). Over a stream the concatenation of all
// `arguments` is the call's full arguments JSON text, whatever the chunking.
class CallBodyParser {
 public:
  virtual ~CallBodyParser() = default;
  virtual BodyUpdate Feed(std::string_view body, bool complete) = 0;
};

// `call_kind` is the index into SpecFor(format).calls of the marker that opened
// the call. `schemas` must outlive the parser.
std::unique_ptr<CallBodyParser> NewCallBodyParser(ToolCallFormat format, size_t call_kind,
                                                  const ToolSchemas& schemas);

// A function name a call may carry: non-empty, at most 256 bytes, no whitespace
// or control characters, none of < > { } " ' ` ,
bool IsValidFunctionName(std::string_view name);

}  // namespace krasis::gateway
