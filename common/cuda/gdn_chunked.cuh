// The chunked (WY) Gated DeltaNet delta rule's kernels (see LaunchGdnChunked
// in prefill_kernels.h) and their launch geometry. Included by gdn_kernels.cu,
// and by a CPU test that runs the same kernel code with each block's threads as
// std::threads (tests/models/gdn_chunked_emulation_test.cc), which defines the
// CUDA vocabulary the code uses (__global__, threadIdx, __syncthreads, ...),
// KRASIS_DYNAMIC_SHARED_FLOATS and KRASIS_UNROLL before including this file.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>

#ifndef KRASIS_DYNAMIC_SHARED_FLOATS
#define KRASIS_DYNAMIC_SHARED_FLOATS(name) extern __shared__ float name[]
#endif
#ifndef KRASIS_UNROLL
#define KRASIS_UNROLL _Pragma("unroll")
#endif

namespace krasis::cuda {

constexpr int kGdnCols = 32;  // columns of the state per block (one per lane)

// The gated delta rule chunk by chunk in the WY form (ref::GatedDeltaChunked): tokens go in
// chunks of kGdnChunk, and a prompt in pieces of kGdnPiece tokens whose
// per-chunk terms fit the scratch. Per piece, two kernels:
//  - GdnChunkPrepKernel, one block per (chunk, value head), all in parallel:
//    lg (the log of the decays' product up to each token, clamped at -80 per
//    token: e^-80 is 0 beside the terms it meets), A[t, i] = beta_t g_t / g_i
//    k_t.k_i (i < t), P[t, i] = g_t / g_i q_t.k_i (i <= t, 0 above), and
//    [U | W] = (I + A)^-1 diag(beta) [V | diag(g) K] by forward substitution,
//    one thread per column with the column's 64 rows in registers.
//  - GdnChunkStateKernel, one block per (value head, 32 columns of S), the
//    chunks in order: D = U - W S; O = diag(g) Q S + P D; S = g_C S +
//    (diag(g_C / g) K)^T D. Columns of S are independent, as in the recurrence.
constexpr int kGdnChunk = 64;
constexpr int64_t kGdnPiece = 2048;  // tokens per piece: a multiple of kGdnChunk
constexpr int kGdnStateWarps = 8;    // kGdnChunk / 8 rows of D and O per warp
constexpr float kGdnMinLogDecay = -80.0f;

// Scratch of one piece of `m` tokens, value head h (m rounded up to whole chunks).
struct GdnChunkScratch {
  float* u;   // [nv, mp, dv]
  float* w;   // [nv, mp, dk]
  float* p;   // [nv, mp, kGdnChunk]
  float* lg;  // [nv, mp]
  int64_t mp;
};

__device__ inline int64_t GdnConvDim(int nk, int nv, int dk, int dv) {
  return 2 * static_cast<int64_t>(nk) * dk + static_cast<int64_t>(nv) * dv;
}

// At most 256 threads, so that a column's 64 rows stay in registers.
__global__ void __launch_bounds__(256, 1) GdnChunkPrepKernel(const float* mixed, const float* gates, int64_t first,
                                                          int64_t m, int nk, int nv, int dk, int dv,
                                                          GdnChunkScratch out) {
  KRASIS_DYNAMIC_SHARED_FLOATS(smem);
  constexpr int C = kGdnChunk;
  const int ldk = dk + 1;  // rows a warp reads at once land in different banks
  float* sk = smem;             // [C, ldk]
  float* sq = sk + C * ldk;     // [C, ldk]
  float* sa = sq + C * ldk;     // [C, C + 1]
  float* slg = sa + C * (C + 1);  // [C]
  float* sb = slg + C;            // [C]: beta
  const int h = blockIdx.y, kh = h / (nv / nk);
  const int64_t row0 = static_cast<int64_t>(blockIdx.x) * C;
  const int c = static_cast<int>(m - row0 < C ? m - row0 : C);
  const int64_t conv_dim = GdnConvDim(nk, nv, dk, dv);
  const float* base = mixed + (first + row0) * conv_dim;
  for (int i = threadIdx.x; i < C * dk; i += blockDim.x) {
    const int t = i / dk, x = i % dk;
    const float* r = base + t * conv_dim + static_cast<int64_t>(kh) * dk + x;
    sq[t * ldk + x] = t < c ? r[0] : 0.0f;
    sk[t * ldk + x] = t < c ? r[static_cast<int64_t>(nk) * dk] : 0.0f;
  }
  const float* g = gates + (first + row0) * 2 * nv;
  for (int t = threadIdx.x; t < C; t += blockDim.x) sb[t] = t < c ? g[t * 2 * nv + h] : 0.0f;
  if (threadIdx.x == 0) {
    double acc = 0.0;  // in double: the differences of nearby sums are what is used
    for (int t = 0; t < C; ++t) {
      if (t < c) acc += fmaxf(logf(g[t * 2 * nv + nv + h]), kGdnMinLogDecay);
      slg[t] = static_cast<float>(acc);
    }
  }
  __syncthreads();
  const int64_t hrow = static_cast<int64_t>(h) * out.mp + row0;  // the piece's row of this head and chunk
  for (int idx = threadIdx.x; idx < C * C; idx += blockDim.x) {
    const int t = idx / C, i = idx % C;
    float a = 0.0f, pq = 0.0f;
    if (i <= t) {
      const float r = expf(slg[t] - slg[i]);
      float dq = 0.0f, dkk = 0.0f;
      for (int x = 0; x < dk; ++x) {
        const float ki = sk[i * ldk + x];
        dq += sq[t * ldk + x] * ki;
        dkk += sk[t * ldk + x] * ki;
      }
      pq = r * dq;
      if (i < t) a = sb[t] * r * dkk;
    }
    sa[t * (C + 1) + i] = a;
    out.p[(hrow + t) * C + i] = pq;
  }
  for (int t = threadIdx.x; t < C; t += blockDim.x) out.lg[hrow + t] = slg[t];
  __syncthreads();
  const int width = dv + dk;
  for (int col = threadIdx.x; col < width; col += blockDim.x) {
    // The right-hand side, then the substitution in place.
    float x[C];
    if (col < dv) {
      const float* vc = base + 2 * static_cast<int64_t>(nk) * dk + static_cast<int64_t>(h) * dv + col;
KRASIS_UNROLL
      for (int t = 0; t < C; ++t) x[t] = t < c ? sb[t] * vc[t * conv_dim] : 0.0f;
    } else {
KRASIS_UNROLL
      for (int t = 0; t < C; ++t) x[t] = sb[t] * expf(slg[t]) * sk[t * ldk + col - dv];
    }
KRASIS_UNROLL
    for (int t = 1; t < C; ++t) {
      float acc = x[t];
KRASIS_UNROLL
      for (int i = 0; i < t; ++i) acc -= sa[t * (C + 1) + i] * x[i];
      x[t] = acc;
    }
    float* dst = col < dv ? out.u + hrow * dv + col : out.w + hrow * dk + (col - dv);
    const int ld = col < dv ? dv : dk;
KRASIS_UNROLL
    for (int t = 0; t < C; ++t) dst[t * ld] = x[t];
  }
}

__global__ void __launch_bounds__(kGdnStateWarps * 32) GdnChunkStateKernel(const float* mixed, int64_t first,
                                                                           int64_t m, int nk, int nv, int dk, int dv,
                                                                           GdnChunkScratch in, float* state,
                                                                           float* core) {
  KRASIS_DYNAMIC_SHARED_FLOATS(smem);
  constexpr int C = kGdnChunk, R = C / kGdnStateWarps, L = kGdnCols + 1;
  float* ss = smem;          // [dk, L]: S, 32 columns
  float* sw = ss + dk * L;   // [C, dk]: W, then diag(g_C / g) K
  float* sq = sw + C * dk;   // [C, dk]: diag(g) Q
  float* sp = sq + C * dk;   // [C, C]
  float* sd = sp + C * C;    // [C, L]: U, then D
  const int h = blockIdx.x, kh = h / (nv / nk), j0 = blockIdx.y * kGdnCols;
  const int lane = threadIdx.x % 32, w = threadIdx.x / 32;
  const int j = j0 + lane;
  const bool col_ok = j < dv;
  const int64_t conv_dim = GdnConvDim(nk, nv, dk, dv);
  float* S = state + static_cast<int64_t>(h) * dk * dv;
  for (int x = w; x < dk; x += kGdnStateWarps) ss[x * L + lane] = col_ok ? S[x * dv + j] : 0.0f;
  const int64_t chunks = (m + C - 1) / C;
  for (int64_t ck = 0; ck < chunks; ++ck) {
    const int64_t row0 = ck * C, hrow = static_cast<int64_t>(h) * in.mp + row0;
    const int c = static_cast<int>(m - row0 < C ? m - row0 : C);
    const float* qk = mixed + (first + row0) * conv_dim + static_cast<int64_t>(kh) * dk;  // q; k is nk dk further
    __syncthreads();  // the previous chunk is done with every buffer
    for (int i = threadIdx.x; i < C * dk; i += blockDim.x) {
      const int t = i / dk, x = i % dk;
      sw[i] = in.w[hrow * dk + i];
      sq[i] = t < c ? expf(in.lg[hrow + t]) * qk[t * conv_dim + x] : 0.0f;
    }
    for (int i = threadIdx.x; i < C * C; i += blockDim.x) sp[i] = in.p[hrow * C + i];
    for (int i = threadIdx.x; i < C * kGdnCols; i += blockDim.x) {
      const int t = i / kGdnCols, l = i % kGdnCols;
      sd[t * L + l] = j0 + l < dv ? in.u[(hrow + t) * dv + j0 + l] : 0.0f;
    }
    __syncthreads();
    // D = U - W S: warp w has rows [R w, R w + R), its lanes the columns.
    {
      float acc[R];
KRASIS_UNROLL
      for (int r = 0; r < R; ++r) acc[r] = sd[(R * w + r) * L + lane];
      for (int x = 0; x < dk; ++x) {
        const float sx = ss[x * L + lane];
KRASIS_UNROLL
        for (int r = 0; r < R; ++r) acc[r] -= sw[(R * w + r) * dk + x] * sx;
      }
KRASIS_UNROLL
      for (int r = 0; r < R; ++r) sd[(R * w + r) * L + lane] = acc[r];
    }
    __syncthreads();
    // O = diag(g) Q S + P D (P is 0 above the diagonal).
    {
      float acc[R];
KRASIS_UNROLL
      for (int r = 0; r < R; ++r) acc[r] = 0.0f;
      for (int x = 0; x < dk; ++x) {
        const float sx = ss[x * L + lane];
KRASIS_UNROLL
        for (int r = 0; r < R; ++r) acc[r] += sq[(R * w + r) * dk + x] * sx;
      }
      for (int i = 0; i < R * w + R; ++i) {
        const float di = sd[i * L + lane];
KRASIS_UNROLL
        for (int r = 0; r < R; ++r) acc[r] += sp[(R * w + r) * C + i] * di;
      }
KRASIS_UNROLL
      for (int r = 0; r < R; ++r) {
        const int t = R * w + r;
        if (col_ok && t < c) core[(first + row0 + t) * static_cast<int64_t>(nv) * dv + static_cast<int64_t>(h) * dv + j] = acc[r];
      }
    }
    __syncthreads();  // W and S are read; W's buffer takes diag(g_C / g) K
    const float lg_end = in.lg[hrow + C - 1];  // padding rows keep the last token's sum
    for (int i = threadIdx.x; i < C * dk; i += blockDim.x) {
      const int t = i / dk, x = i % dk;
      sw[i] = t < c ? expf(lg_end - in.lg[hrow + t]) * qk[t * conv_dim + static_cast<int64_t>(nk) * dk + x] : 0.0f;
    }
    __syncthreads();
    // S = g_C S + K'^T D: warp w has rows x = 8 (w + 8 b) .. + 8.
    const float g_end = expf(lg_end);
    for (int x0 = 8 * w; x0 < dk; x0 += 8 * kGdnStateWarps) {
      float acc[8];
KRASIS_UNROLL
      for (int r = 0; r < 8; ++r) acc[r] = x0 + r < dk ? g_end * ss[(x0 + r) * L + lane] : 0.0f;
      for (int t = 0; t < c; ++t) {
        const float dt = sd[t * L + lane];
KRASIS_UNROLL
        for (int r = 0; r < 8; ++r) {
          if (x0 + r < dk) acc[r] += sw[t * dk + x0 + r] * dt;
        }
      }
KRASIS_UNROLL
      for (int r = 0; r < 8; ++r) {
        if (x0 + r < dk) ss[(x0 + r) * L + lane] = acc[r];
      }
    }
  }
  __syncthreads();
  if (col_ok) {
    for (int x = w; x < dk; x += kGdnStateWarps) S[x * dv + j] = ss[x * L + lane];
  }
}

// What LaunchGdnChunked launches: threads, the state kernel's grid, shared memory.
struct GdnChunkLaunch {
  GdnChunkLaunch(int nv, int dk, int dv)
      : prep_threads((dk + dv + 31) / 32 * 32 < 256 ? (dk + dv + 31) / 32 * 32 : 256),
        state_threads(kGdnStateWarps * 32),
        state_grid_x(static_cast<unsigned>(nv)),
        state_grid_y(static_cast<unsigned>((dv + kGdnCols - 1) / kGdnCols)),
        prep_smem((2 * static_cast<size_t>(kGdnChunk) * (dk + 1) + kGdnChunk * (kGdnChunk + 1) + 2 * kGdnChunk) *
                  sizeof(float)),
        state_smem((static_cast<size_t>(dk) * (kGdnCols + 1) + 2 * static_cast<size_t>(kGdnChunk) * dk +
                    kGdnChunk * kGdnChunk + kGdnChunk * (kGdnCols + 1)) *
                   sizeof(float)) {}
  int prep_threads, state_threads;
  unsigned state_grid_x, state_grid_y;
  size_t prep_smem, state_smem;
};

// Scratch floats for n tokens (at most one piece's worth).
inline int64_t GdnChunkScratchFloats(int64_t n, int64_t nv, int64_t dk, int64_t dv) {
  const int64_t m = n < 1 ? 1 : (n < kGdnPiece ? n : kGdnPiece);
  const int64_t mp = (m + kGdnChunk - 1) / kGdnChunk * kGdnChunk;
  return nv * mp * (dv + dk + kGdnChunk + 1);
}

// The scratch views of a piece of m tokens.
inline GdnChunkScratch GdnChunkScratchOf(float* scratch, int64_t m, int64_t nv, int64_t dk, int64_t dv) {
  GdnChunkScratch sc;
  sc.mp = (m + kGdnChunk - 1) / kGdnChunk * kGdnChunk;
  sc.u = scratch;
  sc.w = sc.u + nv * sc.mp * dv;
  sc.p = sc.w + nv * sc.mp * dk;
  sc.lg = sc.p + nv * sc.mp * kGdnChunk;
  return sc;
}

}  // namespace krasis::cuda
