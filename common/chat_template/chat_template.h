// Chat templates: render a model's own Jinja2 chat_template exactly as Hugging Face
// transformers' apply_chat_template does.
//
// transformers renders chat templates with jinja2's ImmutableSandboxedEnvironment
// (trim_blocks, lstrip_blocks, loopcontrols, its {% generation %} tag), its own
// |tojson (json.dumps with ensure_ascii=False, insertion key order, optional
// indent / separators / sort_keys) and the globals raise_exception(msg) and
// strftime_now(fmt). ChatTemplate is a Jinja2 interpreter built to match that
// output byte for byte: Python's truthiness, int/float arithmetic, str() and repr()
// of values, string methods, and jinja2's scoping, Undefined, filters and tests.
// The stages live beside this file: lexer, parser (ast.h), evaluator, and the
// filters / tests / methods / globals.
//
// Use nlohmann::ordered_json for request data: plain nlohmann::json sorts object
// keys, which changes what |tojson and dict iteration print (Python keeps
// insertion order).
//
//   ASSIGN_OR_RETURN(ChatTemplate tpl, ChatTemplate::Parse(source));
//   ASSIGN_OR_RETURN(std::string prompt,
//                    RenderChat(tpl, messages, tools, /*add_generation_prompt=*/true,
//                               {{"enable_thinking", false}, {"eos_token", "<|im_end|>"}}));
//
// Errors are kInvalidArgument. Syntax and runtime errors read
// "<name>:<line>:<column>: <message>" (e.g. "chat_template:12:5: unexpected token
// 'endfor'"); an error the template raises itself with raise_exception(msg) has
// exactly msg as its message. A ChatTemplate is immutable; Render is thread-safe.
#pragma once

#include <filesystem>
#include <memory>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"

namespace krasis {

namespace chat_template {
struct Program;
}  // namespace chat_template

class ChatTemplate {
 public:
  // Parses `source`; `name` prefixes error positions.
  static absl::StatusOr<ChatTemplate> Parse(std::string_view source,
                                            std::string name = "chat_template");

  // Renders with `context` (a JSON object) as the template's variables.
  absl::StatusOr<std::string> Render(const nlohmann::ordered_json& context) const;
  absl::StatusOr<std::string> Render(const nlohmann::json& context) const;

  const std::string& name() const;

 private:
  explicit ChatTemplate(std::shared_ptr<const chat_template::Program> program)
      : program_(std::move(program)) {}
  std::shared_ptr<const chat_template::Program> program_;
};

// Renders a conversation the way transformers' apply_chat_template builds the
// context: messages, tools (null when there are none, as transformers passes
// None), documents (null), add_generation_prompt, then every key of extra_kwargs
// (enable_thinking, bos_token, eos_token, other template kwargs; they override).
absl::StatusOr<std::string> RenderChat(
    const ChatTemplate& tpl, const nlohmann::ordered_json& messages,
    const nlohmann::ordered_json& tools, bool add_generation_prompt,
    const nlohmann::ordered_json& extra_kwargs = nlohmann::ordered_json::object());
absl::StatusOr<std::string> RenderChat(const ChatTemplate& tpl, const nlohmann::json& messages,
                                       const nlohmann::json& tools, bool add_generation_prompt,
                                       const nlohmann::json& extra_kwargs);

// A model's chat template as transformers finds it in a model directory:
// chat_template.jinja if present, else tokenizer_config.json's "chat_template" (a
// string, or a list of {"name", "template"} from which `template_name` is picked).
struct ChatTemplateSource {
  std::string source;
  std::filesystem::path origin;  // the file it came from
  // transformers' special_tokens_map from tokenizer_config.json: bos_token,
  // eos_token, unk_token, sep_token, pad_token, cls_token, mask_token (strings;
  // AddedToken objects give their "content") and additional_special_tokens, each
  // only when set. Pass these as template kwargs.
  nlohmann::ordered_json special_tokens = nlohmann::ordered_json::object();
};
absl::StatusOr<ChatTemplateSource> LoadChatTemplateSource(const std::filesystem::path& model_dir,
                                                          std::string_view template_name = "default");

}  // namespace krasis
