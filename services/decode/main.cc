// krasis-decode: the decode worker. Loads a model, runs the continuous-batching
// engine on the CPU, and serves krasis.v1.Decode (plus health and reflection).
// Without --model it serves health only and answers RPCs FAILED_PRECONDITION.
#include <filesystem>
#include <fstream>
#include <tuple>

#include <nlohmann/json.hpp>

#include "common/logging.h"
#include "common/models/model.h"
#include "common/models/quantize_experts.h"
#include "services/decode/decode_service.h"
#include "services/loader/model_fetch.h"
#include "services/rpc/service_main.h"

namespace po = boost::program_options;

int main(int argc, char** argv) {
  krasis::ServiceCommandLine cl("decode", "decode worker: CPU token generation over a paged KV cache");
  std::string model_dir, model_id, experts = "bf16", cache_dir, gguf;
  std::string lm_head = "bf16", dense = "bf16", shared = "bf16", attention = "bf16", kv_dtype = "bf16";
  int64_t group_size = 128;
  krasis::EngineOptions options;
  int64_t budget_mb = 1024;
  cl.options().add_options()
      ("model", po::value(&model_dir), "model directory (config.json + safetensors)")
      ("model-id", po::value(&model_id), "name clients use for the model (default: folder name)")
      ("experts", po::value(&experts)->default_value(experts),
       "routed experts: bf16 (as stored), int8 or int4 (group-quantized, NUMA-placed, CPU kernels)")
      ("group-size", po::value(&group_size)->default_value(group_size), "quantization group size (int8/int4)")
      ("cache-dir", po::value(&cache_dir),
       "conversion cache root (e.g. ~/.krasis/cache): quantized experts are mapped from it, built there when "
       "missing or stale (krasis prepare builds them ahead); without it they are quantized in memory")
      ("attention", po::value(&attention)->default_value(attention),
       "token-mixer projections (GQA, MLA, Gated DeltaNet): bf16 (as stored), int8 or int4")
      ("lm-head", po::value(&lm_head)->default_value(lm_head), "lm_head: bf16 (as stored), int8 or int4")
      ("dense-mlp", po::value(&dense)->default_value(dense), "dense layers' MLP: bf16, int8 or int4")
      ("shared-experts", po::value(&shared)->default_value(shared), "shared experts: bf16, int8 or int4")
      ("gguf-experts", po::value(&gguf), "take the routed experts from this GGUF file (with --experts int8|int4)")
      ("block-size", po::value(&options.kv.block_size)->default_value(16), "KV block size in tokens")
      ("kv-budget-mb", po::value(&budget_mb)->default_value(budget_mb), "RAM for the KV cache, MiB")
      ("kv-cache-dtype", po::value(&kv_dtype)->default_value(kv_dtype), "what the KV cache stores: bf16, f16 or f32")
      ("max-batch", po::value(&options.max_batch)->default_value(32), "sequences per step")
      ("prefill-chunk", po::value(&options.prefill_chunk)->default_value(256),
       "prompt tokens per sequence per step");
  krasis::ModelSource source;
  krasis::AddModelSourceOptions(cl.options(), &source);
  if (auto code = cl.Parse(argc, argv)) return *code;
  if (!krasis::ResolveModelDirOrLog(source, model_id, &model_dir)) return 1;
  options.kv.budget_bytes = budget_mb << 20;
  if (auto dtype = krasis::ParseKvCacheDtype(kv_dtype); dtype.ok()) {
    options.kv.kv_dtype = *dtype;
  } else {
    KLOG_ERROR("{}", std::string(dtype.status().message()));
    return 2;
  }
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
    auto format = krasis::ParseExpertFormat(experts);
    if (!format) {
      KLOG_ERROR("--experts must be bf16, int8 or int4, not '{}'", experts);
      return 2;
    }
    if (*format != krasis::ExpertFormat::kBf16) {
      if (auto s = krasis::QuantizeExperts(**model, model_dir, *format, group_size, cache_dir, gguf); !s.ok()) {
        KLOG_ERROR("cannot quantize the experts: {}", s.ToString());
        return 1;
      }
      KLOG_INFO("experts quantized to {} (group size {}) on {} threads", experts, group_size,
                krasis::NumaThreadPool::Default().num_threads());
    }
    auto parsed_formats = krasis::ParseWeightFormats(attention, lm_head, dense, shared);
    if (!parsed_formats.ok()) {
      KLOG_ERROR("{}", std::string(parsed_formats.status().message()));
      return 2;
    }
    krasis::WeightFormats weight_formats = *parsed_formats;
    weight_formats.group_size = group_size;
    if (auto s = krasis::SetWeightFormats(**model, weight_formats); !s.ok()) {
      KLOG_ERROR("cannot quantize the weights: {}", s.ToString());
      return 1;
    }
    std::vector<int32_t> eos = krasis::EosTokenIds(model_dir, (*model)->config());
    KLOG_INFO("model {} ({}) loaded from {}", model_id,
              krasis::ArchitectureName((*model)->config().architecture), model_dir);
    engine = std::make_unique<krasis::DecodeEngine>(std::move(*model), options, std::move(eos));
  } else {
    KLOG_WARN("no --model given: serving health only");
  }
  krasis::DecodeService service(model_id, engine.get());
  return krasis::ServeUntilSignal(cl, {krasis::ServedService{&service, "krasis.v1.Decode"}});
}
