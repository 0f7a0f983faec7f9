// krasis-gateway: the OpenAI-compatible REST API (HTTP, SSE) and the public gRPC
// Inference API. Owns tokenization, chat templates, detokenization, stop
// strings, reasoning and tool-call parsing, routing to decode and prefill
// workers, and cancellation.
#include <filesystem>

#include "common/logging.h"
#include "common/ports.h"
#include "services/gateway/backend.h"
#include "services/gateway/http/http_server.h"
#include "services/gateway/inference_service.h"
#include "services/gateway/model_frontend.h"
#include "services/gateway/openai_api.h"
#include "services/loader/model_fetch.h"
#include "services/rpc/service_main.h"

namespace po = boost::program_options;

int main(int argc, char** argv) {
  krasis::ServiceCommandLine cl("gateway", "gateway: OpenAI REST and the public gRPC Inference API");
  std::string http_listen = "127.0.0.1:8012", model_dir, model_id;
  krasis::gateway::BackendOptions backend_options;
  std::vector<std::string> api_keys;
  int64_t max_body_mb = 8;
  int http_threads = 4;
  cl.options().add_options()
      ("http-listen", po::value(&http_listen)->default_value(http_listen), "OpenAI REST address, host:port")
      ("model", po::value(&model_dir), "model directory (tokenizer, chat template, config)")
      ("model-id", po::value(&model_id), "the model's name in the API (default: folder name)")
      ("decode", po::value(&backend_options.decode_addresses)->multitoken(), "decode worker address (repeatable)")
      ("prefill", po::value(&backend_options.prefill_addresses)->multitoken(), "prefill worker address (repeatable)")
      ("prefill-threshold", po::value(&backend_options.prefill_threshold)->default_value(512),
       "uncached prompt tokens from which a prefill worker is used")
      ("max-in-flight", po::value(&backend_options.max_in_flight)->default_value(256),
       "requests in flight before new ones get 429")
      ("api-key", po::value(&api_keys)->multitoken(), "accepted API key (repeatable; none: no auth)")
      ("max-body-mb", po::value(&max_body_mb)->default_value(max_body_mb), "largest request body, MiB")
      ("http-threads", po::value(&http_threads)->default_value(http_threads), "HTTP I/O threads");
  krasis::ModelSource source;
  krasis::AddModelSourceOptions(cl.options(), &source);
  if (auto code = cl.Parse(argc, argv)) return *code;
  if (!krasis::ResolveModelDirOrLog(source, model_id, &model_dir)) return 1;
  if (model_dir.empty()) {
    KLOG_ERROR("give --model DIR, or --loader ADDR with --model-id");
    return 2;
  }
  if (backend_options.decode_addresses.empty()) {
    KLOG_ERROR("at least one --decode worker address is needed");
    return 2;
  }
  if (model_id.empty()) model_id = std::filesystem::path(model_dir).filename().string();
  auto model = krasis::gateway::ModelFrontend::Load(model_dir, model_id);
  if (!model.ok()) {
    KLOG_ERROR("cannot load model {}: {}", model_dir, model.status().ToString());
    return 1;
  }
  krasis::gateway::Backend backend(backend_options, model_id);
  krasis::gateway::OpenAiApi api(**model, backend);

  krasis::http::HttpServerOptions http_options;
  size_t colon = http_listen.rfind(':');
  if (colon == std::string::npos) {
    KLOG_ERROR("--http-listen must be host:port, got '{}'", http_listen);
    return 2;
  }
  http_options.host = http_listen.substr(0, colon);
  http_options.port = std::atoi(http_listen.c_str() + colon + 1);
  http_options.num_threads = http_threads;
  http_options.max_body_bytes = static_cast<size_t>(max_body_mb) << 20;
  http_options.api_keys = api_keys;
  krasis::http::HttpServer http(http_options);
  api.Register(http);
  if (auto s = http.Start(); !s.ok()) {
    KLOG_ERROR("cannot start HTTP on {}: {}", http_listen, s.ToString());
    return krasis::AddressInUse(http_listen) ? krasis::kExitAddressInUse : 1;
  }
  KLOG_INFO("OpenAI API on http://{} (model {})", http.address(), model_id);
  krasis::gateway::InferenceService inference(**model, backend);
  int code = krasis::ServeUntilSignal(cl, {krasis::ServedService{&inference, "krasis.v1.Inference"}});
  http.Stop();
  return code;
}
