// What the gateway knows of the model it serves: its tokenizer, chat template,
// config (context length, EOS), generation defaults, and which reasoning and
// tool-call formats its outputs use (read from the template). Loaded once from
// the model directory; immutable and thread-safe afterwards.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "absl/status/statusor.h"
#include "common/chat_template/chat_template.h"
#include "common/model_config.h"
#include "common/tokenizer/tokenizer.h"
#include "services/gateway/parsers/tool_call_formats.h"

namespace krasis::gateway {

class ModelFrontend {
 public:
  static absl::StatusOr<std::unique_ptr<ModelFrontend>> Load(const std::string& dir, std::string model_id);

  const std::string& id() const { return id_; }
  const Tokenizer& tokenizer() const { return *tokenizer_; }
  const ModelConfig& config() const { return config_; }
  int64_t context_length() const { return config_.max_position_embeddings; }
  const std::vector<int32_t>& eos_token_ids() const { return eos_; }
  // generation_config.json (temperature, top_p, top_k ... defaults); {} if none.
  const nlohmann::json& generation_defaults() const { return generation_; }
  std::optional<ToolCallFormat> tool_call_format() const { return tool_format_; }
  bool has_reasoning() const { return reasoning_; }

  // The prompt text for chat messages (add_generation_prompt on) with tools and
  // template kwargs (e.g. enable_thinking). kInvalidArgument on template errors.
  absl::StatusOr<std::string> RenderChat(const nlohmann::ordered_json& messages,
                                         const nlohmann::ordered_json& tools,
                                         const nlohmann::ordered_json& kwargs) const;
  // Whether a rendered prompt leaves the model inside a <think> block.
  bool PromptOpensReasoning(const std::string& prompt) const;

 private:
  std::string id_;
  std::unique_ptr<Tokenizer> tokenizer_;
  std::optional<ChatTemplate> template_;
  nlohmann::ordered_json special_tokens_;
  ModelConfig config_;
  std::vector<int32_t> eos_;
  nlohmann::json generation_ = nlohmann::json::object();
  std::optional<ToolCallFormat> tool_format_;
  bool reasoning_ = false;
};

}  // namespace krasis::gateway
