// Model frontend (see model_frontend.h).
#include "services/gateway/model_frontend.h"

#include <filesystem>
#include <fstream>

#include "common/status.h"
#include "services/gateway/parsers/tool_call_parser.h"

namespace krasis::gateway {

absl::StatusOr<std::unique_ptr<ModelFrontend>> ModelFrontend::Load(const std::string& dir, std::string model_id) {
  auto m = std::make_unique<ModelFrontend>();
  m->id_ = std::move(model_id);
  ASSIGN_OR_RETURN(m->config_, LoadModelConfig(dir));
  ASSIGN_OR_RETURN(m->tokenizer_, Tokenizer::Load(dir));
  auto source = LoadChatTemplateSource(dir);
  if (source.ok()) {
    ASSIGN_OR_RETURN(ChatTemplate tpl, ChatTemplate::Parse(source->source, source->origin.string()));
    m->template_ = std::move(tpl);
    m->special_tokens_ = source->special_tokens;
    m->tool_format_ = ToolCallFormatFor(source->source);
    m->reasoning_ = source->source.find("<think>") != std::string::npos;
  }
  m->eos_ = EosTokenIds(dir, m->config_);
  std::ifstream in(std::filesystem::path(dir) / "generation_config.json");
  if (in) {
    auto j = nlohmann::json::parse(in, nullptr, false);
    if (!j.is_discarded() && j.is_object()) m->generation_ = j;
  }
  if (auto eos = m->tokenizer_->eos_token_id(); eos && std::find(m->eos_.begin(), m->eos_.end(), *eos) == m->eos_.end()) {
    m->eos_.push_back(*eos);
  }
  return m;
}

absl::StatusOr<std::string> ModelFrontend::RenderChat(const nlohmann::ordered_json& messages,
                                                      const nlohmann::ordered_json& tools,
                                                      const nlohmann::ordered_json& kwargs) const {
  if (!template_) {
    return FailedPreconditionError("model '", id_, "' has no chat template; use /v1/completions");
  }
  nlohmann::ordered_json extra = special_tokens_.is_object() ? special_tokens_ : nlohmann::ordered_json::object();
  for (auto it = kwargs.begin(); it != kwargs.end(); ++it) extra[it.key()] = it.value();
  return krasis::RenderChat(*template_, messages, tools, /*add_generation_prompt=*/true, extra);
}

bool ModelFrontend::PromptOpensReasoning(const std::string& prompt) const {
  size_t open = prompt.rfind("<think>");
  return open != std::string::npos && prompt.find("</think>", open) == std::string::npos;
}

}  // namespace krasis::gateway
