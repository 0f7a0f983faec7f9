// krasis-decode: the decode worker. Loads a model, runs the continuous-batching
// engine on the CPU, and serves krasis.v1.Decode (plus health and reflection).
// Without --model it serves health only and answers RPCs FAILED_PRECONDITION.
#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "common/logging.h"
#include "common/models/model.h"
#include "services/decode/decode_service.h"
#include "services/rpc/service_main.h"

namespace po = boost::program_options;

namespace {

// EOS ids: config.json's, plus generation_config.json's when present.
std::vector<int32_t> EosTokens(const std::string& dir, const krasis::ModelConfig& config) {
  std::vector<int32_t> eos;
  for (int64_t e : config.eos_token_ids) eos.push_back(static_cast<int32_t>(e));
  std::ifstream in(std::filesystem::path(dir) / "generation_config.json");
  if (in) {
    auto j = nlohmann::json::parse(in, nullptr, false);
    if (!j.is_discarded() && j.contains("eos_token_id")) {
      auto add = [&](const nlohmann::json& v) {
        if (v.is_number_integer() && std::find(eos.begin(), eos.end(), v.get<int32_t>()) == eos.end()) {
          eos.push_back(v.get<int32_t>());
        }
      };
      if (j["eos_token_id"].is_array()) {
        for (const auto& v : j["eos_token_id"]) add(v);
      } else {
        add(j["eos_token_id"]);
      }
    }
  }
  return eos;
}

}  // namespace

int main(int argc, char** argv) {
  krasis::ServiceCommandLine cl("decode", "decode worker: CPU token generation over a paged KV cache");
  std::string model_dir, model_id;
  krasis::EngineOptions options;
  int64_t budget_mb = 1024;
  cl.options().add_options()
      ("model", po::value(&model_dir), "model directory (config.json + safetensors)")
      ("model-id", po::value(&model_id), "name clients use for the model (default: folder name)")
      ("block-size", po::value(&options.kv.block_size)->default_value(16), "KV block size in tokens")
      ("kv-budget-mb", po::value(&budget_mb)->default_value(budget_mb), "RAM for the KV cache, MiB")
      ("max-batch", po::value(&options.max_batch)->default_value(32), "sequences per step")
      ("prefill-chunk", po::value(&options.prefill_chunk)->default_value(256),
       "prompt tokens per sequence per step");
  if (auto code = cl.Parse(argc, argv)) return *code;
  options.kv.budget_bytes = budget_mb << 20;
  if (options.kv.block_size < 1 || options.max_batch < 1 || options.prefill_chunk < 1 || budget_mb < 1) {
    KLOG_ERROR("--block-size, --kv-budget-mb, --max-batch and --prefill-chunk must be positive");
    return 2;
  }
  std::unique_ptr<krasis::DecodeEngine> engine;
  if (!model_dir.empty()) {
    auto model = krasis::LoadModel(model_dir);
    if (!model.ok()) {
      KLOG_ERROR("cannot load model: {}", model.status().ToString());
      return 1;
    }
    if (model_id.empty()) model_id = std::filesystem::path(model_dir).filename().string();
    std::vector<int32_t> eos = EosTokens(model_dir, (*model)->config());
    KLOG_INFO("model {} ({}) loaded from {}", model_id,
              krasis::ArchitectureName((*model)->config().architecture), model_dir);
    engine = std::make_unique<krasis::DecodeEngine>(std::move(*model), options, std::move(eos));
  } else {
    KLOG_WARN("no --model given: serving health only");
  }
  krasis::DecodeService service(model_id, engine.get());
  return krasis::ServeUntilSignal(cl, {krasis::ServedService{&service, "krasis.v1.Decode"}});
}
