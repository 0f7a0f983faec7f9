// Fast CPU Ops for decode (and the CPU prefill path): the same contracts as the
// reference (reference.h), but with fp32 accumulation in SIMD registers
// (AVX-512, AVX2 or plain loops, chosen at run time like common/quant's
// kernels) and the rows of a matrix product split over a NumaThreadPool. Weights
// stay in their checkpoint dtype (BF16, F16, F32) and are widened in registers,
// so nothing is copied at load time.
//
// Results differ from the reference only by rounding (fp32 instead of double
// accumulation); tests/kernels/cpu_ops_test compares the two on random data.
#pragma once

#include <cstdint>
#include <optional>

#include "common/kernels/ops.h"
#include "common/quant/qgemm.h"
#include "common/threading/numa_pool.h"

namespace krasis {

class CpuOps final : public Ops {
 public:
  // pool: null uses NumaThreadPool::Default() (created on first use). isa:
  // the SIMD path (default quant::BestIsa(), which honours KRASIS_ISA).
  explicit CpuOps(NumaThreadPool* pool = nullptr, std::optional<quant::Isa> isa = std::nullopt);

  void MatMul(const float* x, int64_t n, const TensorView& w, float* y,
              const TensorView* bias = nullptr) const override;
  void HeadsMatMul(const float* x, int64_t n, int64_t heads, int64_t x_stride,
                   const std::function<TensorView(int64_t)>& w, float* y, int64_t y_stride) const override;
  void RmsNorm(const float* x, int64_t rows, int64_t dim, const TensorView& weight, float eps,
               bool zero_centred, float* out) const override;
  void SiluMul(const float* gate, const float* up, int64_t n, float* out) const override;
  void Attention(const AttentionArgs& args) const override;
  void ParallelFor(int64_t count, const std::function<void(int64_t, int64_t)>& fn) const override;

 private:
  NumaThreadPool& pool() const;
  NumaThreadPool* pool_;
  quant::Isa isa_;
};

// Bytes of BF16/F16/F32 weights read by CpuOps::MatMul since the process
// started (for benchmarks' bytes-per-token figures).
uint64_t DenseBytesRead();

namespace cpu {
// sum_i a[i] * b[i] in fp32 SIMD.
float Dot(const float* a, const float* b, int64_t n, quant::Isa isa = quant::BestIsa());
// The same with b stored as b_dtype (F32, BF16 or F16), widened as it is read.
float Dot(const float* a, const std::byte* b, DType b_dtype, int64_t n, quant::Isa isa = quant::BestIsa());
// y[i] += alpha * x[i] with x stored as x_dtype (F32, BF16 or F16).
void Axpy(float alpha, const std::byte* x, DType x_dtype, float* y, int64_t n, quant::Isa isa = quant::BestIsa());
// The index of the first largest of x[0, n), NaN skipped (0 when n is 0 or
// every value is NaN): a greedy choice over a vocabulary.
int64_t ArgMax(const float* x, int64_t n, quant::Isa isa = quant::BestIsa());
// out[i] = silu(gate[i]) * up[i] (up null: silu(gate[i])), with a vector e^x as
// accurate as std::exp to about an ulp; out may alias gate or up.
void SiluMul(const float* gate, const float* up, int64_t n, float* out, quant::Isa isa = quant::BestIsa());
// x[i] *= sigmoid(gate[i]).
void SigmoidMul(const float* gate, int64_t n, float* x, quant::Isa isa = quant::BestIsa());
// One token of the gated delta rule for one head, with state s [dk, dv]
// (row-major) updated in place: S *= decay; delta = (v - k^T S) * beta;
// S += k delta^T; o [dv] = q^T S. The state is read once and written once.
void GatedDeltaRule(const float* q, const float* k, const float* v, float beta, float decay, float* s, int64_t dk,
                    int64_t dv, float* o, quant::Isa isa = quant::BestIsa());
// x[i] = e^(x[i] - shift) in place (a vector e^x as accurate as std::exp to
// about an ulp); returns the sum of the new values.
float ExpSum(float* x, int64_t n, float shift, quant::Isa isa = quant::BestIsa());
// y[t, i] += bias[i] for rows t < n of `cols` values (nothing when bias.data is null).
void AddBias(const TensorView& bias, int64_t n, int64_t cols, float* y);
}  // namespace cpu

}  // namespace krasis
