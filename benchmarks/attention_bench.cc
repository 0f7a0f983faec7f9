// attention_bench: the causal prefill attention kernel alone (BF16 K/V, the
// path prefill takes) on random data, for the attention shapes of the
// supported models that matter most: DeepSeek-V2-Lite's MLA expanded
// (16 heads, qk 192, v 128) and Qwen3-Next's full attention (16 heads, 2 KV
// heads, 256 / 256), at start_pos 0. Prints one table:
//
//   shape | n | variant | ms | TFLOP/s | rel. diff vs the first variant run
//
// FLOPs = 2 * heads * (qk + v) * n (n + 1) / 2 (the causal triangle). Variants
// are LaunchCausalAttentionBf16KvVariant's: 0 what prefill runs, 2.. other
// tilings of the same kernel. (Variant 1, the first, synchronous
// FlashAttention-2 kernel, is gone: the double-buffered one measured 2.4-3.2x
// its speed on the H200.)
//
//   attention_bench [--n 4096,16384] [--variants 0,2,3,4,5] [--reps 10]
#include <cuda_runtime.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "common/cuda/prefill_kernels.h"
#include "common/dtype.h"

namespace {

#define CHECK_CUDA(x)                                                                    \
  do {                                                                                   \
    cudaError_t e_ = (x);                                                                \
    if (e_ != cudaSuccess) {                                                             \
      std::fprintf(stderr, "%s: %s\n", #x, cudaGetErrorString(e_));                      \
      std::exit(1);                                                                      \
    }                                                                                    \
  } while (0)

struct Shape {
  const char* name;
  int64_t heads, kv_heads, dqk, dv;
};

std::vector<int> ParseList(const char* arg) {
  std::vector<int> out;
  for (absl::string_view part : absl::StrSplit(arg, ',', absl::SkipEmpty())) {
    int x = 0;
    if (!absl::SimpleAtoi(part, &x)) {
      std::fprintf(stderr, "not a number: %s\n", std::string(part).c_str());
      std::exit(2);
    }
    out.push_back(x);
  }
  return out;
}

double RelDiff(const std::vector<float>& got, const std::vector<float>& want) {
  double num = 0, den = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    if (std::isnan(got[i])) return NAN;
    num += (double(got[i]) - want[i]) * (double(got[i]) - want[i]);
    den += double(want[i]) * want[i];
  }
  return std::sqrt(num / den);
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<int> ns = {4096, 16384}, variants = {0, 2, 3, 4, 5};
  int reps = 10;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (!std::strcmp(argv[i], "--n")) {
      ns = ParseList(argv[i + 1]);
    } else if (!std::strcmp(argv[i], "--variants")) {
      variants = ParseList(argv[i + 1]);
    } else if (!std::strcmp(argv[i], "--reps")) {
      reps = ParseList(argv[i + 1]).at(0);
    } else {
      std::fprintf(stderr, "usage: attention_bench [--n 4096,16384] [--variants 0,2,3,4,5] [--reps 10]\n");
      return 2;
    }
  }
  cudaDeviceProp prop{};
  CHECK_CUDA(cudaGetDeviceProperties(&prop, 0));
  std::printf("device: %s, %d SMs\n\n", prop.name, prop.multiProcessorCount);
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
  return 0;
}
