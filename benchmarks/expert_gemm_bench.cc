// expert_gemm_bench: the grouped expert GEMM (LaunchGroupedGemm) alone, on the
// routed-expert shapes of DeepSeek-V2-Lite (64 experts, top-6, hidden 2048,
// expert inter 1408) and Qwen3-Next (512 experts, top-10, hidden 2048, inter
// 512), for one prefill chunk of tokens routed uniformly at random, with BF16,
// INT8 and INT4 weights (group 128) and each form of the kernel (k step 32 or
// 64, warp tile 64 x 32 or 64 x 64 columns):
//
//   model | format | k step | warp cols | gate+up ms | down ms | TFLOP/s | cuBLAS dense TFLOP/s
//
// FLOPs = 2 * rows * (2 inter * hidden + hidden * inter), rows = tokens * top_k.
// "cuBLAS dense" is one BF16 GEMM of the same rows and the gate+up shape (what
// a single expert with every row would run at): the rate to aim for. Weight
// values are random bytes (any byte is a valid INT8 / INT4 code), which does
// not change the time; the kernel's results are checked by weight_kernels_test.
//
//   expert_gemm_bench [--tokens 4096] [--reps 10] [--steps 32,64] [--cols 32,64]
#include <cuda_runtime.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "benchmarks/cuda_bench.h"
#include "common/cuda/measure.h"
#include "common/cuda/prefill_kernels.h"

namespace {

struct Model {
  const char* name;
  int64_t experts, top_k, hidden, inter;
};

using krasis::bench::ParseList;

// A device copy of `bytes` host bytes.
void* Upload(const void* host, size_t bytes) {
  void* d = nullptr;
  CHECK_CUDA(cudaMalloc(&d, bytes));
  CHECK_CUDA(cudaMemcpy(d, host, bytes, cudaMemcpyHostToDevice));
  return d;
}

void* RandomDevice(size_t bytes, std::mt19937_64& rng) {
  std::vector<uint64_t> host((bytes + 7) / 8);
  for (auto& v : host) v = rng();
  return Upload(host.data(), host.size() * 8);
}

// BF16 values of magnitude 2^-7 .. 2^-6 (random bits would give NaN and huge values).
void* RandomBf16(size_t count, std::mt19937_64& rng) {
  std::vector<uint16_t> host(count);
  for (auto& v : host) v = static_cast<uint16_t>(0x3C00 + (rng() & 0x3FF)) | static_cast<uint16_t>((rng() & 1) << 15);
  return Upload(host.data(), count * 2);
}

void Run(const Model& m, int64_t tokens, int reps, const std::vector<int>& steps, const std::vector<int>& cols,
         std::mt19937_64& rng) {
  // Uniform routing: each token picks top_k distinct experts.
  std::vector<int32_t> counts(static_cast<size_t>(m.experts), 0), offsets(counts.size());
  std::vector<int32_t> pick(counts.size());
  for (int64_t t = 0; t < tokens; ++t) {
    for (size_t e = 0; e < pick.size(); ++e) pick[e] = static_cast<int32_t>(e);
    for (int64_t j = 0; j < m.top_k; ++j) {
      std::uniform_int_distribution<size_t> d(static_cast<size_t>(j), pick.size() - 1);
      std::swap(pick[static_cast<size_t>(j)], pick[d(rng)]);
      ++counts[static_cast<size_t>(pick[static_cast<size_t>(j)])];
    }
  }
  int64_t rows = 0;
  for (size_t e = 0; e < counts.size(); ++e) offsets[e] = static_cast<int32_t>(rows), rows += counts[e];
  const int64_t group = 128;
  void* x = RandomBf16(static_cast<size_t>(rows * m.hidden), rng);
  void* act = RandomBf16(static_cast<size_t>(rows * m.inter), rng);
  float *gate_up = nullptr, *down = nullptr;
  CHECK_CUDA(cudaMalloc(&gate_up, static_cast<size_t>(rows * 2 * m.inter) * sizeof(float)));
  CHECK_CUDA(cudaMalloc(&down, static_cast<size_t>(rows * m.hidden) * sizeof(float)));
  const size_t table_bytes = krasis::cuda::GroupedGemmTableBytes(m.experts, rows);
  void* table = nullptr;
  CHECK_CUDA(cudaMalloc(&table, table_bytes));
  const double flops = 2.0 * static_cast<double>(rows) * (3.0 * static_cast<double>(m.hidden * m.inter));
  auto dense = krasis::cuda::MeasureBf16Gemm(static_cast<int>(rows), static_cast<int>(2 * m.inter),
                                             static_cast<int>(m.hidden));
  cudaEvent_t a, b;
  CHECK_CUDA(cudaEventCreate(&a));
  CHECK_CUDA(cudaEventCreate(&b));
  for (int quant : {0, 1, 2}) {
    const char* format = quant == 0 ? "BF16" : quant == 1 ? "INT8" : "INT4";
    // Weights of every expert: gate, up [inter, hidden] and down [hidden, inter].
    std::vector<void*> owned;
    std::vector<krasis::cuda::ExpertGemmWeights> gu(counts.size()), dn(counts.size());
    auto matrix = [&](int64_t r, int64_t c, const void** data, const float** scales) {
      const size_t n = static_cast<size_t>(r * c);
      *data = quant == 0 ? RandomBf16(n, rng) : RandomDevice(quant == 1 ? n : n / 2, rng);
      owned.push_back(const_cast<void*>(*data));
      if (quant != 0) {
        std::vector<float> s(n / static_cast<size_t>(group), 0.01f);
        void* d = Upload(s.data(), s.size() * sizeof(float));
        owned.push_back(d);
        *scales = static_cast<const float*>(d);
      }
    };
    for (size_t e = 0; e < counts.size(); ++e) {
      matrix(m.inter, m.hidden, &gu[e].w0, &gu[e].s0);
      matrix(m.inter, m.hidden, &gu[e].w1, &gu[e].s1);
      matrix(m.hidden, m.inter, &dn[e].w0, &dn[e].s0);
    }
    for (int step : steps) for (int wc : cols) {
      krasis::cuda::GroupedGemmShape g;
      g.n = 2 * m.inter, g.k = m.hidden, g.n_split = m.inter, g.quant = quant, g.group = group, g.k_step = step;
      g.warp_cols = wc;
      g.x = static_cast<const uint16_t*>(x), g.ldx = m.hidden, g.y = gate_up, g.ldy = 2 * m.inter;
      krasis::cuda::GroupedGemmShape d = g;
      d.n = m.hidden, d.k = m.inter, d.n_split = m.hidden, d.x = static_cast<const uint16_t*>(act), d.ldx = m.inter;
      d.y = down, d.ldy = m.hidden;
      if (!krasis::cuda::GroupedGemmTakes(g, gu.data(), 0, m.experts) ||
          !krasis::cuda::GroupedGemmTakes(d, dn.data(), 0, m.experts)) {
        std::printf("%-10s | %-6s | %6d | %9d | not supported\n", m.name, format, step, wc);
        continue;
      }
      double ms[2] = {0, 0};
      for (int which = 0; which < 2; ++which) {
        const auto& shape = which == 0 ? g : d;
        const auto* w = which == 0 ? gu.data() : dn.data();
        for (int r = 0; r <= reps; ++r) {  // the first is a warm-up
          CHECK_CUDA(cudaEventRecord(a));
          auto st = krasis::cuda::LaunchGroupedGemm(shape, counts.data(), offsets.data(), w, 0, m.experts, table,
                                                    table_bytes, nullptr);
          CHECK_CUDA(cudaEventRecord(b));
          CHECK_CUDA(cudaEventSynchronize(b));
          if (!st.ok()) {
            std::fprintf(stderr, "LaunchGroupedGemm: %s\n", std::string(st.message()).c_str());
            std::exit(1);
          }
          float t = 0;
          CHECK_CUDA(cudaEventElapsedTime(&t, a, b));
          if (r > 0) ms[which] += t / reps;
        }
      }
      std::printf("%-10s | %-6s | %6d | %9d | %10.3f | %7.3f | %7.1f | %7.1f\n", m.name, format, step, wc, ms[0], ms[1],
                  flops / ((ms[0] + ms[1]) * 1e-3) / 1e12, dense.ok() ? *dense : 0.0);
    }
    for (void* p : owned) CHECK_CUDA(cudaFree(p));
  }
  CHECK_CUDA(cudaEventDestroy(a));
  CHECK_CUDA(cudaEventDestroy(b));
  for (void* p : {x, act, static_cast<void*>(gate_up), static_cast<void*>(down), table}) CHECK_CUDA(cudaFree(p));
}

}  // namespace

int main(int argc, char** argv) {
  int64_t tokens = 4096;
  int reps = 10;
  std::vector<int> steps = {32, 64}, cols = {32, 64};
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--tokens") == 0 && i + 1 < argc) {
      tokens = ParseList(argv[++i]).at(0);
    } else if (std::strcmp(argv[i], "--reps") == 0 && i + 1 < argc) {
      reps = ParseList(argv[++i]).at(0);
    } else if (std::strcmp(argv[i], "--steps") == 0 && i + 1 < argc) {
      steps = ParseList(argv[++i]);
    } else if (std::strcmp(argv[i], "--cols") == 0 && i + 1 < argc) {
      cols = ParseList(argv[++i]);
    } else {
      std::fprintf(stderr, "usage: expert_gemm_bench [--tokens 4096] [--reps 10] [--steps 32,64] [--cols 32,64]\n");
      return 2;
    }
  }
  if (tokens <= 0 || reps <= 0) {
    std::fprintf(stderr, "--tokens and --reps must be positive\n");
    return 2;
  }
  cudaDeviceProp prop{};
  CHECK_CUDA(cudaGetDeviceProperties(&prop, 0));
  std::printf("device: %s, %d SMs; %lld tokens per chunk, routing uniform at random\n\n", prop.name,
              prop.multiProcessorCount, static_cast<long long>(tokens));
  std::printf("%-10s | %-6s | %6s | %9s | %10s | %7s | %7s | %s\n", "model", "format", "k step", "warp cols",
              "gate+up ms", "down ms", "TFLOP/s", "cuBLAS dense TFLOP/s");
  std::mt19937_64 rng(11);
  const Model models[] = {{"DSV2-Lite", 64, 6, 2048, 1408}, {"Qwen3-Next", 512, 10, 2048, 512}};
  for (const Model& m : models) Run(m, tokens, reps, steps, cols, rng);
  return 0;
}
