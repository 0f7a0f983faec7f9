// attention_bench: the prefill attention kernels alone on random data.
//
// 1. The causal softmax attention kernel (BF16 K/V, the path prefill takes),
// for the attention shapes of the supported models that matter most:
// DeepSeek-V2-Lite's MLA expanded (16 heads, qk 192, v 128) and Qwen3-Next's
// full attention (16 heads, 2 KV heads, 256 / 256), at start_pos 0:
//
//   shape | n | variant | ms | TFLOP/s | rel. diff vs the first variant run
//
// FLOPs = 2 * heads * (qk + v) * n (n + 1) / 2 (the causal triangle). Variants
// are LaunchCausalAttentionBf16KvVariant's: 0 what prefill runs, 2.. other
// tilings of the same kernel. (Variant 1, the first, synchronous
// FlashAttention-2 kernel, is gone: the double-buffered one measured 2.4-3.2x
// its speed on the H200.)
//
// 2. Gated DeltaNet's delta rule for one of Qwen3-Next's linear-attention
// layers (16 key heads, 32 value heads, 128 / 128), token by token
// (LaunchGdnRecurrence) and chunk by chunk (LaunchGdnChunked), from a zero state:
//
//   n | form | ms | Mtok/s | rel. diff of the output vs token by token
//
//   attention_bench [--n 4096,16384] [--variants 0,2,3,4,5] [--reps 10] [--only softmax|gdn]
#include <cuda_runtime.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "benchmarks/cuda_bench.h"
#include "common/cuda/prefill_kernels.h"
#include "common/dtype.h"

namespace {

struct Shape {
  const char* name;
  int64_t heads, kv_heads, dqk, dv;
};

using krasis::bench::ParseList;

double RelDiff(const std::vector<float>& got, const std::vector<float>& want) {
  double num = 0, den = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    if (std::isnan(got[i])) return NAN;
    num += (double(got[i]) - want[i]) * (double(got[i]) - want[i]);
    den += double(want[i]) * want[i];
  }
  return std::sqrt(num / den);
}

// The delta rule table (see the top).
void DeltaRuleTable(const std::vector<int>& ns, int reps) {
  krasis::cuda::GdnShape s;
  s.nk = 16, s.nv = 32, s.dk = 128, s.dv = 128, s.kernel = 4;
  const int64_t conv_dim = s.conv_dim();
  std::printf("\nGated DeltaNet delta rule, Qwen3-Next linear attention (%lld/%lld heads, %lld/%lld)\n",
              static_cast<long long>(s.nk), static_cast<long long>(s.nv), static_cast<long long>(s.dk),
              static_cast<long long>(s.dv));
  std::printf("%6s | %-14s | %8s | %7s | %s\n", "n", "form", "ms", "Mtok/s", "rel. diff vs token by token");
  std::mt19937 rng(7);
  std::normal_distribution<float> dist(0.0f, 1.0f);
  std::uniform_real_distribution<float> unit(0.0f, 1.0f);
  for (int n : ns) {
    s.n = n;
    s.stride = conv_dim;
    std::vector<float> mixed(size_t(n) * conv_dim), gates(size_t(n) * 2 * s.nv);
    for (float& x : mixed) x = dist(rng);
    for (int64_t t = 0; t < n; ++t) {
      for (int64_t h = 0; h < 2 * s.nk; ++h) {  // q and k unit vectors, q scaled, as LaunchGdnPrepare leaves them
        float* x = &mixed[size_t(t * conv_dim + h * s.dk)];
        double ss = 0;
        for (int64_t i = 0; i < s.dk; ++i) ss += double(x[i]) * x[i];
        const float inv = float(1.0 / std::sqrt(ss + 1e-6)) * (h < s.nk ? 1.0f / std::sqrt(float(s.dk)) : 1.0f);
        for (int64_t i = 0; i < s.dk; ++i) x[i] *= inv;
      }
      for (int64_t h = 0; h < s.nv; ++h) {
        gates[size_t(t * 2 * s.nv + h)] = unit(rng);
        gates[size_t(t * 2 * s.nv + s.nv + h)] = 0.9f + 0.1f * unit(rng);
      }
    }
    const size_t state_elems = size_t(s.nv * s.dk * s.dv), out_elems = size_t(n) * s.nv * s.dv;
    float *dmixed = nullptr, *dgates = nullptr, *dstate = nullptr, *dout = nullptr, *dscratch = nullptr;
    CHECK_CUDA(cudaMalloc(&dmixed, mixed.size() * 4));
    CHECK_CUDA(cudaMalloc(&dgates, gates.size() * 4));
    CHECK_CUDA(cudaMalloc(&dstate, state_elems * 4));
    CHECK_CUDA(cudaMalloc(&dout, out_elems * 4));
    CHECK_CUDA(cudaMalloc(&dscratch, size_t(krasis::cuda::GdnChunkedScratchFloats(s)) * 4));
    CHECK_CUDA(cudaMemcpy(dmixed, mixed.data(), mixed.size() * 4, cudaMemcpyHostToDevice));
    CHECK_CUDA(cudaMemcpy(dgates, gates.data(), gates.size() * 4, cudaMemcpyHostToDevice));
    std::vector<float> baseline;
    for (bool chunked : {false, true}) {
      auto run = [&] {
        CHECK_CUDA(cudaMemsetAsync(dstate, 0, state_elems * 4));
        return chunked ? krasis::cuda::LaunchGdnChunked(dmixed, dgates, s, dstate, dout, dscratch, nullptr)
                       : krasis::cuda::LaunchGdnRecurrence(dmixed, dgates, s, dstate, dout, nullptr);
      };
      const char* form = chunked ? "chunked (WY)" : "token by token";
      CHECK_CUDA(cudaMemset(dout, 0xff, out_elems * 4));
      if (auto status = run(); !status.ok()) {
        std::printf("%6d | %-14s | %s\n", n, form, std::string(status.message()).c_str());
        continue;
      }
      std::vector<float> got(out_elems);
      CHECK_CUDA(cudaMemcpy(got.data(), dout, out_elems * 4, cudaMemcpyDeviceToHost));
      if (baseline.empty()) baseline = got;
      cudaEvent_t start, stop;
      CHECK_CUDA(cudaEventCreate(&start));
      CHECK_CUDA(cudaEventCreate(&stop));
      CHECK_CUDA(cudaEventRecord(start));
      for (int r = 0; r < reps; ++r) (void)run();
      CHECK_CUDA(cudaEventRecord(stop));
      CHECK_CUDA(cudaEventSynchronize(stop));
      float ms = 0;
      CHECK_CUDA(cudaEventElapsedTime(&ms, start, stop));
      ms /= float(reps);
      std::printf("%6d | %-14s | %8.3f | %7.2f | %.2e\n", n, form, ms, n / (ms * 1e-3) / 1e6, RelDiff(got, baseline));
      std::fflush(stdout);
      CHECK_CUDA(cudaEventDestroy(start));
      CHECK_CUDA(cudaEventDestroy(stop));
    }
    for (float* p : {dmixed, dgates, dstate, dout, dscratch}) CHECK_CUDA(cudaFree(p));
  }
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<int> ns = {4096, 16384}, variants = {0, 2, 3, 4, 5};
  int reps = 10;
  std::string only;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (!std::strcmp(argv[i], "--n")) {
      ns = ParseList(argv[i + 1]);
    } else if (!std::strcmp(argv[i], "--variants")) {
      variants = ParseList(argv[i + 1]);
    } else if (!std::strcmp(argv[i], "--reps")) {
      reps = ParseList(argv[i + 1]).at(0);
    } else if (!std::strcmp(argv[i], "--only") && (!std::strcmp(argv[i + 1], "softmax") || !std::strcmp(argv[i + 1], "gdn"))) {
      only = argv[i + 1];
    } else {
      std::fprintf(stderr,
                   "usage: attention_bench [--n 4096,16384] [--variants 0,2,3,4,5] [--reps 10] [--only softmax|gdn]\n");
      return 2;
    }
  }
  cudaDeviceProp prop{};
  CHECK_CUDA(cudaGetDeviceProperties(&prop, 0));
  std::printf("device: %s, %d SMs\n\n", prop.name, prop.multiProcessorCount);
  if (only == "gdn") {
    DeltaRuleTable(ns, reps);
    return 0;
  }
  std::printf("%-22s | %6s | %7s | %8s | %7s | %s\n", "shape", "n", "variant", "ms", "TFLOP/s", "rel. diff vs first");
  const Shape shapes[] = {{"MLA 16/16 192/128", 16, 16, 192, 128}, {"Qwen3-Next 16/2 256/256", 16, 2, 256, 256}};
  std::mt19937 rng(42);
  std::normal_distribution<float> dist(0.0f, 1.0f);
  for (const Shape& sh : shapes) {
    for (int n : ns) {
      std::vector<float> q(size_t(n) * sh.heads * sh.dqk);
      std::vector<uint16_t> k(size_t(n) * sh.kv_heads * sh.dqk), v(size_t(n) * sh.kv_heads * sh.dv);
      for (float& x : q) x = dist(rng);
      for (uint16_t& x : k) x = krasis::FloatToBF16(dist(rng));
      for (uint16_t& x : v) x = krasis::FloatToBF16(dist(rng));
      float *dq = nullptr, *dout = nullptr;
      uint16_t *dk = nullptr, *dv = nullptr;
      const size_t out_elems = size_t(n) * sh.heads * sh.dv;
      CHECK_CUDA(cudaMalloc(&dq, q.size() * 4));
      CHECK_CUDA(cudaMalloc(&dk, k.size() * 2));
      CHECK_CUDA(cudaMalloc(&dv, v.size() * 2));
      CHECK_CUDA(cudaMalloc(&dout, out_elems * 4));
      CHECK_CUDA(cudaMemcpy(dq, q.data(), q.size() * 4, cudaMemcpyHostToDevice));
      CHECK_CUDA(cudaMemcpy(dk, k.data(), k.size() * 2, cudaMemcpyHostToDevice));
      CHECK_CUDA(cudaMemcpy(dv, v.data(), v.size() * 2, cudaMemcpyHostToDevice));
      krasis::cuda::AttentionShape s;
      s.n = n;
      s.heads = sh.heads;
      s.kv_heads = sh.kv_heads;
      s.head_dim = sh.dqk;
      s.v_dim = sh.dv;
      s.k_stride = sh.kv_heads * sh.dqk;
      s.v_stride = sh.kv_heads * sh.dv;
      s.scale = 1.0f / std::sqrt(float(sh.dqk));
      const double flops = 2.0 * sh.heads * double(sh.dqk + sh.dv) * double(n) * (double(n) + 1) / 2;
      std::vector<float> baseline;
      cudaEvent_t start, stop;
      CHECK_CUDA(cudaEventCreate(&start));
      CHECK_CUDA(cudaEventCreate(&stop));
      for (int variant : variants) {
        CHECK_CUDA(cudaMemset(dout, 0xff, out_elems * 4));  // NaN: a kernel that skips a row shows
        auto status = krasis::cuda::LaunchCausalAttentionBf16KvVariant(variant, dq, dk, dv, s, dout, nullptr);
        if (!status.ok()) {
          std::printf("%-22s | %6d | %7d | %s\n", sh.name, n, variant, std::string(status.message()).c_str());
          continue;
        }
        CHECK_CUDA(cudaDeviceSynchronize());
        std::vector<float> got(out_elems);
        CHECK_CUDA(cudaMemcpy(got.data(), dout, out_elems * 4, cudaMemcpyDeviceToHost));
        if (baseline.empty()) baseline = got;
        const double diff = baseline.empty() ? NAN : RelDiff(got, baseline);
        CHECK_CUDA(cudaEventRecord(start));
        for (int r = 0; r < reps; ++r) {
          (void)krasis::cuda::LaunchCausalAttentionBf16KvVariant(variant, dq, dk, dv, s, dout, nullptr);
        }
        CHECK_CUDA(cudaEventRecord(stop));
        CHECK_CUDA(cudaEventSynchronize(stop));
        float ms = 0;
        CHECK_CUDA(cudaEventElapsedTime(&ms, start, stop));
        ms /= float(reps);
        std::printf("%-22s | %6d | %7d | %8.3f | %7.1f | %.2e\n", sh.name, n, variant, ms, flops / (ms * 1e-3) / 1e12,
                    diff);
        std::fflush(stdout);
      }
      CHECK_CUDA(cudaEventDestroy(start));
      CHECK_CUDA(cudaEventDestroy(stop));
      CHECK_CUDA(cudaFree(dq));
      CHECK_CUDA(cudaFree(dk));
      CHECK_CUDA(cudaFree(dv));
      CHECK_CUDA(cudaFree(dout));
    }
  }
  if (only.empty()) DeltaRuleTable(ns, reps);
  return 0;
}
