// From a parsed OpenAI request to the generation to run: the model check, the
// chat template, tokenization, vocabulary and context-length checks (all before
// any worker is asked), and the parsers the output needs. Shared by the REST
// handlers and the gRPC Inference service, so both accept and refuse exactly
// the same requests.
#pragma once

#include <string>
#include <variant>

#include "services/gateway/generation.h"
#include "services/gateway/model_frontend.h"
#include "services/gateway/openai_request.h"

namespace krasis::gateway {

// A new request id: `prefix` + 24 random alphanumerics.
std::string NewRequestId(const char* prefix);

std::variant<GenerationSpec, ApiError> PlanChat(const ModelFrontend& model, const ChatRequest& request,
                                                std::string request_id);

// `echo` receives the prompt text when the request asks to echo it.
std::variant<GenerationSpec, ApiError> PlanCompletion(const ModelFrontend& model, const CompletionRequest& request,
                                                      std::string request_id, std::string* echo);

// The 429 answer when Backend::Admit refuses.
ApiError QueueFullError();

}  // namespace krasis::gateway
