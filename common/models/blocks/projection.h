// A projection weight (GQA q/k/v/o, MLA's q/kv_a/o, Gated DeltaNet's in/out
// projections, lm_head): the checkpoint's tensor, optionally quantized to
// INT8/INT4 for decode (WeightFormats), then computed with the quantized
// kernels with its rows split over the pool.
#pragma once

#include <memory>
#include <span>

#include "absl/status/status.h"
#include "common/kernels/ops.h"
#include "common/models/weight_format.h"
#include "common/quant/expert_set.h"

namespace krasis {

struct Projection {
  TensorView weight;  // [out, in]
  TensorView bias;    // [out], optional (data == nullptr: none)
  std::shared_ptr<const quant::QuantizedMatrix> quantized;  // set by Quantize(int8|int4)
  NumaThreadPool* pool = nullptr;

  // Switches to `format` (bf16: the tensor as stored). `name` is for errors.
  absl::Status Quantize(ExpertFormat format, int64_t group_size, NumaThreadPool* pool, const char* name);
  // y[n, out] = x[n, in] W^T (+ bias).
  void Apply(const Ops& ops, const float* x, int64_t n, float* y) const;
};

// Several projections of the same x (q, k and v): quantized ones that share a
// group size in one pool dispatch, the rest one by one.
void ApplyAll(const Ops& ops, std::span<const Projection* const> projections, const float* x, int64_t n,
              std::span<float* const> ys);

}  // namespace krasis
