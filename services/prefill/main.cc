// krasis-prefill: the prefill worker. Loads a model, serves krasis.v1.Prefill:
// computes uncached prompt tokens and streams their KV to a decode worker, on
// the CUDA backend when a GPU is present (else the CPU). --experts int4|int8
// takes the routed experts from the conversion cache (--cache-dir): the same
// files a decode worker of this host maps, so the page cache holds one copy.
// Without --model it serves health only and answers FAILED_PRECONDITION.
#include <filesystem>

#include "common/logging.h"
#include "common/models/gpu_placement.h"
#include "common/models/model.h"
#include "common/models/quantize_experts.h"
#include "services/prefill/prefill_service.h"
#include "services/loader/model_fetch.h"
#include "services/rpc/service_main.h"

namespace po = boost::program_options;

int main(int argc, char** argv) {
  krasis::ServiceCommandLine cl("prefill", "prefill worker: runs new prompt tokens and ships KV to a decode worker");
  std::string model_dir, model_id, backend = "auto", kv_dtype = "bf16", experts = "bf16", cache_dir,
      vram_budget, pinning = "register", cuda_devices, cuda_split = "layers";
  int cuda_device = 0;
  int64_t chunk = 512;
  cl.options().add_options()
      ("model", po::value(&model_dir), "model directory (config.json + safetensors)")
      ("model-id", po::value(&model_id), "name clients use for the model (default: folder name)")
      ("backend", po::value(&backend)->default_value(backend),
       "compute backend: auto (cuda when a GPU is present and the model's layers run there, else cpu), cpu or cuda")
      ("cuda-device", po::value(&cuda_device)->default_value(cuda_device), "CUDA device index (backend cuda)")
      ("cuda-devices", po::value(&cuda_devices),
       "several CUDA devices of this host, e.g. 0,1, sharing the model as --cuda-split says (NCCL; each card "
       "gets the --vram-budget)")
      ("cuda-split", po::value(&cuda_split)->default_value(cuda_split),
       "with --cuda-devices: layers (each card a slice of the layers, micro-chunks pipelined through them) or "
       "experts (each card a share of every layer's routed experts, partial outputs summed)")
      ("chunk-tokens", po::value(&chunk)->default_value(chunk), "prompt tokens per forward pass")
      ("kv-cache-dtype", po::value(&kv_dtype)->default_value(kv_dtype),
       "what the KV cache stores (and the KV sent to decode workers): bf16, f16 or f32")
      ("experts", po::value(&experts)->default_value(experts),
       "routed experts: bf16 (as stored), int8 or int4 (group-quantized; on the GPU dequantized before each GEMM)")
      ("cache-dir", po::value(&cache_dir),
       "conversion cache root (e.g. ~/.krasis/cache): quantized experts are mapped from it, built there when missing")
      ("vram-budget", po::value(&vram_budget),
       "GPU memory the cuda backend may use, e.g. 16G (default: what is free minus 1 GiB); routed experts that do "
       "not fit stream from host RAM")
      ("stream-pinning", po::value(&pinning)->default_value(pinning),
       "how streamed experts reach the GPU: register (pin the host pages in place) or ring (pinned buffers)");
  krasis::ModelSource source;
  krasis::AddModelSourceOptions(cl.options(), &source);
  if (auto code = cl.Parse(argc, argv)) return *code;
  if (!krasis::ResolveModelDirOrLog(source, model_id, &model_dir)) return 1;
  if (backend != "auto" && backend != "cpu" && backend != "cuda") {
    KLOG_ERROR("--backend {}: expected auto, cpu or cuda", backend);
    return 2;
  }
  auto kv = krasis::ParseKvCacheDtype(kv_dtype);
  if (!kv.ok()) {
    KLOG_ERROR("{}", std::string(kv.status().message()));
    return 2;
  }
  if (chunk < 1) {
    KLOG_ERROR("--chunk-tokens must be positive");
    return 2;
  }
  int64_t budget = 0;
  if (!vram_budget.empty()) {
    auto parsed = krasis::ParseByteSize(vram_budget, "--vram-budget");
    if (!parsed.ok()) {
      KLOG_ERROR("{}", std::string(parsed.status().message()));
      return 2;
    }
    budget = *parsed;
  }
  std::vector<int> devices;
  if (!cuda_devices.empty()) {
    auto parsed = krasis::ParseDeviceList(cuda_devices, "--cuda-devices");
    if (!parsed.ok()) {
      KLOG_ERROR("{}", std::string(parsed.status().message()));
      return 2;
    }
    devices = *parsed;
  }
  std::unique_ptr<krasis::PrefillEngine> engine;
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
    if (auto s = krasis::QuantizeExperts(**model, model_dir, *format, 128, cache_dir); !s.ok()) {
      KLOG_ERROR("cannot quantize the experts: {}", s.ToString());
      return 1;
    }
    std::string why;
    auto chosen = krasis::MakePrefillBackend(**model, {backend, cuda_device, budget, pinning, devices, cuda_split}, &why);
    if (!chosen.ok()) {
      KLOG_ERROR("cannot start the {} backend: {}", backend, std::string(chosen.status().message()));
      return 1;
    }
    KLOG_INFO("model {} loaded from {}; {}", model_id, model_dir, why);
    engine = std::make_unique<krasis::PrefillEngine>(std::move(*model), *kv, std::move(*chosen));
  } else {
    KLOG_WARN("no --model given: serving health only");
  }
  krasis::PrefillService service(model_id, engine.get(), chunk);
  return krasis::ServeUntilSignal(cl, {krasis::ServedService{&service, "krasis.v1.Prefill"}});
}
