// Row-wise and element-wise prefill kernels (see prefill_kernels.h): RMSNorm,
// RoPE, SiLU-mul, BF16 narrowing, residual add.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "common/cuda/cuda_check.h"
#include "common/cuda/launch.cuh"
#include "common/cuda/prefill_kernels.h"

namespace krasis::cuda {
namespace {

__device__ inline uint16_t Bf16Bits(float v) {
  __nv_bfloat16 b = __float2bfloat16_rn(v);
  return *reinterpret_cast<uint16_t*>(&b);
}

// One block per row. With `add`, x += add first (the residual add), and the
// norm is of the sum; each thread reads back only what it wrote.
__global__ void RmsNormKernel(const float* x, float* sum, const float* add, int64_t dim, const float* w, float eps,
                              bool zero_centred, float* out, uint16_t* out_bf16) {
  const float* xr = x + blockIdx.x * dim;
  float ss = 0.0f;
  if (add != nullptr) {
    float* sr = sum + blockIdx.x * dim;
    const float* ar = add + blockIdx.x * dim;
    for (int64_t i = threadIdx.x; i < dim; i += blockDim.x) {
      const float v = sr[i] + ar[i];
      sr[i] = v;
      ss += v * v;
    }
    xr = sr;
  } else {
    for (int64_t i = threadIdx.x; i < dim; i += blockDim.x) ss += xr[i] * xr[i];
  }
  ss = BlockSum(ss);
  const float inv = rsqrtf(ss / static_cast<float>(dim) + eps);
  for (int64_t i = threadIdx.x; i < dim; i += blockDim.x) {
    const float y = xr[i] * inv * (zero_centred ? 1.0f + w[i] : w[i]);
    if (out_bf16 != nullptr) out_bf16[blockIdx.x * dim + i] = Bf16Bits(y);
    if (out != nullptr) out[blockIdx.x * dim + i] = y;
  }
}

// One block per (token, head) vector, in place.
__global__ void HeadRmsNormKernel(float* x, int64_t heads, int64_t token_stride, int64_t dim, const float* w,
                                  float eps, bool zero_centred) {
  float* v = x + (blockIdx.x / heads) * token_stride + (blockIdx.x % heads) * dim;
  float ss = 0.0f;
  for (int64_t i = threadIdx.x; i < dim; i += blockDim.x) ss += v[i] * v[i];
  ss = BlockSum(ss);
  const float inv = rsqrtf(ss / static_cast<float>(dim) + eps);
  for (int64_t i = threadIdx.x; i < dim; i += blockDim.x) v[i] = v[i] * inv * (zero_centred ? 1.0f + w[i] : w[i]);
}

__global__ void RopeKernel(float* x, int64_t tokens, int64_t heads, int64_t token_stride, int64_t head_stride,
                           int64_t rot_dim, bool interleaved, const float* cos_sin) {
  const int64_t half = rot_dim / 2;
  const int64_t total = tokens * heads * half;
  for (int64_t idx = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; idx < total;
       idx += int64_t{gridDim.x} * blockDim.x) {
    const int64_t i = idx % half, h = (idx / half) % heads, t = idx / (half * heads);
    const float c = cos_sin[t * rot_dim + i], s = cos_sin[t * rot_dim + half + i];
    float* v = x + t * token_stride + h * head_stride;
    const int64_t a = interleaved ? 2 * i : i, b = interleaved ? 2 * i + 1 : i + half;
    const float x1 = v[a], x2 = v[b];
    v[a] = x1 * c - x2 * s;
    v[b] = x2 * c + x1 * s;
  }
}

// Rope::Table's rows on the card: cos and sin of float(position) * inv_freq[i]
// (fp32, as torch computes them on a GPU), times the attention factor.
__global__ void RopeTableKernel(const float* inv_freq, int64_t half, float factor, int64_t start, int64_t n,
                                float* out) {
  const int64_t total = n * half;
  for (int64_t idx = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; idx < total;
       idx += int64_t{gridDim.x} * blockDim.x) {
    const int64_t p = idx / half, i = idx % half;
    const float angle = static_cast<float>(start + p) * inv_freq[i];
    out[p * 2 * half + i] = cosf(angle) * factor;
    out[p * 2 * half + half + i] = sinf(angle) * factor;
  }
}

__device__ inline void Put(uint16_t* out, int64_t i, float v) { out[i] = Bf16Bits(v); }
__device__ inline void Put(float* out, int64_t i, float v) { out[i] = v; }

template <typename Out>
__global__ void SiluMulKernel(const float* gate_up, int64_t rows, int64_t inter, Out* out) {
  const int64_t total = rows * inter;
  for (int64_t idx = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; idx < total;
       idx += int64_t{gridDim.x} * blockDim.x) {
    const int64_t r = idx / inter, i = idx % inter;
    const float g = gate_up[r * 2 * inter + i], u = gate_up[r * 2 * inter + inter + i];
    Put(out, idx, SiluMul(g, u));
  }
}

__global__ void ToBf16Kernel(const float* x, int64_t n, uint16_t* out) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n; i += int64_t{gridDim.x} * blockDim.x) {
    out[i] = Bf16Bits(x[i]);
  }
}

// Rows of `cols` floats `stride` apart; a block per row in turn.
__global__ void ToBf16RowsKernel(const float* x, int64_t rows, int64_t cols, int64_t stride, uint16_t* out) {
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) out[r * cols + c] = Bf16Bits(x[r * stride + c]);
  }
}

__global__ void AddBiasKernel(float* y, const float* bias, int64_t rows, int64_t cols, int64_t stride) {
  const int64_t total = rows * cols;
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < total; i += int64_t{gridDim.x} * blockDim.x) {
    y[(i / cols) * stride + i % cols] += bias[i % cols];
  }
}

__global__ void RoundKernel(bool bf16, float* x, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n; i += int64_t{gridDim.x} * blockDim.x) {
    x[i] = bf16 ? __bfloat162float(__float2bfloat16_rn(x[i])) : __half2float(__float2half_rn(x[i]));
  }
}

// A float as T: itself, or its BF16 bits (round to nearest even).
template <typename T>
__device__ inline T FromFloat(float v) {
  if constexpr (sizeof(T) == sizeof(float)) {
    return v;
  } else {
    const __nv_bfloat16 b = __float2bfloat16_rn(v);
    return *reinterpret_cast<const uint16_t*>(&b);
  }
}

// T float, or uint16_t for BF16 kvb, k and v (k_pe then rounded to BF16).
// Each thread moves kVec consecutive elements of one head's [nope | rope | v]
// (kVec 8 when nope, rope_dim and v_dim are multiples of 8 and the rows
// aligned: one 16- or 32-byte load and store, and one index division per 8
// elements; else 1).
template <typename T, int kVec>
struct alignas(sizeof(T) * kVec) Pack {
  T v[kVec];
};

template <typename T, int kVec>
__global__ void MlaExpandKernel(const T* kvb, const float* k_pe, int64_t k_pe_stride, int64_t positions,
                                int64_t heads, int64_t nope, int64_t rope_dim, int64_t v_dim, T* k, T* v) {
  using P = Pack<T, kVec>;
  const int64_t qk = nope + rope_dim, per_head = qk + v_dim, units = per_head / kVec;
  const int64_t total = positions * heads * units;
  for (int64_t idx = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; idx < total;
       idx += int64_t{gridDim.x} * blockDim.x) {
    const int64_t ph = idx / units, i = (idx - ph * units) * kVec, p = ph / heads;
    if (i < nope) {
      *reinterpret_cast<P*>(k + ph * qk + i) = *reinterpret_cast<const P*>(kvb + ph * (nope + v_dim) + i);
    } else if (i < qk) {
      P out;
      for (int j = 0; j < kVec; ++j) out.v[j] = FromFloat<T>(k_pe[p * k_pe_stride + (i - nope) + j]);
      *reinterpret_cast<P*>(k + ph * qk + i) = out;
    } else {
      *reinterpret_cast<P*>(v + ph * v_dim + (i - qk)) =
          *reinterpret_cast<const P*>(kvb + ph * (nope + v_dim) + nope + (i - qk));
    }
  }
}

template <typename T>
absl::Status LaunchMlaExpand(const T* kvb, const float* k_pe, int64_t k_pe_stride, int64_t positions, int64_t heads,
                             int64_t nope, int64_t rope_dim, int64_t v_dim, T* k, T* v, cudaStream_t stream) {
  const int64_t total = positions * heads * (nope + rope_dim + v_dim);
  if (total <= 0) return absl::OkStatus();
  constexpr int kVec = 8;
  constexpr uintptr_t kAlign = sizeof(T) * kVec;
  const bool vec = nope % kVec == 0 && rope_dim % kVec == 0 && v_dim % kVec == 0 &&
                   reinterpret_cast<uintptr_t>(kvb) % kAlign == 0 && reinterpret_cast<uintptr_t>(k) % kAlign == 0 &&
                   reinterpret_cast<uintptr_t>(v) % kAlign == 0;
  if (vec) {
    MlaExpandKernel<T, kVec><<<GridFor(total / kVec), kBlockThreads, 0, stream>>>(kvb, k_pe, k_pe_stride, positions,
                                                                                   heads, nope, rope_dim, v_dim, k, v);
  } else {
    MlaExpandKernel<T, 1><<<GridFor(total), kBlockThreads, 0, stream>>>(kvb, k_pe, k_pe_stride, positions, heads, nope,
                                                                        rope_dim, v_dim, k, v);
  }
  CUDA_RETURN_IF_ERROR(cudaGetLastError());
  return absl::OkStatus();
}

__global__ void ToF16Kernel(const float* x, int64_t n, uint16_t* out) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n; i += int64_t{gridDim.x} * blockDim.x) {
    __half h = __float2half_rn(x[i]);
    out[i] = *reinterpret_cast<uint16_t*>(&h);
  }
}

__global__ void AddKernel(float* y, const float* x, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n; i += int64_t{gridDim.x} * blockDim.x) {
    y[i] += x[i];
  }
}

}  // namespace

absl::Status LaunchRmsNorm(const float* x, int64_t rows, int64_t dim, const float* weight, float eps,
                           bool zero_centred, float* out, uint16_t* out_bf16, cudaStream_t stream) {
  if (rows <= 0) return absl::OkStatus();
  RmsNormKernel<<<static_cast<unsigned>(rows), kBlockThreads, 0, stream>>>(x, nullptr, nullptr, dim, weight, eps,
                                                                           zero_centred, out, out_bf16);
  CUDA_RETURN_IF_ERROR(cudaGetLastError());
  return absl::OkStatus();
}

absl::Status LaunchAddRmsNorm(float* x, const float* add, int64_t rows, int64_t dim, const float* weight, float eps,
                              bool zero_centred, float* out, uint16_t* out_bf16, cudaStream_t stream) {
  if (rows <= 0) return absl::OkStatus();
  if (add == nullptr || out == x || out == add) {
    return InvalidArgumentError("LaunchAddRmsNorm: `add` must be given and `out` must not alias x or add");
  }
  RmsNormKernel<<<static_cast<unsigned>(rows), kBlockThreads, 0, stream>>>(x, x, add, dim, weight, eps,
                                                                           zero_centred, out, out_bf16);
  CUDA_RETURN_IF_ERROR(cudaGetLastError());
  return absl::OkStatus();
}

absl::Status LaunchHeadRmsNorm(float* x, int64_t tokens, int64_t heads, int64_t token_stride, int64_t head_dim,
                               const float* weight, float eps, bool zero_centred, cudaStream_t stream) {
  if (tokens * heads <= 0) return absl::OkStatus();
  HeadRmsNormKernel<<<static_cast<unsigned>(tokens * heads), 64, 0, stream>>>(x, heads, token_stride, head_dim,
                                                                               weight, eps, zero_centred);
  CUDA_RETURN_IF_ERROR(cudaGetLastError());
  return absl::OkStatus();
}

absl::Status LaunchRopeTable(const float* inv_freq, int64_t rot_dim, float attention_factor, int64_t start, int64_t n,
                             float* out, cudaStream_t stream) {
  if (rot_dim <= 0 || rot_dim % 2 != 0) return InvalidArgumentError("LaunchRopeTable: rot_dim ", rot_dim);
  if (n <= 0) return absl::OkStatus();
  RopeTableKernel<<<GridFor(n * rot_dim / 2), kBlockThreads, 0, stream>>>(inv_freq, rot_dim / 2, attention_factor,
                                                                           start, n, out);
  CUDA_RETURN_IF_ERROR(cudaGetLastError());
  return absl::OkStatus();
}

absl::Status LaunchRope(float* x, int64_t tokens, int64_t heads, int64_t token_stride, int64_t head_stride,
                        int64_t rot_dim, bool interleaved, const float* cos_sin, cudaStream_t stream) {
  if (tokens <= 0 || heads <= 0 || rot_dim <= 0) return absl::OkStatus();
  if (rot_dim % 2 != 0) return InvalidArgumentError("LaunchRope: odd rot_dim ", rot_dim);
  RopeKernel<<<GridFor(tokens * heads * rot_dim / 2), kBlockThreads, 0, stream>>>(
      x, tokens, heads, token_stride, head_stride, rot_dim, interleaved, cos_sin);
  CUDA_RETURN_IF_ERROR(cudaGetLastError());
  return absl::OkStatus();
}

absl::Status LaunchSiluMulBf16(const float* gate_up, int64_t rows, int64_t inter, uint16_t* out,
                               cudaStream_t stream) {
  if (rows * inter <= 0) return absl::OkStatus();
  SiluMulKernel<<<GridFor(rows * inter), kBlockThreads, 0, stream>>>(gate_up, rows, inter, out);
  CUDA_RETURN_IF_ERROR(cudaGetLastError());
  return absl::OkStatus();
}

absl::Status LaunchSiluMul(const float* gate_up, int64_t rows, int64_t inter, float* out, cudaStream_t stream) {
  if (rows * inter <= 0) return absl::OkStatus();
  SiluMulKernel<<<GridFor(rows * inter), kBlockThreads, 0, stream>>>(gate_up, rows, inter, out);
  CUDA_RETURN_IF_ERROR(cudaGetLastError());
  return absl::OkStatus();
}

namespace {
// One block per token: the row of the table widened to float.
__global__ void EmbedRowsKernel(const void* table, bool f32, const int32_t* ids, int64_t dim, float* out) {
  const int64_t row = ids[blockIdx.x];
  float* o = out + blockIdx.x * dim;
  if (f32) {
    const float* src = static_cast<const float*>(table) + row * dim;
    for (int64_t i = threadIdx.x; i < dim; i += blockDim.x) o[i] = src[i];
  } else {
    const __nv_bfloat16* src = static_cast<const __nv_bfloat16*>(table) + row * dim;
    for (int64_t i = threadIdx.x; i < dim; i += blockDim.x) o[i] = __bfloat162float(src[i]);
  }
}
}  // namespace

absl::Status LaunchEmbedRows(const void* table, bool f32, const int32_t* ids, int64_t n, int64_t dim, float* out,
                             cudaStream_t stream) {
  if (n <= 0) return absl::OkStatus();
  if (n > INT32_MAX) return InvalidArgumentError("LaunchEmbedRows: ", n, " rows are too many");
  EmbedRowsKernel<<<static_cast<unsigned>(n), kBlockThreads, 0, stream>>>(table, f32, ids, dim, out);
  CUDA_RETURN_IF_ERROR(cudaGetLastError());
  return absl::OkStatus();
}

absl::Status LaunchToBf16(const float* x, int64_t count, uint16_t* out, cudaStream_t stream) {
  if (count <= 0) return absl::OkStatus();
  ToBf16Kernel<<<GridFor(count), kBlockThreads, 0, stream>>>(x, count, out);
  CUDA_RETURN_IF_ERROR(cudaGetLastError());
  return absl::OkStatus();
}

absl::Status LaunchToBf16Rows(const float* x, int64_t rows, int64_t cols, int64_t stride, uint16_t* out,
                              cudaStream_t stream) {
  if (rows <= 0 || cols <= 0) return absl::OkStatus();
  if (stride < cols) return InvalidArgumentError("LaunchToBf16Rows: stride ", stride, " < cols ", cols);
  ToBf16RowsKernel<<<static_cast<unsigned>(std::min<int64_t>(rows, 65535)), kBlockThreads, 0, stream>>>(x, rows, cols,
                                                                                                       stride, out);
  CUDA_RETURN_IF_ERROR(cudaGetLastError());
  return absl::OkStatus();
}

absl::Status LaunchAddBias(float* y, const float* bias, int64_t rows, int64_t cols, int64_t stride,
                           cudaStream_t stream) {
  if (rows * cols <= 0) return absl::OkStatus();
  AddBiasKernel<<<GridFor(rows * cols), kBlockThreads, 0, stream>>>(y, bias, rows, cols, stride);
  CUDA_RETURN_IF_ERROR(cudaGetLastError());
  return absl::OkStatus();
}

absl::Status LaunchRoundTo(DType dtype, float* x, int64_t count, cudaStream_t stream) {
  if (count <= 0 || (dtype != DType::kBF16 && dtype != DType::kF16)) return absl::OkStatus();
  RoundKernel<<<GridFor(count), kBlockThreads, 0, stream>>>(dtype == DType::kBF16, x, count);
  CUDA_RETURN_IF_ERROR(cudaGetLastError());
  return absl::OkStatus();
}

absl::Status LaunchMlaExpandKv(const float* kvb, const float* k_pe, int64_t k_pe_stride, int64_t positions,
                               int64_t heads, int64_t nope, int64_t rope_dim, int64_t v_dim, float* k, float* v,
                               cudaStream_t stream) {
  return LaunchMlaExpand(kvb, k_pe, k_pe_stride, positions, heads, nope, rope_dim, v_dim, k, v, stream);
}

absl::Status LaunchMlaExpandKvBf16(const uint16_t* kvb, const float* k_pe, int64_t k_pe_stride, int64_t positions,
                                   int64_t heads, int64_t nope, int64_t rope_dim, int64_t v_dim, uint16_t* k,
                                   uint16_t* v, cudaStream_t stream) {
  return LaunchMlaExpand(kvb, k_pe, k_pe_stride, positions, heads, nope, rope_dim, v_dim, k, v, stream);
}

absl::Status LaunchToHalf(DType dtype, const float* x, int64_t count, uint16_t* out, cudaStream_t stream) {
  if (dtype == DType::kBF16) return LaunchToBf16(x, count, out, stream);
  if (dtype != DType::kF16) return InvalidArgumentError("LaunchToHalf: ", DTypeName(dtype), " is not BF16 or F16");
  if (count <= 0) return absl::OkStatus();
  ToF16Kernel<<<GridFor(count), kBlockThreads, 0, stream>>>(x, count, out);
  CUDA_RETURN_IF_ERROR(cudaGetLastError());
  return absl::OkStatus();
}

absl::Status LaunchAdd(float* y, const float* x, int64_t count, cudaStream_t stream) {
  if (count <= 0) return absl::OkStatus();
  AddKernel<<<GridFor(count), kBlockThreads, 0, stream>>>(y, x, count);
  CUDA_RETURN_IF_ERROR(cudaGetLastError());
  return absl::OkStatus();
}

}  // namespace krasis::cuda
