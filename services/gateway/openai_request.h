// OpenAI request bodies (chat/completions and completions) parsed and validated
// into what the gateway needs, with errors shaped as OpenAI sends them: the HTTP
// status, a message naming the offending field, its `param` and `code`.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <variant>
#include <vector>

#include <nlohmann/json.hpp>

#include "krasis/v1/common.pb.h"

namespace krasis::gateway {

struct ApiError {
  int status = 400;
  std::string message;
  std::string type = "invalid_request_error";
  std::optional<std::string> param;
  std::optional<std::string> code;
};

// Options shared by both endpoints.
struct GenerationOptions {
  v1::SamplingParams sampling;     // temperature ... logit_bias, seed, max_tokens
  std::vector<std::string> stop;   // stop strings, matched on text
  bool stream = false;
  bool include_usage = false;      // stream_options.include_usage
  bool logprobs = false;
  int32_t top_logprobs = 0;
};

struct ChatRequest {
  std::string model;
  // ordered_json keeps the client's key order, which |tojson in templates prints.
  nlohmann::ordered_json messages;  // normalised for the chat template (text parts joined,
                            // assistant tool-call arguments parsed into objects)
  nlohmann::ordered_json tools;  // null or the OpenAI tools array
  std::string tool_choice = "auto";  // "none", "auto", "required" or a function name
  nlohmann::ordered_json chat_template_kwargs = nlohmann::ordered_json::object();
  GenerationOptions options;
};

struct CompletionRequest {
  std::string model;
  std::optional<std::string> prompt_text;
  std::vector<int32_t> prompt_tokens;  // when the prompt is a token array
  bool echo = false;
  GenerationOptions options;
};

// `defaults` is the model's generation_config.json (temperature, top_p, top_k
// used when the request leaves them out, as vLLM does).
std::variant<ChatRequest, ApiError> ParseChatRequest(const std::string& body, const nlohmann::json& defaults);
std::variant<CompletionRequest, ApiError> ParseCompletionRequest(const std::string& body,
                                                                 const nlohmann::json& defaults);

// {"error": {"message", "type", "param", "code"}}
std::string ErrorBody(const ApiError& error);

}  // namespace krasis::gateway
