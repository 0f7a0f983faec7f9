// Causal prefill attention (see prefill_kernels.h), FlashAttention-style: a
// block owns kQueries queries of one head and streams the visible keys and
// values through shared memory kKeys at a time, keeping a running max, sum and
// output per query (online softmax). Nothing of size queries x keys is stored.
// Three kernels: fp32 CUDA-core math (any head_dim and v_dim up to 256; the
// checking mode and odd head sizes); a FlashAttention-2 style one (mma.sync on
// BF16 tensor cores, O and the softmax state in registers) for the head sizes of
// the supported models, which prefill uses; and a simpler tensor-core one (BF16
// wmma, O in shared memory) for other multiples of 16.
#include <cuda_bf16.h>
#include <mma.h>

#include <cmath>
#include <cstdint>
#include <optional>

#include "common/cuda/cuda_check.h"
#include "common/cuda/launch.cuh"
#include "common/cuda/mma.cuh"
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

// ------------------------------------------------ FlashAttention-2 style ---
// Each warp owns 16 query rows of one head, held in registers as BF16 mma
// fragments with their output O (fp32) and softmax state; a block (8 warps, 128
// queries) streams keys 64 at a time through shared memory (K row-major, V
// transposed, both BF16). S = Q K^T and O += P V are mma.sync m16n8k16 on BF16
// tensor cores with fp32 accumulation; the probabilities go from S's
// accumulator registers straight into P's operand registers, so neither S nor P
// nor O touches shared memory. For the head sizes of the supported models
// (template instances); others use the wmma kernel above.
constexpr int kFaWarps = 8;
constexpr int kFaQueries = 16 * kFaWarps;
constexpr int kFaKeys = 64;
constexpr int kFaThreads = 32 * kFaWarps;

template <int DQK, int DV>
constexpr size_t FaSharedBytes() {
  return size_t(kFaKeys) * (DQK + 8) * 2 + size_t(DV) * (kFaKeys + 8) * 2;
}

// K/V elements as stored: float (converted to BF16 as a tile is loaded) or
// BF16 already (copied 16 bytes at a time: half the bytes through L2).
__device__ inline void LoadKvRow(const float* src, __nv_bfloat16* dst) {
  const float4 x = *reinterpret_cast<const float4*>(src);
  *reinterpret_cast<uint2*>(dst) = make_uint2(PackBf16(x.x, x.y), PackBf16(x.z, x.w));
}
template <typename KV>
inline constexpr int kKvVec = sizeof(KV) == 4 ? 4 : 8;  // elements per vector load

template <int DQK, int DV, typename KV>
__global__ void __launch_bounds__(kFaThreads) Fa2AttentionKernel(const float* q, const KV* k, const KV* v,
                                                                AttentionShape s, float* out) {
  constexpr int VEC = kKvVec<KV>;
  constexpr int KLD = DQK + 8, VLD = kFaKeys + 8;  // bf16 elements per shared row (bank-conflict padding)
  extern __shared__ __align__(16) unsigned char smem[];
  auto* ks = reinterpret_cast<__nv_bfloat16*>(smem);
  auto* vt = ks + kFaKeys * KLD;
  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32, g = lane / 4, t = lane % 4;
  const int64_t h = blockIdx.y, kvh = h / (s.heads / s.kv_heads);
  // Later query tiles have more keys: start them first.
  const int64_t q0 = int64_t(gridDim.x - 1 - blockIdx.x) * kFaQueries;
  const int rows = static_cast<int>(min(int64_t{kFaQueries}, s.n - q0));
  const int w0 = warp * 16;  // this warp's first row in the tile

  // Q fragments of rows w0 + g and w0 + g + 8.
  uint32_t qa[DQK / 16][4];
  {
    const int r_lo = w0 + g, r_hi = w0 + g + 8;
    const float* q_lo = q + (q0 + r_lo) * s.q_stride + h * DQK;
    const float* q_hi = q + (q0 + r_hi) * s.q_stride + h * DQK;
    for (int kk = 0; kk < DQK / 16; ++kk) {
      const int c = kk * 16 + 2 * t;
      float2 a = make_float2(0, 0), b = a, c2 = a, d = a;
      if (r_lo < rows) a = *reinterpret_cast<const float2*>(q_lo + c), c2 = *reinterpret_cast<const float2*>(q_lo + c + 8);
      if (r_hi < rows) b = *reinterpret_cast<const float2*>(q_hi + c), d = *reinterpret_cast<const float2*>(q_hi + c + 8);
      qa[kk][0] = PackBf16(a.x, a.y);
      qa[kk][1] = PackBf16(b.x, b.y);
      qa[kk][2] = PackBf16(c2.x, c2.y);
      qa[kk][3] = PackBf16(d.x, d.y);
    }
  }
  float o[DV / 8][4];
  for (int j = 0; j < DV / 8; ++j) o[j][0] = o[j][1] = o[j][2] = o[j][3] = 0.0f;
  float m_lo = -INFINITY, m_hi = -INFINITY, l_lo = 0.0f, l_hi = 0.0f;
  const int64_t pos_lo = s.start_pos + q0 + w0 + g, pos_hi = pos_lo + 8;
  const int64_t warp_last = s.start_pos + q0 + w0 + 15;
  const int64_t last_pos = s.start_pos + q0 + rows - 1;
  const float scale = s.scale;

  for (int64_t k0 = 0; k0 <= last_pos; k0 += kFaKeys) {
    __syncthreads();  // every warp is done with the previous tile
    // K tile [64][DQK] and V tile transposed [DV][64], BF16, zeros past last_pos.
    for (int idx = tid; idx < kFaKeys * DQK / VEC; idx += kFaThreads) {
      const int kj = idx / (DQK / VEC), c = (idx % (DQK / VEC)) * VEC;
      const int64_t p = k0 + kj;
      __nv_bfloat16* dst = ks + kj * KLD + c;
      if (p > last_pos) {
        for (int e = 0; e < VEC; ++e) dst[e] = __float2bfloat16_rn(0.0f);
      } else if constexpr (VEC == 4) {
        LoadKvRow(reinterpret_cast<const float*>(k) + p * s.k_stride + kvh * DQK + c, dst);
      } else {
        *reinterpret_cast<uint4*>(dst) = *reinterpret_cast<const uint4*>(k + p * s.k_stride + kvh * DQK + c);
      }
    }
    for (int idx = tid; idx < kFaKeys * DV / VEC; idx += kFaThreads) {
      const int kj = idx % kFaKeys, c = (idx / kFaKeys) * VEC;
      const int64_t p = k0 + kj;
      __nv_bfloat16 x[VEC];
      if (p > last_pos) {
        for (int e = 0; e < VEC; ++e) x[e] = __float2bfloat16_rn(0.0f);
      } else if constexpr (VEC == 4) {
        LoadKvRow(reinterpret_cast<const float*>(v) + p * s.v_stride + kvh * DV + c, x);
      } else {
        *reinterpret_cast<uint4*>(x) = *reinterpret_cast<const uint4*>(v + p * s.v_stride + kvh * DV + c);
      }
      for (int e = 0; e < VEC; ++e) vt[(c + e) * VLD + kj] = x[e];
    }
    __syncthreads();
    if (k0 > warp_last || w0 >= rows) continue;  // every key of the tile is after this warp's queries

    float sc[kFaKeys / 8][4];
    for (int j = 0; j < kFaKeys / 8; ++j) sc[j][0] = sc[j][1] = sc[j][2] = sc[j][3] = 0.0f;
    for (int kk = 0; kk < DQK / 16; ++kk) {
      for (int j = 0; j < kFaKeys / 8; ++j) {
        const __nv_bfloat16* kr = ks + (8 * j + g) * KLD + kk * 16 + 2 * t;
        MmaBf16(sc[j], qa[kk], *reinterpret_cast<const uint32_t*>(kr), *reinterpret_cast<const uint32_t*>(kr + 8));
      }
    }
    float mx_lo = -INFINITY, mx_hi = -INFINITY;
    for (int j = 0; j < kFaKeys / 8; ++j) {
      for (int e = 0; e < 4; ++e) {
        const int64_t key = k0 + 8 * j + 2 * t + (e & 1);
        const bool lo = e < 2;
        const bool visible = key <= (lo ? pos_lo : pos_hi);
        sc[j][e] = visible ? sc[j][e] * scale : -INFINITY;
        if (lo) {
          mx_lo = fmaxf(mx_lo, sc[j][e]);
        } else {
          mx_hi = fmaxf(mx_hi, sc[j][e]);
        }
      }
    }
    for (int o2 = 1; o2 <= 2; o2 <<= 1) {
      mx_lo = fmaxf(mx_lo, __shfl_xor_sync(0xffffffffu, mx_lo, o2));
      mx_hi = fmaxf(mx_hi, __shfl_xor_sync(0xffffffffu, mx_hi, o2));
    }
    const float new_lo = fmaxf(m_lo, mx_lo), new_hi = fmaxf(m_hi, mx_hi);
    const float alpha_lo = new_lo == -INFINITY ? 1.0f : __expf(m_lo - new_lo);
    const float alpha_hi = new_hi == -INFINITY ? 1.0f : __expf(m_hi - new_hi);
    float sum_lo = 0.0f, sum_hi = 0.0f;
    uint32_t pa[kFaKeys / 16][4];
    for (int j = 0; j < kFaKeys / 8; ++j) {
      float p[4];
      for (int e = 0; e < 4; ++e) {
        const float m = e < 2 ? new_lo : new_hi;
        // Rounded to BF16 as P V multiplies them, so the sum matches.
        p[e] = m == -INFINITY ? 0.0f : __bfloat162float(__float2bfloat16_rn(__expf(sc[j][e] - m)));
      }
      sum_lo += p[0] + p[1];
      sum_hi += p[2] + p[3];
      // S tile j's accumulator layout is half of P's operand layout for keys 16 * (j / 2).
      pa[j / 2][(j % 2) * 2 + 0] = PackBf16(p[0], p[1]);
      pa[j / 2][(j % 2) * 2 + 1] = PackBf16(p[2], p[3]);
    }
    for (int o2 = 1; o2 <= 2; o2 <<= 1) {
      sum_lo += __shfl_xor_sync(0xffffffffu, sum_lo, o2);
      sum_hi += __shfl_xor_sync(0xffffffffu, sum_hi, o2);
    }
    l_lo = l_lo * alpha_lo + sum_lo;
    l_hi = l_hi * alpha_hi + sum_hi;
    m_lo = new_lo;
    m_hi = new_hi;
    for (int j = 0; j < DV / 8; ++j) {
      o[j][0] *= alpha_lo;
      o[j][1] *= alpha_lo;
      o[j][2] *= alpha_hi;
      o[j][3] *= alpha_hi;
    }
    for (int kk = 0; kk < kFaKeys / 16; ++kk) {
      for (int j = 0; j < DV / 8; ++j) {
        const __nv_bfloat16* vr = vt + (8 * j + g) * VLD + kk * 16 + 2 * t;
        MmaBf16(o[j], pa[kk], *reinterpret_cast<const uint32_t*>(vr), *reinterpret_cast<const uint32_t*>(vr + 8));
      }
    }
  }
  const int r_lo = w0 + g, r_hi = r_lo + 8;
  for (int j = 0; j < DV / 8; ++j) {
    const int c = 8 * j + 2 * t;
    if (r_lo < rows) {
      float* dst = out + ((q0 + r_lo) * s.heads + h) * DV + c;
      *reinterpret_cast<float2*>(dst) = make_float2(o[j][0] / l_lo, o[j][1] / l_lo);
    }
    if (r_hi < rows) {
      float* dst = out + ((q0 + r_hi) * s.heads + h) * DV + c;
      *reinterpret_cast<float2*>(dst) = make_float2(o[j][2] / l_hi, o[j][3] / l_hi);
    }
  }
}

template <int DQK, int DV, typename KV>
absl::Status LaunchFa2(const float* q, const KV* k, const KV* v, const AttentionShape& s, float* out,
                       cudaStream_t stream) {
  constexpr size_t bytes = FaSharedBytes<DQK, DV>();
  CUDA_RETURN_IF_ERROR(
      cudaFuncSetAttribute(Fa2AttentionKernel<DQK, DV, KV>, cudaFuncAttributeMaxDynamicSharedMemorySize, int(bytes)));
  const dim3 grid(static_cast<unsigned>((s.n + kFaQueries - 1) / kFaQueries), static_cast<unsigned>(s.heads));
  Fa2AttentionKernel<DQK, DV, KV><<<grid, kFaThreads, bytes, stream>>>(q, k, v, s, out);
  CUDA_RETURN_IF_ERROR(cudaGetLastError());
  return absl::OkStatus();
}

// The FlashAttention-2 kernel when it has an instance for the head sizes and the
// rows allow its vector loads (16-byte aligned K/V rows, 8-byte aligned Q rows);
// nullopt otherwise.
template <typename KV>
std::optional<absl::Status> TryFa2(const float* q, const KV* k, const KV* v, const AttentionShape& s, float* out,
                                   cudaStream_t stream) {
  auto aligned = [](const void* p, size_t a) { return reinterpret_cast<uintptr_t>(p) % a == 0; };
  constexpr int vec = kKvVec<KV>;
  if (!aligned(k, 16) || !aligned(v, 16) || s.k_stride % vec != 0 || s.v_stride % vec != 0 || !aligned(q, 8) ||
      s.q_stride % 2 != 0 || !aligned(out, 8)) {
    return std::nullopt;
  }
  const int64_t dq = s.head_dim, dv = s.v_dim;
  if (dq == 32 && dv == 32) return LaunchFa2<32, 32>(q, k, v, s, out, stream);
  if (dq == 64 && dv == 64) return LaunchFa2<64, 64>(q, k, v, s, out, stream);
  if (dq == 128 && dv == 128) return LaunchFa2<128, 128>(q, k, v, s, out, stream);
  if (dq == 192 && dv == 128) return LaunchFa2<192, 128>(q, k, v, s, out, stream);
  if (dq == 256 && dv == 256) return LaunchFa2<256, 256>(q, k, v, s, out, stream);  // Qwen3-Next
  return std::nullopt;
}

}  // namespace

bool CausalAttentionTakesBf16Kv(const AttentionShape& s) {
  return !s.exact && ((s.head_dim == 32 && s.v_dim == 32) || (s.head_dim == 64 && s.v_dim == 64) ||
                      (s.head_dim == 128 && s.v_dim == 128) || (s.head_dim == 192 && s.v_dim == 128) ||
                      (s.head_dim == 256 && s.v_dim == 256));
}

absl::Status LaunchCausalAttentionBf16Kv(const float* q, const uint16_t* k, const uint16_t* v, const AttentionShape& s,
                                         float* out, cudaStream_t stream) {
  if (s.n <= 0) return absl::OkStatus();
  if (!CausalAttentionTakesBf16Kv(s) || s.heads <= 0 || s.kv_heads <= 0 || s.heads % s.kv_heads != 0 ||
      s.start_pos < 0) {
    return InvalidArgumentError("LaunchCausalAttentionBf16Kv: unsupported shape (heads ", s.heads, "/", s.kv_heads,
                                ", head_dim ", s.head_dim, ", v_dim ", s.v_dim, s.exact ? ", exact" : "", ")");
  }
  AttentionShape shape = s;
  if (shape.q_stride == 0) shape.q_stride = s.heads * s.head_dim;
  auto launched = TryFa2(q, reinterpret_cast<const __nv_bfloat16*>(k), reinterpret_cast<const __nv_bfloat16*>(v),
                         shape, out, stream);
  if (!launched) {
    return InvalidArgumentError("LaunchCausalAttentionBf16Kv: K/V rows must be 16-byte aligned (strides multiples of 8)");
  }
  return *launched;
}

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
  if (!s.exact) {
    if (auto launched = TryFa2(q, k, v, shape, out, stream)) return *launched;
  }
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
