// Group quantization of weights (into the layout of quant_format.h) and of
// activations (per token, per group, symmetric INT8), plus dequantization for
// references and tests.
#pragma once

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "common/quant/quant_format.h"
#include "common/tensor.h"

namespace krasis::quant {

// Quantizes a [rows, cols] matrix (float32, BF16, F16 or F8 view, or float
// pointer) with the group size ChooseGroupSize(cols, group_size). Errors name
// `what` (e.g. the tensor): a rank other than 2, cols without a usable group size.
absl::StatusOr<QuantizedMatrix> QuantizeMatrix(const TensorView& w, QuantFormat format, int64_t group_size,
                                               std::string_view what = "matrix");
absl::StatusOr<QuantizedMatrix> QuantizeMatrix(const float* w, int64_t rows, int64_t cols, QuantFormat format,
                                               int64_t group_size, std::string_view what = "matrix");

// The float matrix the codes stand for ([rows, cols], row-major).
std::vector<float> DequantizeMatrix(const QuantizedMatrix& m);

// n tokens of activations quantized for a matrix with `cols` inputs and groups
// of `group_size`: q[n, cols] INT8 codes, scale[n, groups], sum[n, groups] (the
// sum of each group's codes, for the kernels' offset correction).
struct QuantizedActivations {
  int64_t n = 0, cols = 0, group_size = 0;
  std::vector<int8_t> q;
  std::vector<float> scale;
  std::vector<int32_t> sum;
  int64_t groups() const { return cols / group_size; }
};

// simd = false: the scalar loop only (the SIMD path must match it exactly; for tests).
void QuantizeActivations(const float* x, int64_t n, int64_t cols, int64_t group_size, QuantizedActivations* out,
                         bool simd = true);

}  // namespace krasis::quant
