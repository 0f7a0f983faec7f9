// expert_gemm_bench: the grouped expert GEMM (LaunchGroupedGemm) alone, on the
// routed-expert shapes of DeepSeek-V2-Lite (64 experts, top-6, hidden 2048,
// expert inter 1408) and Qwen3-Next (512 experts, top-10, hidden 2048, inter
// 512), for one prefill chunk of tokens routed uniformly at random, with BF16,
// INT8 and INT4 weights (group 128) and each form of the kernel (k step 32 or
// 64, warp tile 64 x 32 or 64 x 64 columns):
//
//   model | format | kernel | gate+up ms | down ms | dequant ms | TFLOP/s | cuBLAS dense TFLOP/s
//
// FLOPs = 2 * rows * (2 inter * hidden + hidden * inter), rows = tokens * top_k.
// "cuBLAS dense" is one BF16 GEMM of the same rows and the gate+up shape (what
// a single expert with every row would run at): the rate to aim for. Two more
// rows per format take the cuBLAS road instead: every expert's weights made
// BF16 first (LaunchDequantTiled for INT8 / INT4, timed apart as "dequant
// ms"), then one cublasGemmGroupedBatchedEx over all experts ("cuBLAS
// grouped") or one cublasGemmEx per expert ("cuBLAS per expert"); their
// TFLOP/s count the dequantization's time too. "planned" rows run what a
// prefill runs: the plan made on the card from the counts
// (LaunchGroupedGemmPlan, timed with the GEMMs), gate+up reading the tokens'
// rows through token_of_row and SiLU fused into its epilogue (BF16 act out,
// no float gate/up), in one launch or in four (a streamed layer's parts).
// Weight
// values are random bytes (any byte is a valid INT8 / INT4 code), which does
// not change the time; the kernel's results are checked by weight_kernels_test.
//
//   expert_gemm_bench [--tokens 4096] [--reps 10] [--steps 32,64] [--cols 32,64]
#include <cublas_v2.h>
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

// Mean ms of `body` (returning whether it worked) over `reps` runs after a
// warm-up, between events a and b; -1 when it fails.
template <typename F>
double TimedMs(int reps, cudaEvent_t a, cudaEvent_t b, F&& body) {
  double ms = 0;
  for (int r = 0; r <= reps; ++r) {
    CHECK_CUDA(cudaEventRecord(a));
    const bool ok = body();
    CHECK_CUDA(cudaEventRecord(b));
    CHECK_CUDA(cudaEventSynchronize(b));
    if (!ok) return -1.0;
    float t = 0;
    CHECK_CUDA(cudaEventElapsedTime(&t, a, b));
    if (r > 0) ms += t / reps;
  }
  return ms;
}

// The launch's status as TimedMs wants it: a failure ends the program with its message.
bool Ok(const absl::Status& st, const char* what) {
  if (st.ok()) return true;
  std::fprintf(stderr, "%s: %s\n", what, std::string(st.message()).c_str());
  std::exit(1);
}

#define CHECK_CUBLAS(x)                                  \
  do {                                                   \
    cublasStatus_t s_ = (x);                             \
    if (s_ != CUBLAS_STATUS_SUCCESS) {                   \
      std::fprintf(stderr, "%s: status %d\n", #x, s_); \
      std::exit(1);                                      \
    }                                                    \
  } while (0)

// The products of one layer's experts as plain GEMMs, for cuBLAS: problem i is
// y_i[rows, m] = x_i[rows, k] * W_i[m, k]^T (column-major: m x rows).
struct Problems {
  std::vector<int> m, n, k, lda, ldb, ldc;
  std::vector<const void*> a, b;
  std::vector<void*> c;
  void Add(int out, int rows, int in, const void* w, const void* x, int ldx, void* y, int ldy) {
    m.push_back(out), n.push_back(rows), k.push_back(in), lda.push_back(in), ldb.push_back(ldx), ldc.push_back(ldy);
    a.push_back(w), b.push_back(x), c.push_back(y);
  }
};

// Runs `p` through cuBLAS, grouped (one call, each problem its own group) or
// one cublasGemmEx each. False when cuBLAS refuses the types.
bool CublasProblems(cublasHandle_t h, const Problems& p, bool grouped, void** device_ptrs) {
  const int count = static_cast<int>(p.m.size());
  const float one = 1.0f, zero = 0.0f;
  if (!grouped) {
    for (int i = 0; i < count; ++i) {
      if (cublasGemmEx(h, CUBLAS_OP_T, CUBLAS_OP_N, p.m[i], p.n[i], p.k[i], &one, p.a[i], CUDA_R_16BF, p.lda[i], p.b[i],
                       CUDA_R_16BF, p.ldb[i], &zero, p.c[i], CUDA_R_32F, p.ldc[i], CUBLAS_COMPUTE_32F,
                       CUBLAS_GEMM_DEFAULT) != CUBLAS_STATUS_SUCCESS) {
        return false;
      }
    }
    return true;
  }
  std::vector<cublasOperation_t> ta(count, CUBLAS_OP_T), tb(count, CUBLAS_OP_N);
  std::vector<float> alpha(count, 1.0f), beta(count, 0.0f);
  std::vector<int> sizes(count, 1);
  void** a = device_ptrs;
  void** b = a + count;
  void** c = b + count;
  return cublasGemmGroupedBatchedEx(h, ta.data(), tb.data(), p.m.data(), p.n.data(), p.k.data(), alpha.data(), a,
                                    CUDA_R_16BF, p.lda.data(), b, CUDA_R_16BF, p.ldb.data(), beta.data(), c,
                                    CUDA_R_32F, p.ldc.data(), count, sizes.data(),
                                    CUBLAS_COMPUTE_32F) == CUBLAS_STATUS_SUCCESS;
}

// The layer through cuBLAS (see the top): BF16 weights (dequantized into one
// scratch when quantized), then grouped and per-expert rows.
void CublasRows(const Model& m, int quant, int64_t group, const std::vector<int32_t>& counts,
                const std::vector<int32_t>& offsets, const std::vector<krasis::cuda::ExpertGemmWeights>& gu,
                const std::vector<krasis::cuda::ExpertGemmWeights>& dn, void* x, void* act, float* gate_up,
                float* down, int reps, double flops, cudaEvent_t a, cudaEvent_t b) {
  const char* format = quant == 0 ? "BF16" : quant == 1 ? "INT8" : "INT4";
  const size_t experts = counts.size();
  const size_t mat = static_cast<size_t>(m.inter * m.hidden);  // elements of gate, up or down
  uint16_t* scratch = nullptr;
  std::vector<const void*> w(3 * experts);  // gate, up, down of expert e at 3e .. 3e + 2
  for (size_t e = 0; e < experts; ++e) w[3 * e] = gu[e].w0, w[3 * e + 1] = gu[e].w1, w[3 * e + 2] = dn[e].w0;
  if (quant != 0) {
    CHECK_CUDA(cudaMalloc(&scratch, 3 * experts * mat * sizeof(uint16_t)));
  }
  auto dequant = [&] {
    if (quant == 0) return;
    for (size_t e = 0; e < experts; ++e) {
      for (int j = 0; j < 3; ++j) {
        const auto& src = j == 2 ? dn[e] : gu[e];
        const void* data = j == 1 ? src.w1 : src.w0;
        const float* scales = j == 1 ? src.s1 : src.s0;
        const int64_t rows = j == 2 ? m.hidden : m.inter, cols = j == 2 ? m.inter : m.hidden;
        auto st = krasis::cuda::LaunchDequantTiled(quant == 2, static_cast<const uint8_t*>(data), scales, rows, cols,
                                                   group, false, scratch + (3 * e + j) * mat, nullptr);
        if (!st.ok()) {
          std::fprintf(stderr, "LaunchDequantTiled: %s\n", std::string(st.message()).c_str());
          std::exit(1);
        }
      }
    }
  };
  if (quant != 0) {
    for (size_t i = 0; i < w.size(); ++i) w[i] = scratch + i * mat;
  }
  Problems up, dw;
  const uint16_t* xs = static_cast<const uint16_t*>(x);
  const uint16_t* as = static_cast<const uint16_t*>(act);
  const int H = static_cast<int>(m.hidden), I = static_cast<int>(m.inter);
  for (size_t e = 0; e < experts; ++e) {
    if (counts[e] == 0) continue;
    const int64_t r0 = offsets[e];
    for (int j = 0; j < 2; ++j) up.Add(I, counts[e], H, w[3 * e + j], xs + r0 * H, H, gate_up + r0 * 2 * I + j * I, 2 * I);
    dw.Add(H, counts[e], I, w[3 * e + 2], as + r0 * I, I, down + r0 * H, H);
  }
  cublasHandle_t h = nullptr;
  CHECK_CUBLAS(cublasCreate(&h));
  // Device arrays of the problems' pointers, for the grouped call.
  std::vector<void*> ptrs[2];
  void* dptrs[2] = {nullptr, nullptr};
  for (int which = 0; which < 2; ++which) {
    const Problems& p = which == 0 ? up : dw;
    for (const void* q : p.a) ptrs[which].push_back(const_cast<void*>(q));
    for (const void* q : p.b) ptrs[which].push_back(const_cast<void*>(q));
    for (void* q : p.c) ptrs[which].push_back(q);
    dptrs[which] = Upload(ptrs[which].data(), ptrs[which].size() * sizeof(void*));
  }
  const double dequant_ms = TimedMs(reps, a, b, [&] { dequant(); return true; });
  for (bool grouped : {true, false}) {
    const char* kernel = grouped ? "cuBLAS grouped" : "cuBLAS per expert";
    double ms[2];
    for (int which = 0; which < 2; ++which) {
      ms[which] = TimedMs(reps, a, b, [&] {
        return CublasProblems(h, which == 0 ? up : dw, grouped, static_cast<void**>(dptrs[which]));
      });
    }
    if (ms[0] < 0 || ms[1] < 0) {
      std::printf("%-10s | %-6s | %-17s | refused by cuBLAS\n", m.name, format, kernel);
      continue;
    }
    std::printf("%-10s | %-6s | %-17s | %10.3f | %7.3f | %10.3f | %7.1f |\n", m.name, format, kernel, ms[0], ms[1],
                dequant_ms, flops / ((ms[0] + ms[1] + dequant_ms) * 1e-3) / 1e12);
  }
  CHECK_CUBLAS(cublasDestroy(h));
  for (void* p : dptrs) CHECK_CUDA(cudaFree(p));
  if (scratch != nullptr) CHECK_CUDA(cudaFree(scratch));
}

void Run(const Model& m, int64_t tokens, int reps, const std::vector<int>& steps, const std::vector<int>& cols,
         std::mt19937_64& rng) {
  // Uniform routing: each token picks top_k distinct experts.
  std::vector<int32_t> counts(static_cast<size_t>(m.experts), 0), offsets(counts.size());
  std::vector<int32_t> pick(counts.size());
  std::vector<std::vector<int32_t>> tokens_of(counts.size());
  for (int64_t t = 0; t < tokens; ++t) {
    for (size_t e = 0; e < pick.size(); ++e) pick[e] = static_cast<int32_t>(e);
    for (int64_t j = 0; j < m.top_k; ++j) {
      std::uniform_int_distribution<size_t> d(static_cast<size_t>(j), pick.size() - 1);
      std::swap(pick[static_cast<size_t>(j)], pick[d(rng)]);
      const size_t e = static_cast<size_t>(pick[static_cast<size_t>(j)]);
      ++counts[e];
      tokens_of[e].push_back(static_cast<int32_t>(t));
    }
  }
  int64_t rows = 0;
  std::vector<int32_t> token_of_row;
  for (size_t e = 0; e < counts.size(); ++e) {
    offsets[e] = static_cast<int32_t>(rows), rows += counts[e];
    token_of_row.insert(token_of_row.end(), tokens_of[e].begin(), tokens_of[e].end());
  }
  // The plan on the card (what a prefill runs): counts -> plan, and the tokens' rows read through token_of_row.
  void* x_tokens = RandomBf16(static_cast<size_t>(tokens * m.hidden), rng);
  void* d_token_of_row = Upload(token_of_row.data(), token_of_row.size() * sizeof(int32_t));
  void* d_counts = Upload(counts.data(), counts.size() * sizeof(int32_t));
  void* plan = nullptr;
  CHECK_CUDA(cudaMalloc(&plan, krasis::cuda::GroupedGemmPlanBytes(m.experts, rows)));
  void* act_out = nullptr;
  CHECK_CUDA(cudaMalloc(&act_out, static_cast<size_t>(rows * m.inter) * 2));
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
        std::printf("%-10s | %-6s | own %2dx%-2d         | not supported\n", m.name, format, step, wc);
        continue;
      }
      double ms[2];
      for (int which = 0; which < 2; ++which) {
        const auto& shape = which == 0 ? g : d;
        const auto* w = which == 0 ? gu.data() : dn.data();
        ms[which] = TimedMs(reps, a, b, [&] {
          return Ok(krasis::cuda::LaunchGroupedGemm(shape, counts.data(), offsets.data(), w, 0, m.experts, table,
                                                    table_bytes, nullptr),
                    "LaunchGroupedGemm");
        });
      }
      std::printf("%-10s | %-6s | own %2dx%-2d         | %10.3f | %7.3f | %10s | %7.1f | %7.1f\n", m.name, format, step,
                  wc, ms[0], ms[1], "-", flops / ((ms[0] + ms[1]) * 1e-3) / 1e12, dense.ok() ? *dense : 0.0);
      // Planned on the card, in 1 and in 4 launches (a streamed layer's parts), gate+up reading the tokens' rows.
      void* dgu = Upload(gu.data(), gu.size() * sizeof(gu[0]));
      void* ddn = Upload(dn.data(), dn.size() * sizeof(dn[0]));
      const bool a16g = krasis::cuda::GroupedGemmWeightsAligned16(gu.data(), 0, m.experts);
      const bool a16d = krasis::cuda::GroupedGemmWeightsAligned16(dn.data(), 0, m.experts);
      for (int parts : {1, 4}) {
        double pms[2];
        for (int which = 0; which < 2; ++which) {
          krasis::cuda::GroupedGemmShape shape = which == 0 ? g : d;
          if (which == 0) {  // as a prefill runs it: the tokens' rows in, SiLU fused where the shape allows
            shape.x = static_cast<const uint16_t*>(x_tokens);
            shape.silu_out = static_cast<uint16_t*>(act_out), shape.ld_silu = m.inter;
            if (!krasis::cuda::GroupedGemmTakes(shape, gu.data(), 0, m.experts)) shape.silu_out = nullptr;
          }
          pms[which] = TimedMs(reps, a, b, [&] {
            Ok(krasis::cuda::LaunchGroupedGemmPlan(static_cast<const int32_t*>(d_counts), m.experts, plan, nullptr,
                                                   nullptr),
               "LaunchGroupedGemmPlan");
            for (int q = 0; q < parts; ++q) {
              Ok(krasis::cuda::LaunchGroupedGemmPlanned(
                     shape, plan, m.experts, rows,
                     static_cast<const krasis::cuda::ExpertGemmWeights*>(which == 0 ? dgu : ddn),
                     which == 0 ? a16g : a16d, which == 0 ? static_cast<const int32_t*>(d_token_of_row) : nullptr,
                     m.experts * q / parts, m.experts * (q + 1) / parts, nullptr),
                 "LaunchGroupedGemmPlanned");
            }
            return true;
          });
        }
        std::printf("%-10s | %-6s | planned %dx%d, %d pt | %10.3f | %7.3f | %10s | %7.1f |\n", m.name, format, step, wc,
                    parts, pms[0], pms[1], "-", flops / ((pms[0] + pms[1]) * 1e-3) / 1e12);
      }
      CHECK_CUDA(cudaFree(dgu));
      CHECK_CUDA(cudaFree(ddn));
    }
    CublasRows(m, quant, group, counts, offsets, gu, dn, x, act, gate_up, down, reps, flops, a, b);
    for (void* p : owned) CHECK_CUDA(cudaFree(p));
  }
  CHECK_CUDA(cudaEventDestroy(a));
  CHECK_CUDA(cudaEventDestroy(b));
  for (void* p : {x, act, static_cast<void*>(gate_up), static_cast<void*>(down), table, x_tokens, d_token_of_row,
                  d_counts, plan, act_out}) {
    CHECK_CUDA(cudaFree(p));
  }
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
  std::printf("%-10s | %-6s | %-17s | %10s | %7s | %10s | %7s | %s\n", "model", "format", "kernel (own: step x cols)",
              "gate+up ms", "down ms", "dequant ms", "TFLOP/s", "cuBLAS dense TFLOP/s");
  std::mt19937_64 rng(11);
  const Model models[] = {{"DSV2-Lite", 64, 6, 2048, 1408}, {"Qwen3-Next", 512, 10, 2048, 512}};
  for (const Model& m : models) Run(m, tokens, reps, steps, cols, rng);
  return 0;
}
