// Tool calls in generated text -> OpenAI tool_calls, streaming and whole.
//
// Models write tool calls as marked-up text (formats in tool_call_formats.h).
// ToolCallParser turns that text into
//   * the response's content (the text outside calls) and complete tool_calls
//     {id, type: "function", function: {name, arguments: "<JSON text>"}}, and
//   * for SSE, deltas: a call's first delta carries index, id, type, name and
//     arguments ""; later deltas carry index and argument fragments whose
//     concatenation is the full arguments JSON text.
//
// Rules, the same for Push()/Finish() over any chunking and for ParseComplete():
//   * Content before the first call is kept verbatim. Whitespace that only
//     separates calls from each other or from the end of the output is dropped;
//     other text after a call is content again, verbatim.
//   * A call is released as soon as it can no longer turn out malformed: JSON
//     formats (Hermes, DeepSeek) at their end marker, XML formats (Qwen3-Coder,
//     GLM) at the function name, then one fragment per argument as each closes.
//   * Malformed call text (e.g. invalid JSON inside <tool_call>, no function
//     name) never fails the request: that call's raw text, markers included,
//     becomes content and parsing goes on. A call cut off by the end of the
//     output is parsed as if closed; if it does not parse, it is content too.
//   * DeepSeek's <｜tool▁calls▁begin｜>/<｜tool▁calls▁end｜> markers are always
//     consumed; non-whitespace text inside that section ends the section.
//   * Arguments are compact JSON with the model's key order; XML-format values
//     are typed by the tool's JSON schema (tool_arg_typing.h). Function names
//     are not checked against the tools list (clients report unknown tools).
// Markers split across chunks are held back until decided, so nothing of a
// marker leaks into content; content never ends inside a UTF-8 code point.
#pragma once

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"
#include "services/gateway/parsers/tool_arg_typing.h"
#include "services/gateway/parsers/tool_call_formats.h"

namespace krasis::gateway {

// Picks the format for a model from its chat template text (preferred) or its
// config.json model_type. Template markers are checked in this order:
//   "<function="          -> kQwen3Coder  (its templates also contain <tool_call>)
//   "<arg_key>"           -> kGlm45       (GLM templates also contain <tool_call>)
//   "tool▁calls▁begin" or "tool▁call▁begin"
//                         -> kDeepseekV3 when the template writes the arguments
//                            in a ```json fence after TYPE<｜tool▁sep｜>NAME,
//                            else kDeepseekV31 (NAME<｜tool▁sep｜>ARGS)
//   "<tool_call>"         -> kHermes
// Without markers, an exact model_type: qwen2, qwen2_moe, qwen3, qwen3_moe,
// qwen3_next -> kHermes; qwen3_5, qwen3_5_moe, qwen3_coder -> kQwen3Coder;
// glm4_moe, glm4 -> kGlm45; deepseek_v3, deepseek_v32 -> kDeepseekV31 (the
// current releases; V3-0324 needs the template). model_type cannot tell
// Qwen3-Coder (qwen3_moe / qwen3_next) from Qwen3, so pass the template when
// there is one. nullopt when nothing matches.
std::optional<ToolCallFormat> ToolCallFormatFor(std::string_view model_type_or_template_hint);

// "hermes", "qwen3_coder", "glm45", "deepseek_v3", "deepseek_v31" (vLLM's
// --tool-call-parser names where they exist) and back.
std::string_view ToolCallFormatName(ToolCallFormat format);
absl::StatusOr<ToolCallFormat> ToolCallFormatFromName(std::string_view name);

// Makes the id of each new call.
using ToolCallIdGenerator = std::function<std::string()>;
// "call_" + 24 random [A-Za-z0-9].
std::string RandomToolCallId();

struct ToolCall {
  std::string id;
  std::string name;
  std::string arguments;  // JSON text
  // {"id", "type": "function", "function": {"name", "arguments"}}
  nlohmann::json ToJson() const;
};

struct ToolCallDelta {
  int index = 0;          // position of the call in this response
  std::string id;         // set on a call's first delta only
  std::string name;       // set on a call's first delta only
  std::string arguments;  // "" on the first delta; then fragments
  bool is_first() const { return !id.empty(); }
  // First: {"index", "id", "type": "function", "function": {"name", "arguments": ""}};
  // later: {"index", "function": {"arguments"}}.
  nlohmann::json ToJson() const;
};

class ToolCallParser {
 public:
  struct Delta {
    std::string content;
    std::vector<ToolCallDelta> tool_calls;
    bool empty() const { return content.empty() && tool_calls.empty(); }
  };
  struct Result {
    std::string content;
    std::vector<ToolCall> tool_calls;
  };

  // `tools` is the request's OpenAI tools array (for argument schemas; may be
  // null or empty). `make_id` names calls (deterministic ids for tests).
  explicit ToolCallParser(ToolCallFormat format,
                          nlohmann::json tools = nlohmann::json::array(),
                          ToolCallIdGenerator make_id = RandomToolCallId);
  ~ToolCallParser();
  ToolCallParser(const ToolCallParser&) = delete;
  ToolCallParser& operator=(const ToolCallParser&) = delete;

  // Streaming: feed text as it is generated, then Finish() once.
  Delta Push(std::string_view chunk);
  Delta Finish();

  // The whole output at once (independent of the streaming state).
  Result ParseComplete(std::string_view text) const;

  ToolCallFormat format() const { return format_; }
  // Calls started so far in the stream (each has had its first delta).
  int calls_started() const { return next_index_; }

 private:
  enum class State { kContent, kSection, kCall, kFinished };

  void Process(Delta* out);
  bool StepContent(Delta* out);
  bool StepSection(Delta* out);
  bool StepCall(Delta* out);
  void BeginCall(size_t kind);
  // Feeds the call body; on completion releases the call or, when malformed,
  // its raw text as content.
  void FeedCall(std::string_view body, bool complete, bool closed, Delta* out);
  void EmitContent(std::string_view text, Delta* out);

  ToolCallFormat format_;
  const FormatSpec& spec_;
  ToolSchemas schemas_;
  ToolCallIdGenerator make_id_;
  std::vector<std::string_view> triggers_;  // markers that leave content
  std::vector<std::string_view> section_markers_;  // markers inside a section

  State state_ = State::kContent;
  std::string buf_;          // text not yet handed on (in kCall: the call body so far)
  bool after_call_ = false;  // whitespace here may only separate calls: hold it
  bool in_section_ = false;
  size_t call_kind_ = 0;
  size_t end_scan_ = 0;      // where to resume looking for the call's end marker
  std::unique_ptr<CallBodyParser> body_;
  bool call_announced_ = false;
  int next_index_ = 0;
};

}  // namespace krasis::gateway
