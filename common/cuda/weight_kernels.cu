// Expert weights from their stored form to the GEMM's input form (see
// prefill_kernels.h): dense BF16/F16/F32 conversion, and dequantization of the
// CPU experts' tile-interleaved INT4/INT8 layout (common/quant/quant_format.h).
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>
#include <cstdint>

#include "common/cuda/cuda_check.h"
#include "common/cuda/launch.cuh"
#include "common/cuda/prefill_kernels.h"
#include "common/status.h"

namespace krasis::cuda {
namespace {

constexpr int kTileRows = 16;  // quant_format.h's kTileRows

__device__ inline float LoadAs(DType t, const void* src, int64_t i) {
  if (t == DType::kBF16) return __bfloat162float(static_cast<const __nv_bfloat16*>(src)[i]);
  if (t == DType::kF16) return __half2float(static_cast<const __half*>(src)[i]);
  return static_cast<const float*>(src)[i];
}

__device__ inline void StoreAs(bool out_f32, void* out, int64_t i, float v) {
  if (out_f32) {
    static_cast<float*>(out)[i] = v;
  } else {
    static_cast<__nv_bfloat16*>(out)[i] = __float2bfloat16_rn(v);
  }
}

__global__ void MaterializeDenseKernel(DType t, const void* src, int64_t count, bool out_f32, void* out) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < count;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    StoreAs(out_f32, out, i, LoadAs(t, src, i));
  }
}

// One thread per 4-byte word of codes: a row's 8 (INT4) or 4 (INT8)
// consecutive columns, which the layout keeps in one aligned word (quant_format.h);
// rows run along gridDim.y, words along x, 32-bit index math only.
template <bool kInt4, bool kOutF32>
__global__ void DequantTiledKernel(const uint8_t* data, const float* scales, int rows, int cols, int group,
                                   void* out) {
  constexpr int kPer = kInt4 ? 8 : 4;  // columns per word
  const int words = cols / kPer, groups = cols / group, group_bytes = (kInt4 ? 8 : 16) * group;
  for (int r = blockIdx.y; r < rows; r += gridDim.y) {
    const int tile = r / kTileRows, rr = r % kTileRows;
    for (int u = blockIdx.x * blockDim.x + threadIdx.x; u < words; u += gridDim.x * blockDim.x) {
      const int col = u * kPer, g = col / group, k = col - g * group;
      const size_t block = (size_t(tile) * groups + g) * group_bytes;
      const uint32_t word = *reinterpret_cast<const uint32_t*>(data + block + (k / kPer) * 64 + rr * 4);
      // INT4 to BF16 takes the scale rounded to BF16 (the code times it is
      // exact in float, so one rounding), as the grouped GEMM dequantizes.
      float scale = scales[(size_t(tile) * groups + g) * kTileRows + rr];
      if constexpr (kInt4 && !kOutF32) scale = __bfloat162float(__float2bfloat16_rn(scale));
      float w[kPer];
      for (int j = 0; j < 4; ++j) {
        if constexpr (kInt4) {
          w[j] = static_cast<float>(static_cast<int>((word >> (8 * j)) & 0xF) - 8) * scale;
          w[j + 4] = static_cast<float>(static_cast<int>((word >> (8 * j + 4)) & 0xF) - 8) * scale;
        } else {
          w[j] = static_cast<float>(static_cast<int>((word >> (8 * j)) & 0xFF) - 128) * scale;
        }
      }
      const size_t at = size_t(r) * cols + col;
      if constexpr (kOutF32) {
        float* o = static_cast<float*>(out) + at;
        for (int j = 0; j < kPer; ++j) o[j] = w[j];
      } else {
        __nv_bfloat16* o = static_cast<__nv_bfloat16*>(out) + at;
        for (int j = 0; j < kPer; j += 2) *reinterpret_cast<__nv_bfloat162*>(o + j) = __floats2bfloat162_rn(w[j], w[j + 1]);
      }
    }
  }
}

}  // namespace

absl::Status LaunchMaterializeDense(DType src_dtype, const void* src, int64_t count, bool out_f32, void* out,
                                    cudaStream_t stream) {
  if (src_dtype != DType::kBF16 && src_dtype != DType::kF16 && src_dtype != DType::kF32) {
    return InvalidArgumentError("LaunchMaterializeDense: ", DTypeName(src_dtype), " is not BF16, F16 or F32");
  }
  if (count <= 0) return absl::OkStatus();
  MaterializeDenseKernel<<<GridFor(count), kBlockThreads, 0, stream>>>(src_dtype, src, count, out_f32, out);
  CUDA_RETURN_IF_ERROR(cudaGetLastError());
  return absl::OkStatus();
}

absl::Status LaunchDequantTiled(bool int4, const uint8_t* data, const float* scales, int64_t rows, int64_t cols,
                                int64_t group_size, bool out_f32, void* out, cudaStream_t stream) {
  if (group_size <= 0 || cols % group_size != 0 || group_size % 8 != 0) {
    return InvalidArgumentError("LaunchDequantTiled: group size ", group_size, " does not divide ", cols,
                                " columns in whole octets");
  }
  if (rows * cols <= 0) return absl::OkStatus();
  if (rows > INT32_MAX || cols > INT32_MAX / 2) return InvalidArgumentError("LaunchDequantTiled: matrix too large");
  const int words = static_cast<int>(cols / (int4 ? 8 : 4));
  const dim3 grid(static_cast<unsigned>((words + kBlockThreads - 1) / kBlockThreads),
                  static_cast<unsigned>(std::min<int64_t>(rows, 65535)));
  const int r = static_cast<int>(rows), c = static_cast<int>(cols), g = static_cast<int>(group_size);
  if (int4) {
    if (out_f32) DequantTiledKernel<true, true><<<grid, kBlockThreads, 0, stream>>>(data, scales, r, c, g, out);
    else DequantTiledKernel<true, false><<<grid, kBlockThreads, 0, stream>>>(data, scales, r, c, g, out);
  } else {
    if (out_f32) DequantTiledKernel<false, true><<<grid, kBlockThreads, 0, stream>>>(data, scales, r, c, g, out);
    else DequantTiledKernel<false, false><<<grid, kBlockThreads, 0, stream>>>(data, scales, r, c, g, out);
  }
  CUDA_RETURN_IF_ERROR(cudaGetLastError());
  return absl::OkStatus();
}

}  // namespace krasis::cuda
