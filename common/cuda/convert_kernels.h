// GPU kernels that widen BF16 / F16 / F8-E4M3 arrays to float32. They are the
// first GPU building block (weights arrive as BF16 or FP8 and are dequantized on
// the card) and share their reference with the CPU: common/dtype.h. Launchers take
// the stream explicitly, never allocate, and return the launch status.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

#include "absl/status/status.h"
#include "common/dtype.h"

namespace krasis {

// out[i] = float(in[i]) for i < count; `in` holds `count` elements of `dtype`
// (kBF16, kF16 or kF8E4M3; anything else is an InvalidArgument error). Both
// pointers are device memory.
absl::Status LaunchWidenToFloat(DType dtype, const void* in, float* out, size_t count,
                                cudaStream_t stream);

}  // namespace krasis
