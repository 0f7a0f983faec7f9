// The OpenAI-compatible REST API of the gateway: /v1/chat/completions and
// /v1/completions (JSON or SSE streaming exactly as OpenAI sends it),
// /v1/models, /health, /metrics (Prometheus) and /v1/timing, on the HTTP layer
// in services/gateway/http. Each generation runs on its own thread; a client
// that disconnects cancels its work on the workers.
#pragma once

#include <atomic>
#include <memory>
#include <string>

#include "services/gateway/backend.h"
#include "services/gateway/http/http_server.h"
#include "services/gateway/http/metrics.h"
#include "services/gateway/model_frontend.h"

namespace krasis::gateway {

class OpenAiApi {
 public:
  OpenAiApi(const ModelFrontend& model, Backend& backend);
  ~OpenAiApi();  // waits for running generations

  void Register(http::HttpServer& server);
  http::MetricsRegistry& metrics() { return metrics_; }

 private:
  void Chat(const http::Request& request, http::ResponderPtr responder);
  void Completions(const http::Request& request, http::ResponderPtr responder);
  void Models(http::ResponderPtr responder);
  void Health(http::ResponderPtr responder);
  void Metrics(http::ResponderPtr responder);
  void Timing(const http::Request& request, http::ResponderPtr responder);
  // Starts a generation thread that answers on `responder`.
  void Launch(http::ResponderPtr responder, std::function<void(const std::atomic<bool>& cancelled)> body);

  const ModelFrontend& model_;
  Backend& backend_;
  http::MetricsRegistry metrics_;
  http::CounterFamily& requests_;
  http::CounterFamily& prompt_tokens_;
  http::CounterFamily& generated_tokens_;
  http::HistogramFamily& ttft_;
  http::HistogramFamily& itl_;
  http::GaugeFamily& queue_depth_;
  http::GaugeFamily& kv_used_;
  std::atomic<bool> timing_{false};
  std::atomic<int> threads_{0};
};

}  // namespace krasis::gateway
