// Expert weights from their stored form to the GEMM's input form (see
// prefill_kernels.h): dense BF16/F16/F32 conversion, and dequantization of the
// CPU experts' tile-interleaved INT4/INT8 layout (common/quant/quant_format.h).
#include <cuda_bf16.h>
#include <cuda_fp16.h>

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

// One thread per output element, threads along the columns (coalesced writes;
// a warp's reads stay inside one tile-group block of a few hundred bytes).
__global__ void DequantTiledKernel(bool int4, const uint8_t* data, const float* scales, int64_t rows, int64_t cols,
                                   int64_t group, bool out_f32, void* out) {
  const int64_t count = rows * cols, groups = cols / group;
  const int64_t group_bytes = (int4 ? 8 : 16) * group;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < count;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t r = i / cols, c = i % cols;
    const int64_t tile = r / kTileRows, rr = r % kTileRows, g = c / group, k = c % group;
    const uint8_t* block = data + (tile * groups + g) * group_bytes;
    int code;
    if (int4) {
      const int64_t octet = k / 8, j = k % 8;
      const uint8_t byte = block[octet * 64 + rr * 4 + (j % 4)];
      code = (j < 4 ? (byte & 0x0F) : (byte >> 4)) - 8;
    } else {
      code = static_cast<int>(block[(k / 4) * 64 + rr * 4 + k % 4]) - 128;
    }
    StoreAs(out_f32, out, i, static_cast<float>(code) * scales[(tile * groups + g) * kTileRows + rr]);
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
  DequantTiledKernel<<<GridFor(rows * cols), kBlockThreads, 0, stream>>>(int4, data, scales, rows, cols, group_size,
                                                                         out_f32, out);
  CUDA_RETURN_IF_ERROR(cudaGetLastError());
  return absl::OkStatus();
}

}  // namespace krasis::cuda
