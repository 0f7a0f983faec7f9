// Checked CUDA calls. Every CUDA runtime call in Krasis goes through
// CUDA_RETURN_IF_ERROR, which turns a failure into an absl::Status naming the call,
// the file and line, and CUDA's own error text.
#pragma once

#include <cuda_runtime.h>

#include "common/status.h"

namespace krasis {

inline absl::Status CudaStatus(cudaError_t err, const char* what, const char* file, int line) {
  if (err == cudaSuccess) return absl::OkStatus();
  absl::StatusCode code = err == cudaErrorMemoryAllocation ? absl::StatusCode::kResourceExhausted
                                                           : absl::StatusCode::kInternal;
  return absl::Status(code, StrCat(what, " failed at ", file, ":", line, ": ",
                                         cudaGetErrorName(err), ": ", cudaGetErrorString(err)));
}

}  // namespace krasis

#define CUDA_RETURN_IF_ERROR(call) \
  RETURN_IF_ERROR(::krasis::CudaStatus((call), #call, __FILE__, __LINE__))
