// GPU ceilings for benchmarks (see measure.h).
#include "common/cuda/measure.h"

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <algorithm>

#include "common/cuda/cuda_check.h"

namespace krasis::cuda {

namespace {
// Seconds of the fastest of `reps` runs of `fn` on `stream`.
template <typename Fn>
absl::StatusOr<double> BestSeconds(cudaStream_t stream, int reps, Fn fn) {
  cudaEvent_t a, b;
  CUDA_RETURN_IF_ERROR(cudaEventCreate(&a));
  CUDA_RETURN_IF_ERROR(cudaEventCreate(&b));
  double best = 1e30;
  for (int i = 0; i < reps; ++i) {
    CUDA_RETURN_IF_ERROR(cudaEventRecord(a, stream));
    RETURN_IF_ERROR(fn());
    CUDA_RETURN_IF_ERROR(cudaEventRecord(b, stream));
    CUDA_RETURN_IF_ERROR(cudaEventSynchronize(b));
    float ms = 0;
    CUDA_RETURN_IF_ERROR(cudaEventElapsedTime(&ms, a, b));
    best = std::min(best, ms / 1e3);
  }
  cudaEventDestroy(a);
  cudaEventDestroy(b);
  return best;
}
}  // namespace

absl::StatusOr<double> MeasurePinnedHostToDevice(size_t bytes) {
  void *host = nullptr, *dev = nullptr;
  CUDA_RETURN_IF_ERROR(cudaMallocHost(&host, bytes));
  CUDA_RETURN_IF_ERROR(cudaMalloc(&dev, bytes));
  cudaStream_t stream;
  CUDA_RETURN_IF_ERROR(cudaStreamCreate(&stream));
  auto s = BestSeconds(stream, 5, [&]() -> absl::Status {
    CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(dev, host, bytes, cudaMemcpyHostToDevice, stream));
    return absl::OkStatus();
  });
  cudaStreamDestroy(stream);
  cudaFree(dev);
  cudaFreeHost(host);
  if (!s.ok()) return s.status();
  return static_cast<double>(bytes) / *s / 1e9;
}

absl::StatusOr<double> MeasureBf16Gemm(int m, int n, int k) {
  void *a = nullptr, *b = nullptr, *c = nullptr;
  CUDA_RETURN_IF_ERROR(cudaMalloc(&a, size_t(m) * k * 2));
  CUDA_RETURN_IF_ERROR(cudaMalloc(&b, size_t(k) * n * 2));
  CUDA_RETURN_IF_ERROR(cudaMalloc(&c, size_t(m) * n * 4));
  CUDA_RETURN_IF_ERROR(cudaMemset(a, 0, size_t(m) * k * 2));
  CUDA_RETURN_IF_ERROR(cudaMemset(b, 0, size_t(k) * n * 2));
  cudaStream_t stream;
  CUDA_RETURN_IF_ERROR(cudaStreamCreate(&stream));
  cublasHandle_t h;
  if (cublasCreate(&h) != CUBLAS_STATUS_SUCCESS) return absl::InternalError("cublasCreate failed");
  cublasSetStream(h, stream);
  const float alpha = 1.0f, beta = 0.0f;
  auto s = BestSeconds(stream, 5, [&]() -> absl::Status {
    if (cublasGemmEx(h, CUBLAS_OP_T, CUBLAS_OP_N, m, n, k, &alpha, a, CUDA_R_16BF, k, b, CUDA_R_16BF, k, &beta, c,
                     CUDA_R_32F, m, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT) != CUBLAS_STATUS_SUCCESS) {
      return absl::InternalError("cublasGemmEx failed");
    }
    return absl::OkStatus();
  });
  cublasDestroy(h);
  cudaStreamDestroy(stream);
  cudaFree(a);
  cudaFree(b);
  cudaFree(c);
  if (!s.ok()) return s.status();
  return 2.0 * m * n * k / *s / 1e12;
}

}  // namespace krasis::cuda
