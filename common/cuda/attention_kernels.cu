// Causal prefill attention (see prefill_kernels.h), FlashAttention-style: a
// block owns kQueries queries of one head and streams the visible keys and
// values through shared memory kKeys at a time, keeping a running max, sum and
// output per query (online softmax). Nothing of size queries x keys is stored.
// Two kernels: fp32 CUDA-core math (any head_dim and v_dim up to 256; the
// checking mode and odd head sizes), and a tensor-core one (BF16 wmma) for head
// sizes that are multiples of 16, which prefill uses.
#include <cuda_bf16.h>
#include <mma.h>

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

// ------------------------------------------------------- tensor cores ---
// A block owns kTcQueries queries of one head (16 per warp) and streams keys
// and values kTcKeys at a time. S = Q K^T and O += P V run on BF16 tensor cores
// (wmma 16x16x16, fp32 accumulation); the online softmax runs in fp32 on the
// scores in shared memory. The running output O lives in shared memory, so it
// can be rescaled row by row (wmma fragments have no row order to rely on).
constexpr int kTcWarps = 4;
constexpr int kTcQueries = 16 * kTcWarps;
constexpr int kTcKeys = 64;
constexpr int kTcThreads = 32 * kTcWarps;

struct TcLayout {
  int q_ld, k_ld, v_ld, s_ld, p_ld, o_ld;  // leading dims (elements), padded against bank conflicts
  size_t q, k, v, s, p, o, row, bytes;      // byte offsets
  __host__ __device__ TcLayout(int d_qk, int d_v) {
    q_ld = k_ld = d_qk + 8;
    v_ld = d_v + 8;
    s_ld = kTcKeys + 4;
    p_ld = kTcKeys + 8;
    o_ld = d_v + 4;
    q = 0;
    k = q + size_t(kTcQueries) * q_ld * 2;
    v = k + size_t(kTcKeys) * k_ld * 2;
    s = v + size_t(kTcKeys) * v_ld * 2;
    p = s + size_t(kTcQueries) * s_ld * 4;
    o = p + size_t(kTcQueries) * p_ld * 2;
    row = o + size_t(kTcQueries) * o_ld * 4;
    bytes = row + 3 * kTcQueries * 4;
  }
};

__global__ void __launch_bounds__(kTcThreads) TensorCoreAttentionKernel(const float* q, const float* k, const float* v,
                                                                       AttentionShape s, float* out) {
  using namespace nvcuda;
  extern __shared__ __align__(128) unsigned char smem[];
  const int d_qk = static_cast<int>(s.head_dim), d_v = static_cast<int>(s.v_dim);
  const TcLayout L(d_qk, d_v);
  auto* qs = reinterpret_cast<__nv_bfloat16*>(smem + L.q);
  auto* ks = reinterpret_cast<__nv_bfloat16*>(smem + L.k);
  auto* vs = reinterpret_cast<__nv_bfloat16*>(smem + L.v);
  auto* ss = reinterpret_cast<float*>(smem + L.s);
  auto* ps = reinterpret_cast<__nv_bfloat16*>(smem + L.p);
  auto* os = reinterpret_cast<float*>(smem + L.o);
  float* row_max = reinterpret_cast<float*>(smem + L.row);
  float* row_sum = row_max + kTcQueries;
  float* row_scale = row_sum + kTcQueries;
  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
  const int64_t h = blockIdx.y, kvh = h / (s.heads / s.kv_heads);
  const int64_t q0 = int64_t{blockIdx.x} * kTcQueries;
  const int rows = static_cast<int>(min(int64_t{kTcQueries}, s.n - q0));

  for (int idx = tid; idx < kTcQueries * d_qk; idx += kTcThreads) {
    const int qi = idx / d_qk, d = idx % d_qk;
    qs[qi * L.q_ld + d] = __float2bfloat16_rn(qi < rows ? q[(q0 + qi) * s.q_stride + h * d_qk + d] : 0.0f);
  }
  for (int idx = tid; idx < kTcQueries * d_v; idx += kTcThreads) os[(idx / d_v) * L.o_ld + idx % d_v] = 0.0f;
  if (tid < kTcQueries) {
    row_max[tid] = -INFINITY;
    row_sum[tid] = 0.0f;
  }
  const int r0 = warp * 16;  // this warp's rows
  const int64_t last_pos = s.start_pos + q0 + rows - 1;
  for (int64_t k0 = 0; k0 <= last_pos; k0 += kTcKeys) {
    __syncthreads();  // every warp is done with the previous tile
    for (int idx = tid; idx < kTcKeys * d_qk; idx += kTcThreads) {
      const int kj = idx / d_qk, d = idx % d_qk;
      const int64_t p = k0 + kj;
      ks[kj * L.k_ld + d] = __float2bfloat16_rn(p <= last_pos ? k[p * s.k_stride + kvh * d_qk + d] : 0.0f);
    }
    for (int idx = tid; idx < kTcKeys * d_v; idx += kTcThreads) {
      const int kj = idx / d_v, c = idx % d_v;
      const int64_t p = k0 + kj;
      vs[kj * L.v_ld + c] = __float2bfloat16_rn(p <= last_pos ? v[p * s.v_stride + kvh * d_v + c] : 0.0f);
    }
    __syncthreads();
    // S[r0 .. r0 + 16, :] = Q K^T
    for (int kb = 0; kb < kTcKeys / 16; ++kb) {
      wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc;
      wmma::fill_fragment(acc, 0.0f);
      for (int d = 0; d < d_qk; d += 16) {
        wmma::fragment<wmma::matrix_a, 16, 16, 16, __nv_bfloat16, wmma::row_major> a;
        wmma::fragment<wmma::matrix_b, 16, 16, 16, __nv_bfloat16, wmma::col_major> b;
        wmma::load_matrix_sync(a, qs + r0 * L.q_ld + d, L.q_ld);
        wmma::load_matrix_sync(b, ks + kb * 16 * L.k_ld + d, L.k_ld);
        wmma::mma_sync(acc, a, b, acc);
      }
      wmma::store_matrix_sync(ss + r0 * L.s_ld + kb * 16, acc, L.s_ld, wmma::mem_row_major);
    }
    __syncwarp();
    // Online softmax: two lanes per row, 32 keys each.
    {
      const int r = r0 + lane / 2, c0 = (lane % 2) * 32;
      const int64_t qpos = s.start_pos + q0 + r;
      float sc[32];
      float m = -INFINITY;
      for (int c = 0; c < 32; ++c) {
        const bool visible = r < rows && k0 + c0 + c <= qpos;
        sc[c] = visible ? ss[r * L.s_ld + c0 + c] * s.scale : -INFINITY;
        m = fmaxf(m, sc[c]);
      }
      m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, 1));
      const float old_max = row_max[r];
      const float new_max = fmaxf(old_max, m);
      float sum = 0.0f;
      for (int c = 0; c < 32; ++c) {
        const float p = new_max == -INFINITY ? 0.0f : expf(sc[c] - new_max);
        const __nv_bfloat16 pb = __float2bfloat16_rn(p);
        ps[r * L.p_ld + c0 + c] = pb;
        sum += __bfloat162float(pb);  // the sum of what P V adds up
      }
      sum += __shfl_xor_sync(0xffffffffu, sum, 1);
      __syncwarp();
      if (lane % 2 == 0) {
        const float a = old_max == -INFINITY ? 0.0f : expf(old_max - new_max);
        row_scale[r] = a;
        row_sum[r] = row_sum[r] * a + sum;
        row_max[r] = new_max;
      }
    }
    __syncwarp();
    for (int r = r0; r < r0 + 16; ++r) {
      const float a = row_scale[r];
      for (int c = lane; c < d_v; c += 32) os[r * L.o_ld + c] *= a;
    }
    __syncwarp();
    // O[r0 .. r0 + 16, :] += P V
    for (int j = 0; j < d_v / 16; ++j) {
      wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc;
      wmma::load_matrix_sync(acc, os + r0 * L.o_ld + j * 16, L.o_ld, wmma::mem_row_major);
      for (int kb = 0; kb < kTcKeys / 16; ++kb) {
        wmma::fragment<wmma::matrix_a, 16, 16, 16, __nv_bfloat16, wmma::row_major> a;
        wmma::fragment<wmma::matrix_b, 16, 16, 16, __nv_bfloat16, wmma::row_major> b;
        wmma::load_matrix_sync(a, ps + r0 * L.p_ld + kb * 16, L.p_ld);
        wmma::load_matrix_sync(b, vs + kb * 16 * L.v_ld + j * 16, L.v_ld);
        wmma::mma_sync(acc, a, b, acc);
      }
      wmma::store_matrix_sync(os + r0 * L.o_ld + j * 16, acc, L.o_ld, wmma::mem_row_major);
    }
  }
  __syncthreads();
  for (int idx = tid; idx < kTcQueries * d_v; idx += kTcThreads) {
    const int qi = idx / d_v, c = idx % d_v;
    if (qi < rows) out[((q0 + qi) * s.heads + h) * d_v + c] = os[qi * L.o_ld + c] / row_sum[qi];
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
  if (!s.exact && s.head_dim % 16 == 0 && s.v_dim % 16 == 0) {
    const size_t bytes = TcLayout(static_cast<int>(s.head_dim), static_cast<int>(s.v_dim)).bytes;
    CUDA_RETURN_IF_ERROR(cudaFuncSetAttribute(TensorCoreAttentionKernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                              static_cast<int>(bytes)));
    const dim3 grid(static_cast<unsigned>((s.n + kTcQueries - 1) / kTcQueries), static_cast<unsigned>(s.heads));
    TensorCoreAttentionKernel<<<grid, kTcThreads, bytes, stream>>>(q, k, v, shape, out);
    CUDA_RETURN_IF_ERROR(cudaGetLastError());
    return absl::OkStatus();
  }
  const size_t smem = SharedBytes(s.head_dim, s.v_dim);
  CUDA_RETURN_IF_ERROR(
      cudaFuncSetAttribute(CausalAttentionKernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)));
  const dim3 grid(static_cast<unsigned>((s.n + kQueries - 1) / kQueries), static_cast<unsigned>(s.heads));
  CausalAttentionKernel<<<grid, kThreads, smem, stream>>>(q, k, v, shape, out);
  CUDA_RETURN_IF_ERROR(cudaGetLastError());
  return absl::OkStatus();
}

}  // namespace krasis::cuda
