// What the GPU can do, measured, for benchmarks' ceilings: pinned host-to-device
// copy bandwidth and the cuBLAS BF16 GEMM rate.
#pragma once

#include <cstddef>

#include "absl/status/statusor.h"

namespace krasis::cuda {

// GB/s (1e9 bytes) of cudaMemcpyAsync from pinned host memory, `bytes` a copy,
// best of a few.
absl::StatusOr<double> MeasurePinnedHostToDevice(size_t bytes = size_t{1} << 30);

// TFLOP/s of an m x n x k BF16 GEMM with fp32 accumulation, best of a few.
absl::StatusOr<double> MeasureBf16Gemm(int m = 8192, int n = 8192, int k = 8192);

}  // namespace krasis::cuda
