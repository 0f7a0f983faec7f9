// GPU enumeration (see device.h).
#include "common/cuda/device.h"

#include "common/cuda/cuda_check.h"

namespace krasis {

absl::StatusOr<std::vector<GpuInfo>> ListGpus(std::string* why_none) {
  std::vector<GpuInfo> out;
  int count = 0;
  cudaError_t err = cudaGetDeviceCount(&count);
  if (err == cudaErrorNoDevice || err == cudaErrorInsufficientDriver ||
      err == cudaErrorInitializationError || err == cudaErrorCallRequiresNewerDriver ||
      err == cudaErrorSystemDriverMismatch || err == cudaErrorCompatNotSupportedOnDevice) {
    if (why_none != nullptr) *why_none = cudaGetErrorString(err);
    (void)cudaGetLastError();  // clear the sticky error for later calls
    return out;
  }
  CUDA_RETURN_IF_ERROR(err);
  if (count == 0 && why_none != nullptr) *why_none = "the CUDA runtime reports no device";
  for (int i = 0; i < count; ++i) {
    cudaDeviceProp prop;
    CUDA_RETURN_IF_ERROR(cudaGetDeviceProperties(&prop, i));
    GpuInfo info;
    info.index = i;
    info.name = prop.name;
    info.compute_major = prop.major;
    info.compute_minor = prop.minor;
    info.total_memory_bytes = prop.totalGlobalMem;
    info.multiprocessors = prop.multiProcessorCount;
    size_t free_bytes = 0, total_bytes = 0;
    CUDA_RETURN_IF_ERROR(cudaSetDevice(i));
    CUDA_RETURN_IF_ERROR(cudaMemGetInfo(&free_bytes, &total_bytes));
    info.free_memory_bytes = free_bytes;
    out.push_back(std::move(info));
  }
  return out;
}

}  // namespace krasis
