// The operations model blocks call for their heavy work, behind one interface so
// that a faster backend (AVX-512/AMX CPU kernels, CUDA) can replace them one at a
// time while the reference stays available for tests. ReferenceOps forwards to
// the plain loops in reference.h.
#pragma once

#include <cstdint>
#include <functional>

#include "common/kernels/attention_args.h"
#include "common/kernels/reference.h"
#include "common/tensor.h"

namespace krasis {

class Ops {
 public:
  virtual ~Ops() = default;
  // y[n, out] = x[n, in] @ w[out, in]^T (+ bias).
  virtual void MatMul(const float* x, int64_t n, const TensorView& w, float* y,
                      const TensorView* bias = nullptr) const = 0;
  // y[i, h, :out] = w(h) x[i, h, :in] for tokens i < n and heads h < heads:
  // every head its own [out, in] matrix (MLA's absorbed per-head products).
  // Token i's head h is read at x + (i * heads + h) * x_stride and written at
  // y + (i * heads + h) * y_stride.
  virtual void HeadsMatMul(const float* x, int64_t n, int64_t heads, int64_t x_stride,
                           const std::function<TensorView(int64_t)>& w, float* y, int64_t y_stride) const = 0;
  virtual void RmsNorm(const float* x, int64_t rows, int64_t dim, const TensorView& weight,
                       float eps, bool zero_centred, float* out) const = 0;
  virtual void SiluMul(const float* gate, const float* up, int64_t n, float* out) const = 0;
  virtual void Attention(const AttentionArgs& args) const = 0;
  // Calls fn(begin, end) over disjoint non-empty ranges covering [0, count), possibly in
  // parallel; Ops called from inside fn run on the calling thread.
  virtual void ParallelFor(int64_t count, const std::function<void(int64_t, int64_t)>& fn) const = 0;
};

class ReferenceOps final : public Ops {
 public:
  void MatMul(const float* x, int64_t n, const TensorView& w, float* y,
              const TensorView* bias) const override {
    ref::MatMul(x, n, w, y, bias);
  }
  void HeadsMatMul(const float* x, int64_t n, int64_t heads, int64_t x_stride,
                   const std::function<TensorView(int64_t)>& w, float* y, int64_t y_stride) const override {
    ref::HeadsMatMul(x, n, heads, x_stride, w, y, y_stride);
  }
  void RmsNorm(const float* x, int64_t rows, int64_t dim, const TensorView& weight, float eps,
               bool zero_centred, float* out) const override {
    ref::RmsNorm(x, rows, dim, weight, eps, zero_centred, out);
  }
  void SiluMul(const float* gate, const float* up, int64_t n, float* out) const override {
    ref::SiluMul(gate, up, n, out);
  }
  void Attention(const AttentionArgs& args) const override { ref::Attention(args); }
  void ParallelFor(int64_t count, const std::function<void(int64_t, int64_t)>& fn) const override {
    if (count > 0) fn(0, count);
  }
};

// The process-wide default: CpuOps (common/kernels/cpu_ops.h) on the default
// pool. Tests that need the exact reference pass a ReferenceOps.
const Ops& DefaultOps();

}  // namespace krasis
