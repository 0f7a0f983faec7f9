// Request planning (see request_plan.h).
#include "services/gateway/request_plan.h"

#include <random>

#include "common/status.h"

namespace krasis::gateway {

namespace {

std::optional<ApiError> CheckModel(const ModelFrontend& model, const std::string& requested) {
  if (requested == model.id()) return std::nullopt;
  return ApiError{404, StrCat("The model '", requested, "' does not exist"), "invalid_request_error", "model",
                  "model_not_found"};
}

// Token ids in the request (logit_bias keys, stop_token_ids) must be in the
// vocabulary; checked here so the error names the field before any work starts.
std::optional<ApiError> CheckTokenIds(const ModelFrontend& model, const GenerationOptions& options) {
  const int64_t vocab = model.config().vocab_size;
  for (const auto& [id, bias] : options.sampling.logit_bias()) {
    if (id < 0 || id >= vocab) {
      return ApiError{400, StrCat("logit_bias token id ", id, " is outside the vocabulary [0, ", vocab, ")"),
                      "invalid_request_error", "logit_bias", std::nullopt};
    }
  }
  for (int32_t id : options.sampling.stop_token_ids()) {
    if (id < 0 || id >= vocab) {
      return ApiError{400, StrCat("stop_token_ids entry ", id, " is outside the vocabulary [0, ", vocab, ")"),
                      "invalid_request_error", "stop_token_ids", std::nullopt};
    }
  }
  return std::nullopt;
}

}  // namespace

std::string NewRequestId(const char* prefix) {
  static thread_local std::mt19937_64 rng{std::random_device{}()};
  static const char kChars[] = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
  std::string id = prefix;
  for (int i = 0; i < 24; ++i) id.push_back(kChars[rng() % (sizeof(kChars) - 1)]);
  return id;
}

ApiError QueueFullError() {
  return {429, "Too many requests are queued; retry later", "rate_limit_error", std::nullopt, "rate_limit_exceeded"};
}

std::variant<GenerationSpec, ApiError> PlanChat(const ModelFrontend& model, const ChatRequest& req,
                                                std::string request_id) {
  if (auto e = CheckModel(model, req.model)) return *e;
  if (auto e = CheckTokenIds(model, req.options)) return *e;
  auto prompt_text = model.RenderChat(req.messages, req.tools, req.chat_template_kwargs);
  if (!prompt_text.ok()) {
    return ApiError{400, std::string(prompt_text.status().message()), "invalid_request_error", "messages",
                    std::nullopt};
  }
  std::vector<int32_t> prompt = model.tokenizer().Encode(*prompt_text);
  const int64_t completion = std::max<int64_t>(req.options.sampling.max_tokens(), 1);
  const int64_t total = static_cast<int64_t>(prompt.size()) + completion;
  if (model.context_length() > 0 && total > model.context_length()) {
    return ApiError{400,
                    StrCat("This model's maximum context length is ", model.context_length(),
                           " tokens. However, you requested ", total, " tokens (", prompt.size(),
                           " in the messages, ", completion,
                           " in the completion). Please reduce the length of the messages or completion."),
                    "invalid_request_error", "messages", "context_length_exceeded"};
  }
  GenerationSpec spec;
  spec.request_id = std::move(request_id);
  spec.prompt = std::move(prompt);
  spec.options = req.options;
  spec.parse_reasoning = model.has_reasoning();
  spec.starts_in_reasoning = spec.parse_reasoning && model.PromptOpensReasoning(*prompt_text);
  if (!req.tools.is_null() && req.tool_choice != "none" && model.tool_call_format()) {
    spec.tool_format = model.tool_call_format();
    spec.tools = nlohmann::json::parse(req.tools.dump());
  }
  return spec;
}

std::variant<GenerationSpec, ApiError> PlanCompletion(const ModelFrontend& model, const CompletionRequest& req,
                                                      std::string request_id, std::string* echo) {
  if (auto e = CheckModel(model, req.model)) return *e;
  if (auto e = CheckTokenIds(model, req.options)) return *e;
  std::vector<int32_t> prompt = req.prompt_text ? model.tokenizer().Encode(*req.prompt_text) : req.prompt_tokens;
  for (int32_t t : prompt) {
    if (t < 0 || t >= model.config().vocab_size) {
      return ApiError{400, StrCat("token id ", t, " is out of the vocabulary (", model.config().vocab_size, ")"),
                      "invalid_request_error", "prompt", std::nullopt};
    }
  }
  if (prompt.empty()) {
    return ApiError{400, "the prompt encodes to no tokens", "invalid_request_error", "prompt", std::nullopt};
  }
  const int64_t completion = req.options.sampling.max_tokens();
  const int64_t total = static_cast<int64_t>(prompt.size()) + completion;
  if (model.context_length() > 0 && total > model.context_length()) {
    return ApiError{400,
                    StrCat("This model's maximum context length is ", model.context_length(),
                           " tokens, however you requested ", total, " tokens (", prompt.size(),
                           " in your prompt; ", completion,
                           " for the completion). Please reduce your prompt; or completion length."),
                    "invalid_request_error", "prompt", "context_length_exceeded"};
  }
  if (echo != nullptr) {
    *echo = req.echo ? (req.prompt_text ? *req.prompt_text : model.tokenizer().Decode(prompt)) : "";
  }
  GenerationSpec spec;
  spec.request_id = std::move(request_id);
  spec.prompt = std::move(prompt);
  spec.options = req.options;
  return spec;
}

}  // namespace krasis::gateway
