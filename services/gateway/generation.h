// One request's generation as clients see it: runs the tokens through a decode
// worker (Backend) and turns the token stream into text events -- incremental
// detokenization without split UTF-8, stop strings matched on text, <think>
// reasoning split out, tool calls parsed -- plus logprobs, the finish reason and
// usage. Shared by the OpenAI HTTP endpoints and the gRPC Inference service.
#pragma once

#include <atomic>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "absl/status/status.h"
#include "services/gateway/backend.h"
#include "services/gateway/model_frontend.h"
#include "services/gateway/openai_request.h"
#include "services/gateway/parsers/tool_call_parser.h"

namespace krasis::gateway {

struct TokenLogprobs {
  std::string token;
  float logprob = 0.0f;
  std::vector<std::pair<std::string, float>> top;
};

// What changed since the last event.
struct TextDelta {
  std::string content;
  std::string reasoning;
  std::vector<ToolCallDelta> tool_calls;
  std::vector<TokenLogprobs> logprobs;
  bool empty() const { return content.empty() && reasoning.empty() && tool_calls.empty() && logprobs.empty(); }
};

struct GenerationResult {
  std::string finish_reason = "stop";  // stop, length, tool_calls, cancelled
  int64_t prompt_tokens = 0, completion_tokens = 0, cached_tokens = 0;
  std::string content, reasoning;  // whole texts (non-streaming responses)
  std::vector<ToolCall> tool_calls;
  std::vector<TokenLogprobs> logprobs;
  RouteInfo route;
  double ttft_ms = 0.0, total_ms = 0.0;
};

struct GenerationSpec {
  std::string request_id;
  std::vector<int32_t> prompt;
  GenerationOptions options;
  bool parse_reasoning = false;    // chat with a reasoning template
  bool starts_in_reasoning = false;
  std::optional<ToolCallFormat> tool_format;  // chat with tools
  nlohmann::json tools;
};

// Runs the generation, calling `on_delta` for every non-empty delta (return
// false to stop early: the client went away). Errors: the backend's (kUnavailable
// when no worker could serve it; others mid-stream).
absl::StatusOr<GenerationResult> RunGeneration(const ModelFrontend& model, Backend& backend,
                                               const GenerationSpec& spec,
                                               const std::function<bool(const TextDelta&)>& on_delta,
                                               const std::atomic<bool>& cancelled);

}  // namespace krasis::gateway
