// Widening kernels (see convert_kernels.h). One thread per element, grid-stride.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_fp8.h>

#include "common/cuda/convert_kernels.h"
#include "common/cuda/cuda_check.h"

namespace krasis {
namespace {

__global__ void WidenBF16(const __nv_bfloat16* in, float* out, size_t n) {
  for (size_t i = blockIdx.x * size_t{blockDim.x} + threadIdx.x; i < n;
       i += size_t{gridDim.x} * blockDim.x) {
    out[i] = __bfloat162float(in[i]);
  }
}

__global__ void WidenF16(const __half* in, float* out, size_t n) {
  for (size_t i = blockIdx.x * size_t{blockDim.x} + threadIdx.x; i < n;
       i += size_t{gridDim.x} * blockDim.x) {
    out[i] = __half2float(in[i]);
  }
}

__global__ void WidenF8E4M3(const __nv_fp8_e4m3* in, float* out, size_t n) {
  for (size_t i = blockIdx.x * size_t{blockDim.x} + threadIdx.x; i < n;
       i += size_t{gridDim.x} * blockDim.x) {
    out[i] = static_cast<float>(in[i]);
  }
}

}  // namespace

absl::Status LaunchWidenToFloat(DType dtype, const void* in, float* out, size_t count,
                                cudaStream_t stream) {
  if (count == 0) return absl::OkStatus();
  constexpr int kThreads = 256;
  size_t blocks_needed = (count + kThreads - 1) / kThreads;
  unsigned blocks = static_cast<unsigned>(blocks_needed < 65535 ? blocks_needed : 65535);
  switch (dtype) {
    case DType::kBF16:
      WidenBF16<<<blocks, kThreads, 0, stream>>>(static_cast<const __nv_bfloat16*>(in), out, count);
      break;
    case DType::kF16:
      WidenF16<<<blocks, kThreads, 0, stream>>>(static_cast<const __half*>(in), out, count);
      break;
    case DType::kF8E4M3:
      WidenF8E4M3<<<blocks, kThreads, 0, stream>>>(static_cast<const __nv_fp8_e4m3*>(in), out,
                                                   count);
      break;
    default:
      return InvalidArgumentError("LaunchWidenToFloat: unsupported dtype ", DTypeName(dtype));
  }
  CUDA_RETURN_IF_ERROR(cudaGetLastError());
  return absl::OkStatus();
}

}  // namespace krasis
