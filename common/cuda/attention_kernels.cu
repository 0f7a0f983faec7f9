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
// Each warp owns MT x 16 query rows of one head, with their output O (fp32) and
// softmax state in registers; a block of NW warps streams the keys 64 at a time
// through shared memory as BF16, K and V both row-major with 16 bytes of padding
// per row (the eight 16-byte rows one ldmatrix phase reads then fall in distinct
// banks). S = Q K^T and O += P V are mma.sync m16n8k16 on BF16 tensor cores with
// fp32 accumulation; K's B fragments come from ldmatrix, V's from ldmatrix.trans
// (V needs no transposed copy); the probabilities go from S's accumulator
// registers straight into P's operand registers, so neither S nor P nor O
// touches shared memory.
//
// Key tiles are double-buffered: while the warps work on tile i, tile i + 1 is
// on its way (cp.async, bypassing the registers, for BF16 K/V; through the
// registers with a conversion for float K/V), so each tile costs one
// __syncthreads and the warps do not wait for memory between tiles.
//
// MT = 1: Q's fragments sit in registers, loaded once. MT = 2: 32 rows per warp,
// so each K or V fragment read from shared memory feeds two mma instead of one
// (with 16 rows the shared-memory reads, not the tensor cores, bound the
// kernel); Q then lives in shared memory (its registers would not fit beside
// twice the O and S) and its A fragments are read with ldmatrix on every tile.
// Q sits in shared memory for head_dim 256 too: beside its O (128 registers)
// its 64 fragment registers would spill. On an H200 (attention_bench, BF16 K/V,
// 16 heads) MT = 2 was at most 4% faster (16K tokens) or slower (4K) and spills
// a little, so every instance runs MT = 1 with 8 warps: 128 queries a block,
// one block per SM (about 226 registers a thread).
// For the head sizes of the supported models (template instances); others use
// the wmma kernel above.
constexpr int kFaKeys = 64;

template <int DQK, int DV, int MT, int NW>
struct Fa2Tiling {
  static constexpr int kThreads = 32 * NW;
  static constexpr int kRows = 16 * MT * NW;  // queries per block
  static constexpr int kKld = DQK + 8, kVld = DV + 8, kQld = DQK + 8;  // bf16 per shared row
  static constexpr int kStage = kFaKeys * (kKld + kVld);              // bf16 per K+V stage
  // Q in shared memory rather than registers (see Fa2AttentionKernel).
  static constexpr bool kQShared = MT > 1 || DQK > 192;
  static constexpr size_t kQBytes = kQShared ? size_t(kRows) * kQld * 2 : 0;
  static constexpr size_t kBytes = kQBytes + 2 * size_t(kStage) * 2;
};

// K/V elements as stored: float (converted to BF16 as a tile is loaded) or
// BF16 already (copied 16 bytes at a time: half the bytes through L2).
__device__ inline void LoadKvRow(const float* src, __nv_bfloat16* dst) {
  const float4 x = *reinterpret_cast<const float4*>(src);
  *reinterpret_cast<uint2*>(dst) = make_uint2(PackBf16(x.x, x.y), PackBf16(x.z, x.w));
}
template <typename KV>
inline constexpr int kKvVec = sizeof(KV) == 4 ? 4 : 8;  // elements per vector load

// Rows k0 .. k0 + kFaKeys - 1 of one head's K or V (D wide, `src` at the head's
// first column) into shared rows of LD elements; zeros past last_pos, so the
// masked keys of the last tile hold no NaN that 0 * NaN could spread. The row
// is cut into segments of 64 elements (or D if less) and CPS consecutive
// threads copy one segment of a row: every thread keeps one row and one column
// for the whole tile, so its addresses are one pointer plus constant offsets
// (computing each chunk's address from scratch costs registers the kernel has
// not got).
template <int D, int LD, int NT, typename KV>
__device__ inline void LoadKvRows(const KV* src, int64_t stride, int64_t k0, int64_t last_pos, __nv_bfloat16* dst,
                                  int tid) {
  constexpr int VEC = kKvVec<KV>, SW = D < 64 ? D : 64, CPS = SW / VEC, RP = NT / CPS;  // RP: rows per pass
  static_assert(D % SW == 0 && NT % CPS == 0 && kFaKeys % RP == 0, "whole tile in whole passes");
  const int r0 = tid / CPS, c0 = (tid % CPS) * VEC;
  const KV* row = src + (k0 + r0) * stride + c0;
  __nv_bfloat16* d = dst + r0 * LD + c0;
#pragma unroll
  for (int pass = 0; pass < kFaKeys / RP; ++pass) {
    const bool valid = k0 + r0 + pass * RP <= last_pos;
    const KV* from = valid ? row + pass * RP * stride : src;  // a valid address either way
#pragma unroll
    for (int seg = 0; seg < D / SW; ++seg) {
      __nv_bfloat16* to = d + pass * RP * LD + seg * SW;
      if constexpr (VEC == 8) {
        CpAsync16(to, from + seg * SW, valid);  // zero-filled when !valid
      } else if (valid) {
        LoadKvRow(reinterpret_cast<const float*>(from) + seg * SW, to);
      } else {
        *reinterpret_cast<uint2*>(to) = make_uint2(0, 0);
      }
    }
  }
}

__device__ inline float Exp2(float x) {  // 2^x, one MUFU op; 2^-inf = 0
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
  return y;
}

// Output O: float, or __nv_bfloat16 (what the o_proj GEMM reads, rounded from
// the same float values).
template <int DQK, int DV, typename KV, int MT, int NW, typename O>
__global__ void __launch_bounds__(32 * NW) Fa2AttentionKernel(const float* q, const KV* k, const KV* v,
                                                            AttentionShape s, O* out) {
  using T = Fa2Tiling<DQK, DV, MT, NW>;
  constexpr int KLD = T::kKld, VLD = T::kVld, QLD = T::kQld, NT = T::kThreads;
  extern __shared__ __align__(16) unsigned char smem[];
  auto* qs = reinterpret_cast<__nv_bfloat16*>(smem);                // [kRows][QLD], kQShared only
  auto* stages = reinterpret_cast<__nv_bfloat16*>(smem + T::kQBytes);  // 2 x (K [64][KLD], V [64][VLD])
  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32, g = lane / 4, t = lane % 4;
  // Heads vary fastest and later query tiles (more keys) come first: every
  // head's heaviest tiles start in the first waves, and the heads of one KV
  // head run side by side while its K/V are in L2.
  const int64_t h = blockIdx.x, kvh = h / (s.heads / s.kv_heads);
  const int64_t q0 = int64_t(gridDim.y - 1 - blockIdx.y) * T::kRows;
  const int rows = static_cast<int>(min(int64_t{T::kRows}, s.n - q0));
  const int w0 = warp * 16 * MT;  // this warp's first row in the tile
  const int64_t last_pos = s.start_pos + q0 + rows - 1;
  const KV* kh = k + kvh * DQK;
  const KV* vh = v + kvh * DV;
  const uint32_t stages_addr = static_cast<uint32_t>(__cvta_generic_to_shared(stages));
  const uint32_t q_lane = static_cast<uint32_t>(__cvta_generic_to_shared(qs)) +
                          ((w0 + lane % 16) * QLD + 8 * (lane / 16)) * 2;  // kQShared: A fragments

  // The first tile is on its way while Q is read.
  LoadKvRows<DQK, KLD, NT>(kh, s.k_stride, 0, last_pos, stages, tid);
  LoadKvRows<DV, VLD, NT>(vh, s.v_stride, 0, last_pos, stages + kFaKeys * KLD, tid);
  CpAsyncCommit();

  // !kQShared: Q fragments of rows w0 + g and w0 + g + 8 in registers.
  uint32_t qa[T::kQShared ? 1 : DQK / 16][4];
  if constexpr (!T::kQShared) {
    const int r_lo = w0 + g, r_hi = w0 + g + 8;
    const float* q_lo = q + (q0 + r_lo) * s.q_stride + h * DQK;
    const float* q_hi = q + (q0 + r_hi) * s.q_stride + h * DQK;
#pragma unroll
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
  } else {
    // The block's Q rows in BF16 in shared memory, zeros past the last
    // query (float2 loads: Q rows are only 8-byte aligned).
    for (int idx = tid; idx < T::kRows * DQK / 2; idx += NT) {
      const int r = idx / (DQK / 2), c = (idx % (DQK / 2)) * 2;
      float2 x = make_float2(0, 0);
      if (r < rows) x = *reinterpret_cast<const float2*>(q + (q0 + r) * s.q_stride + h * DQK + c);
      *reinterpret_cast<uint32_t*>(qs + r * QLD + c) = PackBf16(x.x, x.y);
    }
  }
  float o[MT][DV / 8][4];
  float m_run[MT][2], l_run[MT][2];  // per m-tile: rows g and g + 8
#pragma unroll
  for (int mt = 0; mt < MT; ++mt) {
#pragma unroll
    for (int j = 0; j < DV / 8; ++j) o[mt][j][0] = o[mt][j][1] = o[mt][j][2] = o[mt][j][3] = 0.0f;
    m_run[mt][0] = m_run[mt][1] = -INFINITY;
    l_run[mt][0] = l_run[mt][1] = 0.0f;
  }
  // Scores are kept in log2 units: exp(x * scale) = 2^(x * scale * log2 e).
  const float scale_log2 = s.scale * 1.4426950408889634f;
  const int64_t warp_first = s.start_pos + q0 + w0, warp_last = warp_first + 16 * MT - 1;
  const bool warp_idle = w0 >= rows;
  const int tiles = static_cast<int>(last_pos / kFaKeys) + 1;

  for (int it = 0; it < tiles; ++it) {
    const int64_t k0 = int64_t(it) * kFaKeys;
    CpAsyncWait<0>();
    // Tile `it` (and Q) visible to every warp; every warp is done with tile
    // it - 1, whose stage the next load overwrites.
    __syncthreads();
    if (it + 1 < tiles) {
      __nv_bfloat16* next = stages + ((it + 1) & 1) * T::kStage;
      LoadKvRows<DQK, KLD, NT>(kh, s.k_stride, k0 + kFaKeys, last_pos, next, tid);
      LoadKvRows<DV, VLD, NT>(vh, s.v_stride, k0 + kFaKeys, last_pos, next + kFaKeys * KLD, tid);
      CpAsyncCommit();
    }
    if (warp_idle || k0 > warp_last) continue;  // every key of the tile is after this warp's queries
    // This lane's ldmatrix row addresses (shared space, bytes) for the fragments
    // of the first key / column tile; the others are constant offsets from them.
    const uint32_t ks = stages_addr + (it & 1) * (T::kStage * 2);
    const uint32_t k_lane = ks + ((8 * (lane / 16) + lane % 8) * KLD + 8 * ((lane / 8) % 2)) * 2;
    const uint32_t v_lane = ks + (kFaKeys * KLD + (8 * ((lane / 8) % 2) + lane % 8) * VLD + 8 * (lane / 16)) * 2;

    float sc[MT][kFaKeys / 8][4];
#pragma unroll
    for (int mt = 0; mt < MT; ++mt) {
#pragma unroll
      for (int j = 0; j < kFaKeys / 8; ++j) sc[mt][j][0] = sc[mt][j][1] = sc[mt][j][2] = sc[mt][j][3] = 0.0f;
    }
#pragma unroll
    for (int kk = 0; kk < DQK / 16; ++kk) {
      uint32_t a[MT][4];
#pragma unroll
      for (int mt = 0; mt < MT; ++mt) {
        if constexpr (!T::kQShared) {
          a[mt][0] = qa[kk][0], a[mt][1] = qa[kk][1], a[mt][2] = qa[kk][2], a[mt][3] = qa[kk][3];
        } else {
          // Matrices: rows 0-7 / 8-15 of the m-tile x columns 0-7 / 8-15 of kk.
          LdMatrixX4(a[mt], q_lane + (16 * mt * QLD + kk * 16) * 2);
        }
      }
#pragma unroll
      for (int jp = 0; jp < kFaKeys / 16; ++jp) {
        // Matrices: keys 16 jp + 0-7 / 8-15 x columns 0-7 / 8-15 of kk, i.e.
        // b0, b1 of key tile 2 jp and of key tile 2 jp + 1.
        uint32_t b[4];
        LdMatrixX4(b, k_lane + (16 * jp * KLD + kk * 16) * 2);
#pragma unroll
        for (int mt = 0; mt < MT; ++mt) {
          MmaBf16(sc[mt][2 * jp], a[mt], b[0], b[1]);
          MmaBf16(sc[mt][2 * jp + 1], a[mt], b[2], b[3]);
        }
      }
    }
    // Only a tile reaching past the warp's first query needs the causal mask:
    // key column c of the tile is visible to warp row r iff c <= r + diag.
    const bool diag_tile = k0 + kFaKeys - 1 > warp_first;
    const int diag = static_cast<int>(warp_first - k0);
    float sum[MT][2];
#pragma unroll
    for (int mt = 0; mt < MT; ++mt) {
      float mx[2] = {-INFINITY, -INFINITY};
#pragma unroll
      for (int j = 0; j < kFaKeys / 8; ++j) {
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          float x = sc[mt][j][e] * scale_log2;
          if (diag_tile && 8 * j + 2 * t + (e & 1) > 16 * mt + g + 8 * (e / 2) + diag) x = -INFINITY;
          sc[mt][j][e] = x;
          mx[e / 2] = fmaxf(mx[e / 2], x);
        }
      }
#pragma unroll
      for (int r = 0; r < 2; ++r) {
        mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 1));
        mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 2));
        // Finite: key 0 is visible to every row and comes in the first tile. On
        // that tile the old max is -inf and alpha 0 (O and l are still 0).
        const float m_new = fmaxf(m_run[mt][r], mx[r]);
        const float alpha = Exp2(m_run[mt][r] - m_new);
        m_run[mt][r] = m_new;
        l_run[mt][r] *= alpha;
        sum[mt][r] = 0.0f;
#pragma unroll
        for (int j = 0; j < DV / 8; ++j) {
          o[mt][j][2 * r] *= alpha;
          o[mt][j][2 * r + 1] *= alpha;
        }
      }
    }
    // P V, 16 keys at a time: P's operand registers for those keys are made
    // from S tiles 2 kk and 2 kk + 1 just before their mma, so S's registers die
    // as P's are born (S and P of the whole tile never live together).
#pragma unroll
    for (int kk = 0; kk < kFaKeys / 16; ++kk) {
      uint32_t pa[MT][4];
#pragma unroll
      for (int mt = 0; mt < MT; ++mt) {
#pragma unroll
        for (int half = 0; half < 2; ++half) {
          const int j = 2 * kk + half;
          float p[4];
#pragma unroll
          for (int e = 0; e < 4; ++e) {
            // Rounded to BF16 as P V multiplies them, so the sum matches.
            p[e] = __bfloat162float(__float2bfloat16_rn(Exp2(sc[mt][j][e] - m_run[mt][e / 2])));
          }
          sum[mt][0] += p[0] + p[1];
          sum[mt][1] += p[2] + p[3];
          // S tile j's accumulator layout is half of P's operand layout for keys 16 kk.
          pa[mt][half * 2 + 0] = PackBf16(p[0], p[1]);
          pa[mt][half * 2 + 1] = PackBf16(p[2], p[3]);
        }
      }
#pragma unroll
      for (int jp = 0; jp < DV / 16; ++jp) {
        // Matrices (transposed): keys 16 kk + 0-7 / 8-15 x value columns
        // 16 jp + 0-7 / 8-15, i.e. b0, b1 of column tile 2 jp and of 2 jp + 1.
        uint32_t b[4];
        LdMatrixX4Trans(b, v_lane + (16 * kk * VLD + 16 * jp) * 2);
#pragma unroll
        for (int mt = 0; mt < MT; ++mt) {
          MmaBf16(o[mt][2 * jp], pa[mt], b[0], b[1]);
          MmaBf16(o[mt][2 * jp + 1], pa[mt], b[2], b[3]);
        }
      }
    }
#pragma unroll
    for (int mt = 0; mt < MT; ++mt) {
#pragma unroll
      for (int r = 0; r < 2; ++r) {
        sum[mt][r] += __shfl_xor_sync(0xffffffffu, sum[mt][r], 1);
        sum[mt][r] += __shfl_xor_sync(0xffffffffu, sum[mt][r], 2);
        l_run[mt][r] += sum[mt][r];
      }
    }
  }
#pragma unroll
  for (int mt = 0; mt < MT; ++mt) {
    const int r_lo = w0 + 16 * mt + g, r_hi = r_lo + 8;
#pragma unroll
    for (int j = 0; j < DV / 8; ++j) {
      const int c = 8 * j + 2 * t;
      auto put = [&](int r, float a, float b) {
        O* dst = out + ((q0 + r) * s.heads + h) * DV + c;
        if constexpr (sizeof(O) == 4) {
          *reinterpret_cast<float2*>(dst) = make_float2(a, b);
        } else {
          *reinterpret_cast<__nv_bfloat162*>(dst) = __floats2bfloat162_rn(a, b);
        }
      };
      if (r_lo < rows) put(r_lo, o[mt][j][0] / l_run[mt][0], o[mt][j][1] / l_run[mt][0]);
      if (r_hi < rows) put(r_hi, o[mt][j][2] / l_run[mt][1], o[mt][j][3] / l_run[mt][1]);
    }
  }
}

template <int DQK, int DV, int MT, int NW, typename KV, typename O>
absl::Status LaunchFa2Tiled(const float* q, const KV* k, const KV* v, const AttentionShape& s, O* out,
                       cudaStream_t stream) {
  using T = Fa2Tiling<DQK, DV, MT, NW>;
  auto* kernel = Fa2AttentionKernel<DQK, DV, KV, MT, NW, O>;
  CUDA_RETURN_IF_ERROR(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(T::kBytes)));
  const int64_t tiles = (s.n + T::kRows - 1) / T::kRows;
  if (tiles > 65535) return InvalidArgumentError("causal attention: ", s.n, " queries is more than one launch takes");
  const dim3 grid(static_cast<unsigned>(s.heads), static_cast<unsigned>(tiles));
  kernel<<<grid, T::kThreads, T::kBytes, stream>>>(q, k, v, s, out);
  CUDA_RETURN_IF_ERROR(cudaGetLastError());
  return absl::OkStatus();
}

// The tiling each head size runs with (see Fa2AttentionKernel): 8 warps of 16
// rows for all of them.
template <int DQK, int DV, typename KV, typename O>
absl::Status LaunchFa2(const float* q, const KV* k, const KV* v, const AttentionShape& s, O* out,
                       cudaStream_t stream) {
  return LaunchFa2Tiled<DQK, DV, 1, 8>(q, k, v, s, out, stream);
}

// The FlashAttention-2 kernel when it has an instance for the head sizes and the
// rows allow its vector loads (16-byte aligned K/V rows, 8-byte aligned Q rows);
// nullopt otherwise.
template <typename KV, typename O>
std::optional<absl::Status> TryFa2(const float* q, const KV* k, const KV* v, const AttentionShape& s, O* out,
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

namespace {
template <typename O>
absl::Status Bf16KvAttention(const float* q, const uint16_t* k, const uint16_t* v, const AttentionShape& s, O* out,
                             cudaStream_t stream) {
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
}  // namespace

absl::Status LaunchCausalAttentionBf16Kv(const float* q, const uint16_t* k, const uint16_t* v, const AttentionShape& s,
                                         float* out, cudaStream_t stream) {
  return Bf16KvAttention(q, k, v, s, out, stream);
}

absl::Status LaunchCausalAttentionBf16KvToBf16(const float* q, const uint16_t* k, const uint16_t* v,
                                               const AttentionShape& s, uint16_t* out, cudaStream_t stream) {
  return Bf16KvAttention(q, k, v, s, reinterpret_cast<__nv_bfloat16*>(out), stream);
}

absl::Status LaunchCausalAttentionBf16KvVariant(int variant, const float* q, const uint16_t* k, const uint16_t* v,
                                                const AttentionShape& s, float* out, cudaStream_t stream) {
  if (variant == 0) return LaunchCausalAttentionBf16Kv(q, k, v, s, out, stream);
  AttentionShape shape = s;
  if (shape.q_stride == 0) shape.q_stride = s.heads * s.head_dim;
  const auto* k16 = reinterpret_cast<const __nv_bfloat16*>(k);
  const auto* v16 = reinterpret_cast<const __nv_bfloat16*>(v);
  if (s.n <= 0 || s.heads % s.kv_heads != 0 || s.k_stride % 8 != 0 || s.v_stride % 8 != 0 || shape.q_stride % 2 != 0) {
    return InvalidArgumentError("LaunchCausalAttentionBf16KvVariant: unsupported shape");
  }
  if (s.head_dim == 192 && s.v_dim == 128) {
    switch (variant) {
      case 2: return LaunchFa2Tiled<192, 128, 1, 8>(q, k16, v16, shape, out, stream);
      case 3: return LaunchFa2Tiled<192, 128, 1, 4>(q, k16, v16, shape, out, stream);
      case 4: return LaunchFa2Tiled<192, 128, 2, 4>(q, k16, v16, shape, out, stream);
      case 5: return LaunchFa2Tiled<192, 128, 2, 8>(q, k16, v16, shape, out, stream);
      default: break;
    }
  } else if (s.head_dim == 256 && s.v_dim == 256) {
    switch (variant) {
      case 2: return LaunchFa2Tiled<256, 256, 1, 8>(q, k16, v16, shape, out, stream);
      case 3: return LaunchFa2Tiled<256, 256, 1, 4>(q, k16, v16, shape, out, stream);
      default: break;
    }
  }
  return InvalidArgumentError("LaunchCausalAttentionBf16KvVariant: no variant ", variant, " for head_dim ", s.head_dim,
                              " / v_dim ", s.v_dim);
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
