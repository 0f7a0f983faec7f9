// The chunked (WY) Gated DeltaNet delta rule's kernels (see LaunchGdnChunked
// in prefill_kernels.h) and their launch geometry. Included by gdn_kernels.cu,
// and by a CPU test that runs the same kernel code with each block's threads as
// std::threads (tests/models/gdn_chunked_emulation_test.cc), which defines the
// CUDA vocabulary the code uses (__global__, threadIdx, __syncthreads, ...),
// KRASIS_DYNAMIC_SHARED_FLOATS and KRASIS_UNROLL before including this file.
#pragma once

#include <algorithm>
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

// The gated delta rule chunk by chunk in the WY form (ref::GatedDeltaChunked):
// tokens go in chunks of kGdnChunk, and a prompt in pieces of kGdnPiece tokens
// whose per-chunk terms fit the scratch. Per piece, two kernels of 256 threads:
//  - GdnChunkPrepKernel, one block per (chunk, value head), all in parallel:
//    lg (the log of the decays' product up to each token, clamped at -80 per
//    token: e^-80 is 0 beside the terms it meets), A[t, i] = beta_t g_t / g_i
//    k_t.k_i (i < t), P[t, i] = g_t / g_i q_t.k_i (i <= t, 0 above), and
//    [U | W] = (I + A)^-1 diag(beta) [V | diag(g) K] by forward substitution,
//    one thread per column with the column's 64 rows in registers.
//  - GdnChunkStateKernel, one block per (value head, 32 columns of S), the
//    chunks in order: D = U - W S; O = diag(g) Q S + P D; S = g_C S +
//    (diag(g_C / g) K)^T D. Columns of S are independent, as in the recurrence.
// The products run on register tiles (4 x 4 of QK^T and KK^T; 4 rows x 2
// columns of D and O; 8 x 2 of S) over operands laid out in shared memory so
// that a tile's row operand is one float4 (K, Q, W and P transposed there; W
// and P also transposed per chunk in the scratch).
constexpr int kGdnChunk = 64;
constexpr int64_t kGdnPiece = 2048;  // tokens per piece: a multiple of kGdnChunk
constexpr int kGdnThreads = 256;     // both kernels' blocks (16 x 16 tiles)
constexpr int kGdnLdT = kGdnChunk + 4;  // row stride of a transposed [*, chunk] operand
constexpr float kGdnMinLogDecay = -80.0f;

// Scratch of one piece of m tokens (mp: m rounded up to whole chunks); row r of
// head h is h mp + r.
struct GdnChunkScratch {
  float* u;   // [nv, mp, dv]
  float* w;   // [nv, mp / chunk, dk, chunk]: each chunk's W transposed
  float* p;   // [nv, mp / chunk, chunk, chunk]: each chunk's P transposed (P^T[i, t])
  float* lg;  // [nv, mp]
  int64_t mp;
};

__device__ inline int64_t GdnConvDim(int nk, int nv, int dk, int dv) {
  return 2 * static_cast<int64_t>(nk) * dk + static_cast<int64_t>(nv) * dv;
}

__device__ inline float GdnLane(const float4& v, int r) { return r == 0 ? v.x : r == 1 ? v.y : r == 2 ? v.z : v.w; }
__device__ inline float GdnLane(const float2& v, int r) { return r == 0 ? v.x : v.y; }
__device__ inline int GdnRoundUp8(int x) { return (x + 7) / 8 * 8; }

// acc[r][s] += sign * sum over k < count of a[k lda + r] b[k ldb + s]: a 4 x 2
// register tile from a float4 of the column operand and a float2 of the row
// operand per k (both 16 / 8-byte aligned).
__device__ inline void GdnTile4x2(float (&acc)[4][2], const float* a, int lda, const float* b, int ldb, int count,
                                  float sign) {
  for (int k = 0; k < count; ++k) {
    const float4 a4 = *reinterpret_cast<const float4*>(a + k * lda);
    const float2 b2 = *reinterpret_cast<const float2*>(b + k * ldb);
    KRASIS_UNROLL
    for (int r = 0; r < 4; ++r) {
      acc[r][0] += sign * GdnLane(a4, r) * b2.x;
      acc[r][1] += sign * GdnLane(a4, r) * b2.y;
    }
  }
}

// One block per (chunk, value head); one block per SM at most, so that a
// column's 64 rows stay in registers through the substitution.
__global__ void __launch_bounds__(kGdnThreads, 1) GdnChunkPrepKernel(const float* mixed, const float* gates,
                                                                     int64_t first, int64_t m, int nk, int nv, int dk,
                                                                     int dv, GdnChunkScratch out) {
  KRASIS_DYNAMIC_SHARED_FLOATS(smem);
  constexpr int C = kGdnChunk, LT = kGdnLdT;
  float* kt = smem;             // [dk, LT]: K^T
  float* qt = kt + dk * LT;     // [dk, LT]: Q^T
  float* sa = qt + dk * LT;     // [C, LT]: A (0 from the diagonal up)
  float* slg = sa + C * LT;     // [C]
  float* sb = slg + C;          // [C]: beta
  const int h = blockIdx.y, kh = h / (nv / nk);
  const int64_t row0 = static_cast<int64_t>(blockIdx.x) * C;
  const int c = static_cast<int>(m - row0 < C ? m - row0 : C);
  const int64_t conv_dim = GdnConvDim(nk, nv, dk, dv);
  const float* base = mixed + (first + row0) * conv_dim;
  for (int i = threadIdx.x; i < C * dk; i += blockDim.x) {
    const int t = i / dk, x = i % dk;
    const float* r = base + t * conv_dim + static_cast<int64_t>(kh) * dk + x;
    qt[x * LT + t] = t < c ? r[0] : 0.0f;
    kt[x * LT + t] = t < c ? r[static_cast<int64_t>(nk) * dk] : 0.0f;
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
  {
    // QK^T and KK^T on the 4 x 4 tile of rows t0.. and columns i0..
    const int t0 = 4 * (threadIdx.x / 16), i0 = 4 * (threadIdx.x % 16);
    float pq[4][4] = {}, kk[4][4] = {};
    if (i0 <= t0 + 3) {
      for (int x = 0; x < dk; ++x) {
        const float4 q4 = *reinterpret_cast<const float4*>(qt + x * LT + t0);
        const float4 k4 = *reinterpret_cast<const float4*>(kt + x * LT + t0);
        const float4 c4 = *reinterpret_cast<const float4*>(kt + x * LT + i0);
        KRASIS_UNROLL
        for (int r = 0; r < 4; ++r) {
          KRASIS_UNROLL
          for (int s = 0; s < 4; ++s) {
            pq[r][s] += GdnLane(q4, r) * GdnLane(c4, s);
            kk[r][s] += GdnLane(k4, r) * GdnLane(c4, s);
          }
        }
      }
    }
    float* pt = out.p + hrow * C;  // this chunk's P^T
    KRASIS_UNROLL
    for (int s = 0; s < 4; ++s) {
      const int i = i0 + s;
      float4 col;  // P[t0..t0+3, i]
      KRASIS_UNROLL
      for (int r = 0; r < 4; ++r) {
        const int t = t0 + r;
        const float ratio = i <= t ? expf(slg[t] - slg[i]) : 0.0f;
        sa[t * LT + i] = i < t ? sb[t] * ratio * kk[r][s] : 0.0f;
        const float pv = ratio * pq[r][s];
        if (r == 0) col.x = pv;
        if (r == 1) col.y = pv;
        if (r == 2) col.z = pv;
        if (r == 3) col.w = pv;
      }
      *reinterpret_cast<float4*>(pt + i * C + t0) = col;
    }
  }
  for (int t = threadIdx.x; t < C; t += blockDim.x) out.lg[hrow + t] = slg[t];
  __syncthreads();
  const int width = dv + dk;
  for (int col = threadIdx.x; col < width; col += blockDim.x) {
    // The right-hand side, then the substitution in place (A is 0 from the
    // diagonal up, so whole float4s of a row can be taken).
    float x[C];
    if (col < dv) {
      const float* vc = base + 2 * static_cast<int64_t>(nk) * dk + static_cast<int64_t>(h) * dv + col;
      KRASIS_UNROLL
      for (int t = 0; t < C; ++t) x[t] = t < c ? sb[t] * vc[t * conv_dim] : 0.0f;
    } else {
      KRASIS_UNROLL
      for (int t = 0; t < C; ++t) x[t] = sb[t] * expf(slg[t]) * kt[(col - dv) * LT + t];
    }
    KRASIS_UNROLL
    for (int t = 1; t < C; ++t) {
      float acc = x[t];
      const float4* arow = reinterpret_cast<const float4*>(sa + t * LT);
      KRASIS_UNROLL
      for (int i4 = 0; i4 < (t + 3) / 4; ++i4) {
        const float4 a = arow[i4];
        acc -= a.x * x[4 * i4] + a.y * x[4 * i4 + 1] + a.z * x[4 * i4 + 2] + a.w * x[4 * i4 + 3];
      }
      x[t] = acc;
    }
    if (col < dv) {
      KRASIS_UNROLL
      for (int t = 0; t < C; ++t) out.u[(hrow + t) * dv + col] = x[t];
    } else {
      float4* wt = reinterpret_cast<float4*>(out.w + hrow * dk + static_cast<int64_t>(col - dv) * C);
      KRASIS_UNROLL
      for (int t = 0; t < C; t += 4) {
        float4 v;
        v.x = x[t], v.y = x[t + 1], v.z = x[t + 2], v.w = x[t + 3];
        wt[t / 4] = v;
      }
    }
  }
}

// One block per (value head, 32 columns of S), the piece's chunks in order.
__global__ void __launch_bounds__(kGdnThreads) GdnChunkStateKernel(const float* mixed, int64_t first, int64_t m, int nk,
                                                                   int nv, int dk, int dv, GdnChunkScratch in,
                                                                   float* state, float* core) {
  KRASIS_DYNAMIC_SHARED_FLOATS(smem);
  constexpr int C = kGdnChunk, LT = kGdnLdT, LS = kGdnCols;
  const int dk8 = GdnRoundUp8(dk);
  const int b1 = dk * LT > C * dk8 ? dk * LT : C * dk8;
  float* ss = smem;        // [dk, LS]: S, 32 columns
  float* sb1 = ss + dk * LS;  // W^T [dk, LT], then K' = diag(g_C / g) K [C, dk8]
  float* sqt = sb1 + b1;   // [dk, LT]: (diag(g) Q)^T
  float* spt = sqt + dk * LT;  // [C, LT]: P^T
  float* sd = spt + C * LT;    // [C, LS]: U, then D
  const int h = blockIdx.x, kh = h / (nv / nk), j0 = blockIdx.y * kGdnCols;
  const int t0 = 4 * (threadIdx.x / 16), c0 = 2 * (threadIdx.x % 16);  // D and O: rows t0.., columns c0..
  const int64_t conv_dim = GdnConvDim(nk, nv, dk, dv);
  float* S = state + static_cast<int64_t>(h) * dk * dv;
  for (int i = threadIdx.x; i < dk * LS; i += blockDim.x) {
    const int x = i / LS, l = i % LS;
    ss[i] = j0 + l < dv ? S[x * dv + j0 + l] : 0.0f;
  }
  const int64_t chunks = (m + C - 1) / C;
  for (int64_t ck = 0; ck < chunks; ++ck) {
    const int64_t row0 = ck * C, hrow = static_cast<int64_t>(h) * in.mp + row0;
    const int c = static_cast<int>(m - row0 < C ? m - row0 : C);
    const float* qk = mixed + (first + row0) * conv_dim + static_cast<int64_t>(kh) * dk;  // q; k is nk dk further
    __syncthreads();  // the previous chunk is done with every buffer
    for (int i = threadIdx.x; i < dk * C; i += blockDim.x) sb1[(i / C) * LT + i % C] = in.w[hrow * dk + i];
    for (int i = threadIdx.x; i < C * dk; i += blockDim.x) {
      const int t = i / dk, x = i % dk;
      sqt[x * LT + t] = t < c ? expf(in.lg[hrow + t]) * qk[t * conv_dim + x] : 0.0f;
    }
    for (int i = threadIdx.x; i < C * C; i += blockDim.x) spt[(i / C) * LT + i % C] = in.p[hrow * C + i];
    for (int i = threadIdx.x; i < C * LS; i += blockDim.x) {
      const int t = i / LS, l = i % LS;
      sd[i] = j0 + l < dv ? in.u[(hrow + t) * dv + j0 + l] : 0.0f;
    }
    __syncthreads();
    {  // D = U - W S
      float acc[4][2];
      KRASIS_UNROLL
      for (int r = 0; r < 4; ++r) {
        const float2 u = *reinterpret_cast<const float2*>(sd + (t0 + r) * LS + c0);
        acc[r][0] = u.x, acc[r][1] = u.y;
      }
      GdnTile4x2(acc, sb1 + t0, LT, ss + c0, LS, dk, -1.0f);
      KRASIS_UNROLL
      for (int r = 0; r < 4; ++r) {
        float2 d;
        d.x = acc[r][0], d.y = acc[r][1];
        *reinterpret_cast<float2*>(sd + (t0 + r) * LS + c0) = d;
      }
    }
    __syncthreads();
    // W^T is read: its buffer takes K'.
    const float lg_end = in.lg[hrow + C - 1];  // padding rows keep the last token's sum
    for (int i = threadIdx.x; i < C * dk8; i += blockDim.x) {
      const int t = i / dk8, x = i % dk8;
      sb1[i] = t < c && x < dk ? expf(lg_end - in.lg[hrow + t]) * qk[t * conv_dim + static_cast<int64_t>(nk) * dk + x]
                               : 0.0f;
    }
    {  // O = diag(g) Q S + P D (P is 0 above the diagonal)
      float acc[4][2] = {};
      GdnTile4x2(acc, sqt + t0, LT, ss + c0, LS, dk, 1.0f);
      GdnTile4x2(acc, spt + t0, LT, sd + c0, LS, t0 + 4, 1.0f);
      KRASIS_UNROLL
      for (int r = 0; r < 4; ++r) {
        const int t = t0 + r;
        if (t >= c) continue;
        float* o = core + (first + row0 + t) * static_cast<int64_t>(nv) * dv + static_cast<int64_t>(h) * dv + j0 + c0;
        if (j0 + c0 < dv) o[0] = acc[r][0];
        if (j0 + c0 + 1 < dv) o[1] = acc[r][1];
      }
    }
    __syncthreads();  // S is read and K' is in place
    // S = g_C S + K'^T D on tiles of 8 rows x 2 columns.
    const float g_end = expf(lg_end);
    for (int x0 = 8 * (threadIdx.x / 16); x0 < dk; x0 += 128) {
      float acc[8][2];
      KRASIS_UNROLL
      for (int r = 0; r < 8; ++r) {
        const bool ok = x0 + r < dk;
        acc[r][0] = ok ? g_end * ss[(x0 + r) * LS + c0] : 0.0f;
        acc[r][1] = ok ? g_end * ss[(x0 + r) * LS + c0 + 1] : 0.0f;
      }
      for (int t = 0; t < c; ++t) {
        const float4 ka = *reinterpret_cast<const float4*>(sb1 + t * dk8 + x0);
        const float4 kb = *reinterpret_cast<const float4*>(sb1 + t * dk8 + x0 + 4);
        const float2 d2 = *reinterpret_cast<const float2*>(sd + t * LS + c0);
        KRASIS_UNROLL
        for (int r = 0; r < 4; ++r) {
          acc[r][0] += GdnLane(ka, r) * d2.x;
          acc[r][1] += GdnLane(ka, r) * d2.y;
          acc[r + 4][0] += GdnLane(kb, r) * d2.x;
          acc[r + 4][1] += GdnLane(kb, r) * d2.y;
        }
      }
      KRASIS_UNROLL
      for (int r = 0; r < 8; ++r) {
        if (x0 + r >= dk) continue;
        ss[(x0 + r) * LS + c0] = acc[r][0];
        ss[(x0 + r) * LS + c0 + 1] = acc[r][1];
      }
    }
  }
  __syncthreads();
  for (int i = threadIdx.x; i < dk * LS; i += blockDim.x) {
    const int x = i / LS, l = i % LS;
    if (j0 + l < dv) S[x * dv + j0 + l] = ss[i];
  }
}

// What LaunchGdnChunked launches: threads, the state kernel's grid, shared memory.
struct GdnChunkLaunch {
  GdnChunkLaunch(int nv, int dk, int dv)
      : state_grid_x(static_cast<unsigned>(nv)),
        state_grid_y(static_cast<unsigned>((dv + kGdnCols - 1) / kGdnCols)),
        prep_smem((2 * static_cast<size_t>(dk) * kGdnLdT + kGdnChunk * kGdnLdT + 2 * kGdnChunk) * sizeof(float)) {
    const size_t dk8 = (static_cast<size_t>(dk) + 7) / 8 * 8;
    const size_t b1 = std::max(static_cast<size_t>(dk) * kGdnLdT, kGdnChunk * dk8);
    state_smem = (static_cast<size_t>(dk) * kGdnCols + b1 + static_cast<size_t>(dk) * kGdnLdT + kGdnChunk * kGdnLdT +
                  kGdnChunk * kGdnCols) *
                 sizeof(float);
  }
  int prep_threads = kGdnThreads, state_threads = kGdnThreads;
  unsigned state_grid_x, state_grid_y;
  size_t prep_smem, state_smem = 0;
};

// Scratch rows of a piece of m tokens: whole chunks.
inline int64_t GdnPieceRows(int64_t m) { return (m + kGdnChunk - 1) / kGdnChunk * kGdnChunk; }

// Scratch floats for n tokens (at most one piece's worth).
inline int64_t GdnChunkScratchFloats(int64_t n, int64_t nv, int64_t dk, int64_t dv) {
  return nv * GdnPieceRows(n < 1 ? 1 : (n < kGdnPiece ? n : kGdnPiece)) * (dv + dk + kGdnChunk + 1);
}

// The scratch views of a piece of m tokens.
inline GdnChunkScratch GdnChunkScratchOf(float* scratch, int64_t m, int64_t nv, int64_t dk, int64_t dv) {
  GdnChunkScratch sc;
  sc.mp = GdnPieceRows(m);
  sc.u = scratch;
  sc.w = sc.u + nv * sc.mp * dv;
  sc.p = sc.w + nv * sc.mp * dk;
  sc.lg = sc.p + nv * sc.mp * kGdnChunk;
  return sc;
}

// A call's pieces in order, as LaunchGdnChunked launches them: for each,
// launch(first token, tokens m, scratch views, prep grid's x) runs the prep and
// state kernels and returns false to stop.
template <typename Launch>
inline void ForEachGdnPiece(int64_t n, int64_t nv, int64_t dk, int64_t dv, float* scratch, Launch&& launch) {
  for (int64_t first = 0; first < n; first += kGdnPiece) {
    const int64_t m = n - first < kGdnPiece ? n - first : kGdnPiece;
    const GdnChunkScratch sc = GdnChunkScratchOf(scratch, m, nv, dk, dv);
    if (!launch(first, m, sc, static_cast<unsigned>(sc.mp / kGdnChunk))) return;
  }
}

}  // namespace krasis::cuda
