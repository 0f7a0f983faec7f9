// ChatTemplate, RenderChat and LoadChatTemplateSource (see chat_template.h).
#include "common/chat_template/chat_template.h"

#include <fstream>
#include <sstream>

#include "common/chat_template/ast.h"
#include "common/chat_template/evaluator.h"
#include "common/chat_template/parser.h"
#include "common/status.h"

namespace krasis {
namespace {

absl::StatusOr<std::string> RenderValue(const chat_template::Program& program,
                                        const chat_template::Value& context) {
  if (!context.is_dict()) return InvalidArgumentError("the template context must be a JSON object");
  chat_template::Evaluator evaluator(program, context);
  return evaluator.Render();
}

absl::StatusOr<std::string> ReadFile(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return NotFoundError("cannot read ", path.string());
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

}  // namespace

absl::StatusOr<ChatTemplate> ChatTemplate::Parse(std::string_view source, std::string name) {
  ASSIGN_OR_RETURN(std::unique_ptr<chat_template::Program> program,
                   chat_template::ParseProgram(source, std::move(name)));
  return ChatTemplate(std::shared_ptr<const chat_template::Program>(std::move(program)));
}

absl::StatusOr<std::string> ChatTemplate::Render(const nlohmann::ordered_json& context) const {
  return RenderValue(*program_, chat_template::FromJson(context));
}

absl::StatusOr<std::string> ChatTemplate::Render(const nlohmann::json& context) const {
  return RenderValue(*program_, chat_template::FromJson(context));
}

const std::string& ChatTemplate::name() const { return program_->name; }

absl::StatusOr<std::string> RenderChat(const ChatTemplate& tpl,
                                       const nlohmann::ordered_json& messages,
                                       const nlohmann::ordered_json& tools,
                                       bool add_generation_prompt,
                                       const nlohmann::ordered_json& extra_kwargs) {
  if (!messages.is_array()) return InvalidArgumentError("messages must be a JSON array");
  if (!tools.is_null() && !tools.is_array()) {
    return InvalidArgumentError("tools must be null or a JSON array");
  }
  if (!extra_kwargs.is_null() && !extra_kwargs.is_object()) {
    return InvalidArgumentError("template kwargs must be a JSON object");
  }
  nlohmann::ordered_json context = nlohmann::ordered_json::object();
  context["messages"] = messages;
  context["tools"] = tools;
  context["documents"] = nullptr;
  context["add_generation_prompt"] = add_generation_prompt;
  if (extra_kwargs.is_object()) {
    for (auto it = extra_kwargs.begin(); it != extra_kwargs.end(); ++it) {
      context[it.key()] = it.value();
    }
  }
  return tpl.Render(context);
}

absl::StatusOr<std::string> RenderChat(const ChatTemplate& tpl, const nlohmann::json& messages,
                                       const nlohmann::json& tools, bool add_generation_prompt,
                                       const nlohmann::json& extra_kwargs) {
  return RenderChat(tpl, nlohmann::ordered_json(messages), nlohmann::ordered_json(tools),
                    add_generation_prompt, nlohmann::ordered_json(extra_kwargs));
}

absl::StatusOr<ChatTemplateSource> LoadChatTemplateSource(const std::filesystem::path& model_dir,
                                                          std::string_view template_name) {
  ChatTemplateSource result;
  const std::filesystem::path config_path = model_dir / "tokenizer_config.json";
  nlohmann::ordered_json config = nlohmann::ordered_json::object();
  if (std::filesystem::exists(config_path)) {
    ASSIGN_OR_RETURN(std::string text, ReadFile(config_path));
    config = nlohmann::ordered_json::parse(text, nullptr, /*allow_exceptions=*/false);
    if (config.is_discarded() || !config.is_object()) {
      return InvalidArgumentError(config_path.string(), ": not a JSON object");
    }
    for (const char* key : {"bos_token", "eos_token", "unk_token", "sep_token", "pad_token",
                            "cls_token", "mask_token"}) {
      auto it = config.find(key);
      if (it == config.end()) continue;
      if (it->is_string()) {
        result.special_tokens[key] = *it;
      } else if (it->is_object() && it->contains("content") && (*it)["content"].is_string()) {
        result.special_tokens[key] = (*it)["content"];
      }
    }
    if (auto it = config.find("additional_special_tokens"); it != config.end() && it->is_array() &&
                                                             !it->empty()) {
      nlohmann::ordered_json extra = nlohmann::ordered_json::array();
      for (const auto& t : *it) {
        if (t.is_string()) extra.push_back(t);
        if (t.is_object() && t.contains("content")) extra.push_back(t["content"]);
      }
      result.special_tokens["additional_special_tokens"] = extra;
    }
  }
  const std::filesystem::path jinja_path = model_dir / "chat_template.jinja";
  if (std::filesystem::exists(jinja_path)) {
    ASSIGN_OR_RETURN(result.source, ReadFile(jinja_path));
    result.origin = jinja_path;
    return result;
  }
  auto it = config.find("chat_template");
  if (it == config.end()) {
    return NotFoundError("no chat template in ", model_dir.string(),
                         " (neither chat_template.jinja nor tokenizer_config.json's chat_template)");
  }
  result.origin = config_path;
  if (it->is_string()) {
    result.source = it->get<std::string>();
    return result;
  }
  if (it->is_array()) {
    for (const auto& entry : *it) {
      if (entry.is_object() && entry.value("name", "") == template_name &&
          entry.contains("template") && entry["template"].is_string()) {
        result.source = entry["template"].get<std::string>();
        return result;
      }
    }
    return NotFoundError(config_path.string(), " has no chat template named '", template_name, "'");
  }
  return InvalidArgumentError(config_path.string(), ": chat_template must be a string or a list");
}

}  // namespace krasis
