// prefill_bench: GPU prefill of a model directory (a random checkpoint of a real
// shape, tools/make_random_checkpoint.py) at several prompt lengths, against
// the measured ceilings of the machine. Prints one table:
//
//   tokens | seconds | tokens/s | TFLOP | compute ceiling s | % of ceiling | upload GB | PCIe ceiling s
//
// compute ceiling = the prompt's FLOPs (projections, experts actually routed to
// on average: top-k per token, attention over the causal triangle, MLA's
// re-expansion of the latents per chunk) / the measured cuBLAS BF16 GEMM rate.
// PCIe ceiling = the routed-expert bytes streamed over the prompt (every
// streamed layer's experts once per chunk) / the measured pinned host-to-device
// rate; 0 with everything resident. The ratio is against the lower of the two
// ceilings (the larger time).
//
//   prefill_bench --model DIR [--tokens 512,4096,16384] [--chunk 4096] [--precision bf16|f32]
//                 [--experts bf16|int8|int4 [--cache-dir DIR]] [--vram-budget 16G | --budget-expert-fraction 0.333]
//                 [--pinning register|ring] [--profile [--profile-steps]]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include <boost/program_options.hpp>

#include "common/cuda/cuda_model.h"
#include "common/cuda/measure.h"
#include "common/models/gpu_placement.h"
#include "common/models/model.h"
#include "common/models/quantize_experts.h"

namespace po = boost::program_options;
using krasis::DType;

namespace {

// FLOPs of one token through every layer's projections and experts (no
// attention scores, no lm_head), and per-layer attention terms.
struct FlopModel {
  double per_token = 0;            // weights x 2
  double attention_per_pair = 0;   // 2 * heads * (qk + v), summed over layers, per (query, key) pair
  double mla_expand_per_pos = 0;   // kv_b re-expansion per cached position per chunk
  double lm_head = 0;
};

FlopModel CountFlops(const krasis::DecoderModel& model) {
  FlopModel f;
  const double hidden = static_cast<double>(model.config().hidden_size);
  for (const auto& layer : model.layers) {
    auto mixer = layer.mixer->Describe();
    if (mixer && mixer->kind == krasis::MixerDesc::Kind::kGqa) {
      const auto& g = mixer->gqa;
      const double q = double(g.heads * g.head_dim), kv = double(g.kv_heads * g.head_dim);
      f.per_token += 2 * hidden * (q * (g.output_gate ? 2 : 1) + 2 * kv) + 2 * q * hidden;
      f.attention_per_pair += 2.0 * g.heads * (2 * g.head_dim);
    } else if (mixer && mixer->kind == krasis::MixerDesc::Kind::kGatedDeltaNet) {
      const auto& g = mixer->gdn;
      const double value_dim = double(g.nv * g.dv), proj = double(2 * g.nk * g.dk) + 2 * value_dim + 2.0 * g.nv;
      // Projections, and per token and value head about 8 dk dv for the delta rule.
      f.per_token += 2 * hidden * proj + 2 * value_dim * hidden + 8.0 * g.nv * g.dk * g.dv;
    } else if (mixer && mixer->kind == krasis::MixerDesc::Kind::kMla) {
      const auto& m = mixer->mla;
      const double qk = double(m.nope + m.rope_dim), kva = double(m.kv_lora + m.rope_dim);
      f.per_token += 2 * hidden * ((m.q_lora > 0 ? m.q_lora : m.heads * qk) + kva) +
                     (m.q_lora > 0 ? 2.0 * m.q_lora * m.heads * qk : 0.0) + 2.0 * m.heads * m.v_dim * hidden;
      f.attention_per_pair += 2.0 * m.heads * (qk + m.v_dim);
      f.mla_expand_per_pos += 2.0 * m.kv_lora * m.heads * (m.nope + m.v_dim);
    }
    auto ffn = layer.ffn->Describe();
    if (!ffn) continue;
    if (ffn->kind == krasis::FfnDesc::Kind::kDense) {
      f.per_token += 6 * hidden * ffn->dense.inter;
    } else {
      const double inter = ffn->experts.empty() ? 0 : double(ffn->experts[0].inter);
      f.per_token += 6 * hidden * inter * ffn->router.top_k + 6 * hidden * ffn->shared.inter +
                     2 * hidden * ffn->router.num_experts;
    }
  }
  f.lm_head = 2 * hidden * model.config().vocab_size;
  return f;
}

}  // namespace

int main(int argc, char** argv) {
  std::string model_dir, tokens_arg = "512,4096,16384", precision = "bf16", experts = "bf16", cache_dir, budget_arg,
      pinning = "register", devices_arg, split = "layers";
  double budget_fraction = 0;
  bool profile = false, profile_steps = false, per_expert = false, chunked_delta_rule = false;
  int64_t chunk = 4096, micro_chunk = 0;
  po::options_description desc("prefill_bench options");
  desc.add_options()("help,h", "print this help")("model", po::value(&model_dir)->required(), "model directory")(
      "tokens", po::value(&tokens_arg)->default_value(tokens_arg), "prompt lengths, comma separated")(
      "chunk", po::value(&chunk)->default_value(chunk), "tokens per forward pass")(
      "precision", po::value(&precision)->default_value(precision), "bf16 or f32 (the checking mode)")(
      "profile", po::bool_switch(&profile), "also print where each prompt's time went (adds a sync per stage)")(
      "profile-steps", po::bool_switch(&profile_steps),
      "with --profile: also the steps inside each stage (a sync per GEMM or kernel, so slower)")(
      "per-expert-gemm", po::bool_switch(&per_expert),
      "one cuBLAS GEMM per routed expert instead of the grouped expert GEMM (for comparison)")(
      "chunked-delta-rule", po::bool_switch(&chunked_delta_rule),
      "Gated DeltaNet's delta rule chunk by chunk (WY form) instead of token by token")(
      "experts", po::value(&experts)->default_value(experts), "routed experts: bf16 (as stored), int8 or int4")(
      "cache-dir", po::value(&cache_dir), "conversion cache root for int8/int4 experts (default: quantize in memory)")(
      "vram-budget", po::value(&budget_arg), "GPU memory budget, e.g. 10G (default: free minus 1 GiB)")(
      "budget-expert-fraction", po::value(&budget_fraction),
      "budget = this fraction of the model's BF16 routed-expert bytes (e.g. 0.333)")(
      "pinning", po::value(&pinning)->default_value(pinning), "streamed experts: register or ring")(
      "devices", po::value(&devices_arg), "several CUDA devices, e.g. 0,1, sharing the model as --split says (NCCL); "
      "each gets the VRAM budget")(
      "split", po::value(&split)->default_value(split),
      "several cards: layers (a pipeline of micro-chunks; each forward pass gets 16 chunks' tokens) or experts")(
      "micro-chunk", po::value(&micro_chunk)->default_value(micro_chunk),
      "split by layers: tokens per micro-chunk (0: 2048, at most --chunk; --chunk when experts stream)");
  po::variables_map vm;
  try {
    po::store(po::parse_command_line(argc, argv, desc), vm);
    if (vm.count("help")) {
      std::cout << desc << "\n";
      return 0;
    }
    po::notify(vm);
  } catch (const po::error& e) {
    std::cerr << "prefill_bench: " << e.what() << "\n";
    return 2;
  }
  std::vector<int64_t> lengths;
  for (size_t at = 0; at < tokens_arg.size();) {
    size_t end = tokens_arg.find(',', at);
    if (end == std::string::npos) end = tokens_arg.size();
    lengths.push_back(std::stoll(tokens_arg.substr(at, end - at)));
    at = end + 1;
  }

  std::vector<int> devices;
  if (!devices_arg.empty()) {
    auto d = krasis::ParseDeviceList(devices_arg, "--devices");
    if (!d.ok()) {
      std::cerr << d.status().message() << "\n";
      return 2;
    }
    devices = *d;
  }
  int64_t budget_bytes = 0;
  if (!budget_arg.empty()) {
    auto b = krasis::ParseByteSize(budget_arg, "--vram-budget");
    if (!b.ok()) {
      std::cerr << b.status().message() << "\n";
      return 2;
    }
    budget_bytes = *b;
  }

  auto t0 = std::chrono::steady_clock::now();
  auto model = krasis::LoadModel(model_dir);
  if (!model.ok()) {
    std::cerr << "cannot load " << model_dir << ": " << model.status() << "\n";
    return 1;
  }
  krasis::CudaBackendOptions options;
  options.precision = precision == "f32" ? krasis::CudaBackendOptions::Precision::kF32
                                         : krasis::CudaBackendOptions::Precision::kBf16;
  options.profile = profile;
  options.profile_steps = profile_steps;
  options.plan_chunk_tokens = chunk;
  options.plan_context_tokens = *std::max_element(lengths.begin(), lengths.end());
  options.pinning = pinning == "ring" ? krasis::cuda::Pinning::kRing : krasis::cuda::Pinning::kRegister;
  options.devices = devices;
  if (split != "layers" && split != "experts") {
    std::cerr << "prefill_bench: --split must be layers or experts\n";
    return 2;
  }
  options.split = split == "layers" ? krasis::CudaBackendOptions::Split::kLayers
                                    : krasis::CudaBackendOptions::Split::kExperts;
  options.micro_chunk_tokens = micro_chunk;
  options.grouped_experts = !per_expert;
  options.chunked_delta_rule = chunked_delta_rule;
  int64_t bf16_expert_bytes = 0;
  for (const auto& l : krasis::GpuLayerSizes(**model)) bf16_expert_bytes += l.experts;
  if (budget_fraction > 0) options.vram_budget_bytes = static_cast<int64_t>(budget_fraction * bf16_expert_bytes);
  if (budget_bytes > 0) options.vram_budget_bytes = budget_bytes;
  auto format = krasis::ParseExpertFormat(experts);
  if (!format) {
    std::cerr << "prefill_bench: --experts must be bf16, int8 or int4\n";
    return 2;
  }
  if (*format != krasis::ExpertFormat::kBf16) {
    const auto q0 = std::chrono::steady_clock::now();
    if (auto st = krasis::QuantizeExperts(**model, model_dir, *format, 128, cache_dir); !st.ok()) {
      std::cerr << "cannot quantize the experts: " << st << "\n";
      return 1;
    }
    std::printf("experts %s ready in %.1f s\n", experts.c_str(),
                std::chrono::duration<double>(std::chrono::steady_clock::now() - q0).count());
  }
  t0 = std::chrono::steady_clock::now();
  krasis::CudaBackendInfo info;
  auto backend = krasis::MakeCudaPrefillBackend(**model, options, &info);
  if (!backend.ok()) {
    std::cerr << "cannot start the CUDA backend: " << backend.status() << "\n";
    return 1;
  }
  const double load_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  auto h2d = krasis::cuda::MeasurePinnedHostToDevice();
  auto gemm = krasis::cuda::MeasureBf16Gemm();
  if (!h2d.ok() || !gemm.ok()) {
    std::cerr << "cannot measure the GPU: " << (h2d.ok() ? gemm.status() : h2d.status()) << "\n";
    return 1;
  }
  const FlopModel flops = CountFlops(**model);
  const double gb = 1e9;
  std::printf("model %s: %zu layers, uploaded in %.1f s (%s); routed experts %s: BF16 size %.2f GB\n",
              model_dir.c_str(), (*model)->layers.size(), load_s, precision.c_str(), info.expert_format.c_str(),
              bf16_expert_bytes / gb);
  std::printf("%d card(s)%s, VRAM budget %.2f GB each: %d of %d MoE layers' experts resident (%.2f GB), %d streamed "
              "(%.2f GB per chunk, all cards, in %d part(s) per layer; staging %.2f GB, pinning %s); grouped expert GEMM in %d "
              "layers\n",
              info.cards, info.split.empty() ? "" : (" split by " + info.split).c_str(), info.budget_bytes / gb, info.moe_layers - info.streamed_layers, info.moe_layers,
              info.resident_expert_bytes / gb, info.streamed_layers, info.streamed_expert_bytes / gb,
              info.stream_parts, info.staging_bytes / gb, info.streamed_layers > 0 ? info.pinning.c_str() : "-", info.grouped_layers);
  std::printf("measured: pinned host->device %.1f GB/s, BF16 GEMM %.0f TFLOP/s; chunk %lld tokens%s, KV cache BF16\n\n",
              *h2d, *gemm, static_cast<long long>(chunk),
              info.split == "layers" ? " (pipeline micro-chunks; forward passes of 16 chunks)" : "");
  std::printf("%8s | %8s | %9s | %7s | %12s | %9s | %11s | %8s\n", "tokens", "seconds", "tokens/s", "TFLOP",
              "compute ceil", "stream GB", "PCIe ceil", "% lower");

  const int64_t vocab = (*model)->config().vocab_size;
  std::mt19937 rng(7);
  std::uniform_int_distribution<int32_t> pick(0, static_cast<int32_t>(vocab - 1));
  // A warm-up of one chunk (cuBLAS kernels for the chunk's shapes load lazily; workspace growth).
  std::vector<int64_t> runs = {std::min<int64_t>(chunk, *std::max_element(lengths.begin(), lengths.end()))};
  runs.insert(runs.end(), lengths.begin(), lengths.end());
  for (size_t r = 0; r < runs.size(); ++r) {
    const int64_t n = runs[r];
    std::vector<int32_t> prompt(static_cast<size_t>(n));
    for (auto& t : prompt) t = pick(rng);
    auto cache = (*model)->MakeCache((n + 15) / 16, 16, DType::kBF16);
    krasis::SequenceState seq;
    (*model)->InitSequence(seq);
    // passes: how many times the streamed experts cross (once per chunk, or
    // per micro-chunk of a pipeline split by layers); expand: MLA's re-expanded positions.
    double expand = 0, passes = 0;
    const int64_t forward = (*backend)->ForwardTokens(chunk);
    auto start = std::chrono::steady_clock::now();
    absl::Status s = (*backend)->Begin(seq, *cache, n);
    std::vector<float> logits;
    for (int64_t first = 0; s.ok() && first < n; first += forward) {
      const int64_t count = std::min(forward, n - first);
      const std::vector<int64_t> steps =
          info.split == "layers" ? krasis::PipelineMicroChunks(count, chunk, micro_chunk, info.streamed_layers > 0)
                                 : std::vector<int64_t>{count};
      for (int64_t at = first; const int64_t step : steps) {
        at += step;
        expand += static_cast<double>(at);
        passes += 1;
      }
      s = (*backend)->Forward(std::span(prompt).subspan(first, count), seq, *cache,
                              first + count == n ? &logits : nullptr, false, nullptr);
    }
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    if (!s.ok()) {
      std::printf("%8lld | failed: %s\n", static_cast<long long>(n), std::string(s.message()).c_str());
      continue;
    }
    const auto stages = (*backend)->TakeProfile();
    if (r == 0) continue;  // the warm-up
    const double total = flops.per_token * n + flops.attention_per_pair * (double(n) * (n + 1) / 2) +
                         flops.mla_expand_per_pos * expand + flops.lm_head;
    const double ceiling = total / (*gemm * 1e12);
    const double streamed = passes * static_cast<double>(info.streamed_expert_bytes);
    // Each card streams its share over its own link (h2d measured on the first card).
    const double pcie = streamed / info.cards / (*h2d * 1e9);
    std::printf("%8lld | %8.3f | %9.0f | %7.2f | %10.3f s | %9.2f | %9.3f s | %7.1f%%\n", static_cast<long long>(n),
                secs, n / secs, total / 1e12, ceiling, streamed / gb, pcie, 100.0 * std::max(ceiling, pcie) / secs);
    if (profile) {
      std::printf("         |  ms:");
      for (const auto& [name, ms] : stages) {
        // Stages first, then (--profile-steps) their steps as "stage.step", on lines of their own.
        if (name.find('.') != std::string::npos) std::printf("\n         |     ");
        std::printf(" %s %.1f", name.c_str(), ms);
      }
      std::printf("\n");
    }
  }
  return 0;
}
