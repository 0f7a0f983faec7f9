// The public gRPC Inference API (krasis.v1.Inference) for direct clients:
// streaming chat and text completions, tokenize, detokenize, list models. Each
// request is translated into the OpenAI JSON request it mirrors and then takes
// the same path as the REST API (ParseChatRequest / ParseCompletionRequest,
// PlanChat / PlanCompletion, RunGeneration), so validation, templates, stop
// strings, reasoning and tool-call parsing behave identically. OpenAI errors map
// to gRPC codes: 400 INVALID_ARGUMENT, 404 NOT_FOUND, 429 RESOURCE_EXHAUSTED,
// 503 UNAVAILABLE; the message starts with OpenAI's error code when there is one
// ("context_length_exceeded: ..."). A client that cancels the call cancels the
// work on the workers.
#pragma once

#include <string>

#include <nlohmann/json.hpp>

#include "krasis/v1/inference.grpc.pb.h"
#include "services/gateway/backend.h"
#include "services/gateway/model_frontend.h"
#include "services/gateway/openai_request.h"

namespace krasis::gateway {

// The OpenAI JSON bodies the gRPC requests stand for (stream: true). Fails with
// an ApiError for what JSON cannot express (tool parameters that are not JSON).
std::variant<nlohmann::ordered_json, ApiError> ChatRequestJson(const v1::ChatCompletionRequest& request);
nlohmann::ordered_json CompletionRequestJson(const v1::CompletionRequest& request);

class InferenceService final : public v1::Inference::Service {
 public:
  InferenceService(const ModelFrontend& model, Backend& backend) : model_(model), backend_(backend) {}

  grpc::Status ChatCompletion(grpc::ServerContext* context, const v1::ChatCompletionRequest* request,
                              grpc::ServerWriter<v1::ChatCompletionChunk>* writer) override;
  grpc::Status Completion(grpc::ServerContext* context, const v1::CompletionRequest* request,
                          grpc::ServerWriter<v1::CompletionChunk>* writer) override;
  grpc::Status Tokenize(grpc::ServerContext* context, const v1::TokenizeRequest* request,
                        v1::TokenizeResponse* response) override;
  grpc::Status Detokenize(grpc::ServerContext* context, const v1::DetokenizeRequest* request,
                          v1::DetokenizeResponse* response) override;
  grpc::Status ListModels(grpc::ServerContext* context, const v1::ListModelsRequest* request,
                          v1::ListModelsResponse* response) override;

 private:
  const ModelFrontend& model_;
  Backend& backend_;
};

}  // namespace krasis::gateway
