// Causal prefill attention (see prefill_kernels.h), FlashAttention-style: a
// block owns kQueries queries of one head and streams the visible keys and
// values through shared memory kKeys at a time, keeping a running max, sum and
// output per query (online softmax). Nothing of size queries x keys is stored.
// fp32 CUDA-core math: this is the correct, general kernel (any head_dim and
// v_dim up to 256, GQA, MLA's 192/128); a tensor-core version replaces it where
// the benchmark says attention dominates.
#include <cmath>

#include "common/cuda/cuda_check.h"
#include "common/cuda/launch.cuh"
#include "common/cuda/prefill_kernels.h"

namespace krasis::cuda {
namespace {

constexpr int kQueries = 16;
constexpr int kKeys = 32;  // one warp lane per key in the softmax step
constexpr int kThreads = 128;
constexpr int kMaxDim = 256;
constexpr int kMaxOut = kQueries * kMaxDim / kThreads;  // outputs per thread

size_t SharedBytes(int64_t d, int64_t dv) {
  return sizeof(float) * static_cast<size_t>(kQueries * d + kKeys * (d + 1) + kKeys * dv + kQueries * kKeys +
                                             3 * kQueries);
}

__global__ void __launch_bounds__(kThreads) CausalAttentionKernel(const float* q, const float* k, const float* v,
                                                                  AttentionShape s, float* out) {
  extern __shared__ float sm[];
  const int d_qk = static_cast<int>(s.head_dim), d_v = static_cast<int>(s.v_dim);
  const int k_pitch = d_qk + 1;  // padding: lanes reading different keys hit different banks
  float* qs = sm;                            // [kQueries][d_qk]
  float* ks = qs + kQueries * d_qk;          // [kKeys][k_pitch]
  float* vs = ks + kKeys * k_pitch;          // [kKeys][d_v]
  float* pr = vs + kKeys * d_v;              // [kQueries][kKeys] scores, then probabilities
  float* row_max = pr + kQueries * kKeys;    // [kQueries]
  float* row_sum = row_max + kQueries;       // [kQueries]
  float* row_scale = row_sum + kQueries;     // [kQueries] rescale of the running output
  const int tid = threadIdx.x;
  const int64_t h = blockIdx.y, kvh = h / (s.heads / s.kv_heads);
  const int64_t q0 = int64_t{blockIdx.x} * kQueries;
  const int rows = static_cast<int>(min(int64_t{kQueries}, s.n - q0));

  for (int idx = tid; idx < kQueries * d_qk; idx += kThreads) {
    const int qi = idx / d_qk, d = idx % d_qk;
    qs[idx] = qi < rows ? q[(q0 + qi) * s.q_stride + h * d_qk + d] : 0.0f;
  }
  if (tid < kQueries) {
    row_max[tid] = -INFINITY;
    row_sum[tid] = 0.0f;
  }
  float acc[kMaxOut];
#pragma unroll
  for (int i = 0; i < kMaxOut; ++i) acc[i] = 0.0f;

  const int64_t last_pos = s.start_pos + q0 + rows - 1;  // the last key any query here sees
  for (int64_t k0 = 0; k0 <= last_pos; k0 += kKeys) {
    __syncthreads();  // the previous tile is no longer read
    for (int idx = tid; idx < kKeys * d_qk; idx += kThreads) {
      const int kj = idx / d_qk, d = idx % d_qk;
      const int64_t p = k0 + kj;
      ks[kj * k_pitch + d] = p <= last_pos ? k[p * s.k_stride + kvh * d_qk + d] : 0.0f;
    }
    for (int idx = tid; idx < kKeys * d_v; idx += kThreads) {
      const int kj = idx / d_v, c = idx % d_v;
      const int64_t p = k0 + kj;
      vs[idx] = p <= last_pos ? v[p * s.v_stride + kvh * d_v + c] : 0.0f;
    }
    __syncthreads();
    for (int e = tid; e < kQueries * kKeys; e += kThreads) {
      const int qi = e / kKeys, kj = e % kKeys;
      float score = -INFINITY;
      if (qi < rows && k0 + kj <= s.start_pos + q0 + qi) {
        float dot = 0.0f;
        for (int d = 0; d < d_qk; ++d) dot += qs[qi * d_qk + d] * ks[kj * k_pitch + d];
        score = dot * s.scale;
      }
      pr[e] = score;
    }
    __syncthreads();
    const int warp = tid / 32, lane = tid % 32;
    for (int qi = warp; qi < kQueries; qi += kThreads / 32) {
      const float score = pr[qi * kKeys + lane];
      const float old_max = row_max[qi];
      const float new_max = fmaxf(old_max, WarpMax(score));
      const float p = new_max == -INFINITY ? 0.0f : expf(score - new_max);
      const float tile_sum = WarpSum(p);
      pr[qi * kKeys + lane] = p;
      if (lane == 0) {
        const float a = old_max == -INFINITY ? 0.0f : expf(old_max - new_max);
        row_scale[qi] = a;
        row_sum[qi] = row_sum[qi] * a + tile_sum;
        row_max[qi] = new_max;
      }
    }
    __syncthreads();
#pragma unroll
    for (int i = 0; i < kMaxOut; ++i) {
      const int idx = tid + i * kThreads;
      if (idx < kQueries * d_v) {
        const int qi = idx / d_v, c = idx % d_v;
        float o = acc[i] * row_scale[qi];
        for (int kj = 0; kj < kKeys; ++kj) o += pr[qi * kKeys + kj] * vs[kj * d_v + c];
        acc[i] = o;
      }
    }
  }
  __syncthreads();
#pragma unroll
  for (int i = 0; i < kMaxOut; ++i) {
    const int idx = tid + i * kThreads;
    if (idx < kQueries * d_v) {
      const int qi = idx / d_v, c = idx % d_v;
      if (qi < rows) out[((q0 + qi) * s.heads + h) * d_v + c] = acc[i] / row_sum[qi];
    }
  }
}

}  // namespace

absl::Status LaunchCausalAttention(const float* q, const float* k, const float* v, const AttentionShape& s,
                                   float* out, cudaStream_t stream) {
  if (s.n <= 0) return absl::OkStatus();
  if (s.heads <= 0 || s.kv_heads <= 0 || s.heads % s.kv_heads != 0 || s.head_dim <= 0 || s.v_dim <= 0 ||
      s.head_dim > kMaxDim || s.v_dim > kMaxDim || s.start_pos < 0) {
    return InvalidArgumentError("LaunchCausalAttention: unsupported shape (heads ", s.heads, "/", s.kv_heads,
                                ", head_dim ", s.head_dim, ", v_dim ", s.v_dim, ")");
  }
  AttentionShape shape = s;
  if (shape.q_stride == 0) shape.q_stride = s.heads * s.head_dim;
  const size_t smem = SharedBytes(s.head_dim, s.v_dim);
  CUDA_RETURN_IF_ERROR(
      cudaFuncSetAttribute(CausalAttentionKernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)));
  const dim3 grid(static_cast<unsigned>((s.n + kQueries - 1) / kQueries), static_cast<unsigned>(s.heads));
  CausalAttentionKernel<<<grid, kThreads, smem, stream>>>(q, k, v, shape, out);
  CUDA_RETURN_IF_ERROR(cudaGetLastError());
  return absl::OkStatus();
}

}  // namespace krasis::cuda
