// Gated DeltaNet prefill kernels and the sigmoid gates of Qwen3-Next's other
// blocks (see prefill_kernels.h). The delta rule runs token by token (as the
// CPU reference does) or chunk by chunk in the WY form; either way what is
// parallel across blocks is the value heads and, inside a head, the columns of
// its state (each column of S evolves independently given q, k, beta and the
// decay), and the chunked form also computes every chunk's own terms at once.
#include "common/cuda/cuda_check.h"
#include "common/cuda/launch.cuh"
#include "common/cuda/prefill_kernels.h"
#include "common/status.h"

#include <cuda_bf16.h>

#include <algorithm>

namespace krasis::cuda {
namespace {

__device__ inline float SigmoidF(float x) { return 1.0f / (1.0f + expf(-x)); }

__global__ void SigmoidGateKernel(float* y, int64_t rows, int64_t cols, const float* gate, int64_t gate_stride,
                                  bool per_row) {
  const int64_t total = rows * cols;
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < total; i += int64_t{gridDim.x} * blockDim.x) {
    const int64_t r = i / cols, c = i % cols;
    y[i] *= SigmoidF(gate[r * gate_stride + (per_row ? 0 : c)]);
  }
}

// One thread per (token, channel): the conv over the chunk's inputs and, before
// the chunk, the conv state.
__global__ void GdnConvKernel(const float* proj, int64_t n, int64_t stride, int64_t conv_dim, int64_t kernel,
                             const float* w, const float* bias, const float* state, float* mixed) {
  const int64_t hist = kernel - 1, total = n * conv_dim;
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < total; i += int64_t{gridDim.x} * blockDim.x) {
    const int64_t t = i / conv_dim, c = i % conv_dim;
    const float* wc = w + c * kernel;
    float acc = bias != nullptr ? bias[c] : 0.0f;
    for (int64_t j = 0; j < hist; ++j) {
      const int64_t tt = t - hist + j;
      acc += wc[j] * (tt >= 0 ? proj[tt * stride + c] : state[c * hist + hist + tt]);
    }
    acc += wc[hist] * proj[t * stride + c];
    mixed[i] = acc / (1.0f + expf(-acc));
  }
}

// The conv state after the chunk: the last kernel - 1 inputs. In place, one
// thread per channel; entry j reads old entry j + n (> j) when the chunk is
// shorter than the history, so ascending j never reads what it overwrote.
__global__ void GdnConvStateKernel(const float* proj, int64_t n, int64_t stride, int64_t conv_dim, int64_t kernel,
                                   float* state) {
  const int64_t hist = kernel - 1;
  for (int64_t c = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; c < conv_dim; c += int64_t{gridDim.x} * blockDim.x) {
    float* s = state + c * hist;
    for (int64_t j = 0; j < hist; ++j) {
      const int64_t tt = n - hist + j;
      s[j] = tt >= 0 ? proj[tt * stride + c] : s[j + n];
    }
  }
}

// One block per token: a warp per q or k head vector, then the gates.
__global__ void GdnPrepareKernel(float* mixed, const float* ba, int64_t ba_stride, int64_t conv_dim, int nk, int nv,
                                 int dk, const float* dt_bias, const float* neg_a, float* gates) {
  const int64_t t = blockIdx.x;
  float* row = mixed + t * conv_dim;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, warps = blockDim.x / 32;
  const float scale = rsqrtf(static_cast<float>(dk));
  for (int v = warp; v < 2 * nk; v += warps) {
    float* x = row + static_cast<int64_t>(v) * dk;  // q heads then k heads
    float ss = 0.0f;
    for (int i = lane; i < dk; i += 32) ss += x[i] * x[i];
    ss = WarpSum(ss);
    const float inv = (1.0f / sqrtf(ss + 1e-6f)) * (v < nk ? scale : 1.0f);
    for (int i = lane; i < dk; i += 32) x[i] *= inv;
  }
  const float* b = ba + t * ba_stride;
  for (int h = threadIdx.x; h < nv; h += blockDim.x) {
    const float a = b[nv + h] + dt_bias[h];
    const float softplus = a > 20.0f ? a : log1pf(expf(a));
    gates[t * 2 * nv + h] = SigmoidF(b[h]);
    gates[t * 2 * nv + nv + h] = expf(neg_a[h] * softplus);
  }
}

constexpr int kGdnRows = 16;  // rows of a head's state per thread (one warp per 16 rows)
constexpr int kGdnCols = 32;  // columns of the state per block (one per lane)

// Block (value head, 32 columns of its state); warp w holds rows [16 w, 16 w + 16)
// of those columns in registers. Tokens go in order; q, k, v and the gates of
// up to `chunk` tokens are staged in shared memory at a time. Per token, two
// block-wide sums over the rows: k^T S and q^T S.
__global__ void __launch_bounds__(512) GdnRecurrenceKernel(const float* mixed, const float* gates, int64_t n, int nk,
                                                           int nv, int dk, int dv, int chunk, float* state,
                                                           float* core) {
  extern __shared__ float smem[];
  const int warps = blockDim.x / 32;
  float* sq = smem;                   // [chunk, dk]
  float* sk = sq + chunk * dk;        // [chunk, dk]
  float* sv = sk + chunk * dk;        // [chunk, 32]
  float* sg = sv + chunk * kGdnCols;  // [chunk, 2]: beta, decay
  float* red1 = sg + 2 * chunk;       // [warps, 32]
  float* red2 = red1 + warps * kGdnCols;
  const int h = blockIdx.x, j0 = blockIdx.y * kGdnCols;
  const int lane = threadIdx.x % 32, w = threadIdx.x / 32;
  const int j = j0 + lane, row0 = w * kGdnRows;
  const bool col_ok = j < dv;
  const int kh = h / (nv / nk);
  const int64_t conv_dim = 2 * static_cast<int64_t>(nk) * dk + static_cast<int64_t>(nv) * dv;
  float* S = state + static_cast<int64_t>(h) * dk * dv;
  float s[kGdnRows];
#pragma unroll
  for (int r = 0; r < kGdnRows; ++r) s[r] = (col_ok && row0 + r < dk) ? S[(row0 + r) * dv + j] : 0.0f;
  for (int64_t t0 = 0; t0 < n; t0 += chunk) {
    const int count = static_cast<int>(n - t0 < chunk ? n - t0 : chunk);
    __syncthreads();
    for (int i = threadIdx.x; i < count * dk; i += blockDim.x) {
      const float* src = mixed + (t0 + i / dk) * conv_dim + static_cast<int64_t>(kh) * dk + i % dk;
      sq[i] = src[0];
      sk[i] = src[static_cast<int64_t>(nk) * dk];
    }
    for (int i = threadIdx.x; i < count * kGdnCols; i += blockDim.x) {
      const int c = j0 + i % kGdnCols;
      sv[i] = c < dv ? mixed[(t0 + i / kGdnCols) * conv_dim + 2 * static_cast<int64_t>(nk) * dk +
                             static_cast<int64_t>(h) * dv + c]
                     : 0.0f;
    }
    for (int i = threadIdx.x; i < count; i += blockDim.x) {
      sg[2 * i] = gates[(t0 + i) * 2 * nv + h];
      sg[2 * i + 1] = gates[(t0 + i) * 2 * nv + nv + h];
    }
    __syncthreads();
    for (int tt = 0; tt < count; ++tt) {
      const float beta = sg[2 * tt], decay = sg[2 * tt + 1];
      const float* k = sk + tt * dk + row0;
      const float* q = sq + tt * dk + row0;
      float kv0 = 0.0f, kv1 = 0.0f;
#pragma unroll
      for (int r = 0; r < kGdnRows; r += 2) {
        if (row0 + r < dk) s[r] *= decay, kv0 += k[r] * s[r];
        if (row0 + r + 1 < dk) s[r + 1] *= decay, kv1 += k[r + 1] * s[r + 1];
      }
      red1[w * kGdnCols + lane] = kv0 + kv1;
      __syncthreads();
      float kv = 0.0f;
      for (int x = 0; x < warps; ++x) kv += red1[x * kGdnCols + lane];
      const float delta = (sv[tt * kGdnCols + lane] - kv) * beta;
      float o0 = 0.0f, o1 = 0.0f;
#pragma unroll
      for (int r = 0; r < kGdnRows; r += 2) {
        if (row0 + r < dk) s[r] += k[r] * delta, o0 += q[r] * s[r];
        if (row0 + r + 1 < dk) s[r + 1] += k[r + 1] * delta, o1 += q[r + 1] * s[r + 1];
      }
      red2[w * kGdnCols + lane] = o0 + o1;
      __syncthreads();
      if (w == 0 && col_ok) {
        float o = 0.0f;
        for (int x = 0; x < warps; ++x) o += red2[x * kGdnCols + lane];
        core[(t0 + tt) * static_cast<int64_t>(nv) * dv + static_cast<int64_t>(h) * dv + j] = o;
      }
    }
  }
#pragma unroll
  for (int r = 0; r < kGdnRows; ++r) {
    if (col_ok && row0 + r < dk) S[(row0 + r) * dv + j] = s[r];
  }
}

// The chunked (WY) form of the same rule (ref::GatedDeltaChunked): tokens go in
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
  extern __shared__ float smem[];
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
#pragma unroll
      for (int t = 0; t < C; ++t) x[t] = t < c ? sb[t] * vc[t * conv_dim] : 0.0f;
    } else {
#pragma unroll
      for (int t = 0; t < C; ++t) x[t] = sb[t] * expf(slg[t]) * sk[t * ldk + col - dv];
    }
#pragma unroll
    for (int t = 1; t < C; ++t) {
      float acc = x[t];
#pragma unroll
      for (int i = 0; i < t; ++i) acc -= sa[t * (C + 1) + i] * x[i];
      x[t] = acc;
    }
    float* dst = col < dv ? out.u + hrow * dv + col : out.w + hrow * dk + (col - dv);
    const int ld = col < dv ? dv : dk;
#pragma unroll
    for (int t = 0; t < C; ++t) dst[t * ld] = x[t];
  }
}

__global__ void __launch_bounds__(kGdnStateWarps * 32) GdnChunkStateKernel(const float* mixed, int64_t first,
                                                                           int64_t m, int nk, int nv, int dk, int dv,
                                                                           GdnChunkScratch in, float* state,
                                                                           float* core) {
  extern __shared__ float smem[];
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
#pragma unroll
      for (int r = 0; r < R; ++r) acc[r] = sd[(R * w + r) * L + lane];
      for (int x = 0; x < dk; ++x) {
        const float sx = ss[x * L + lane];
#pragma unroll
        for (int r = 0; r < R; ++r) acc[r] -= sw[(R * w + r) * dk + x] * sx;
      }
#pragma unroll
      for (int r = 0; r < R; ++r) sd[(R * w + r) * L + lane] = acc[r];
    }
    __syncthreads();
    // O = diag(g) Q S + P D (P is 0 above the diagonal).
    {
      float acc[R];
#pragma unroll
      for (int r = 0; r < R; ++r) acc[r] = 0.0f;
      for (int x = 0; x < dk; ++x) {
        const float sx = ss[x * L + lane];
#pragma unroll
        for (int r = 0; r < R; ++r) acc[r] += sq[(R * w + r) * dk + x] * sx;
      }
      for (int i = 0; i < R * w + R; ++i) {
        const float di = sd[i * L + lane];
#pragma unroll
        for (int r = 0; r < R; ++r) acc[r] += sp[(R * w + r) * C + i] * di;
      }
#pragma unroll
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
#pragma unroll
      for (int r = 0; r < 8; ++r) acc[r] = x0 + r < dk ? g_end * ss[(x0 + r) * L + lane] : 0.0f;
      for (int t = 0; t < c; ++t) {
        const float dt = sd[t * L + lane];
#pragma unroll
        for (int r = 0; r < 8; ++r) {
          if (x0 + r < dk) acc[r] += sw[t * dk + x0 + r] * dt;
        }
      }
#pragma unroll
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

__device__ inline void PutOut(float* out, uint16_t* out_bf16, int64_t i, float y) {
  if (out != nullptr) out[i] = y;
  if (out_bf16 != nullptr) {
    __nv_bfloat16 b = __float2bfloat16_rn(y);
    out_bf16[i] = *reinterpret_cast<uint16_t*>(&b);
  }
}

// One block per (token, value head).
__global__ void GdnGatedNormKernel(const float* core, const float* z, int64_t z_stride, int nv, int dv,
                                  const float* w, float eps, float* out, uint16_t* out_bf16) {
  const int64_t t = blockIdx.x / nv, h = blockIdx.x % nv;
  const int64_t base = t * nv * dv + h * dv;
  const float* x = core + base;
  const float* zr = z + t * z_stride + h * dv;
  float ss = 0.0f;
  for (int i = threadIdx.x; i < dv; i += blockDim.x) ss += x[i] * x[i];
  ss = BlockSum(ss);
  const float inv = 1.0f / sqrtf(ss / static_cast<float>(dv) + eps);
  for (int i = threadIdx.x; i < dv; i += blockDim.x) {
    const float g = zr[i];
    PutOut(out, out_bf16, base + i, x[i] * inv * w[i] * (g / (1.0f + expf(-g))));
  }
}

absl::Status CheckGdnShape(const GdnShape& s) {
  if (s.n < 0 || s.nk <= 0 || s.nv <= 0 || s.nv % s.nk != 0 || s.dk <= 0 || s.dv <= 0 || s.kernel <= 0 ||
      s.dk > 256 || s.dv > 256 || s.stride < s.conv_dim()) {
    return InvalidArgumentError("Gated DeltaNet kernels: unsupported shape (nk ", s.nk, ", nv ", s.nv, ", dk ", s.dk,
                                ", dv ", s.dv, ", kernel ", s.kernel, ", stride ", s.stride, "; head dims up to 256)");
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status LaunchSigmoidGate(float* y, int64_t rows, int64_t cols, const float* gate, int64_t gate_stride,
                               bool per_row, cudaStream_t stream) {
  if (rows * cols <= 0) return absl::OkStatus();
  SigmoidGateKernel<<<GridFor(rows * cols), kBlockThreads, 0, stream>>>(y, rows, cols, gate, gate_stride, per_row);
  CUDA_RETURN_IF_ERROR(cudaGetLastError());
  return absl::OkStatus();
}

absl::Status LaunchGdnConv(const float* proj, const GdnShape& s, const float* weight, const float* bias,
                           float* conv_state, float* mixed, cudaStream_t stream) {
  RETURN_IF_ERROR(CheckGdnShape(s));
  if (s.n == 0) return absl::OkStatus();
  const int64_t conv_dim = s.conv_dim();
  GdnConvKernel<<<GridFor(s.n * conv_dim), kBlockThreads, 0, stream>>>(proj, s.n, s.stride, conv_dim, s.kernel,
                                                                        weight, bias, conv_state, mixed);
  CUDA_RETURN_IF_ERROR(cudaGetLastError());
  if (s.kernel > 1) {
    GdnConvStateKernel<<<GridFor(conv_dim), kBlockThreads, 0, stream>>>(proj, s.n, s.stride, conv_dim, s.kernel,
                                                                         conv_state);
    CUDA_RETURN_IF_ERROR(cudaGetLastError());
  }
  return absl::OkStatus();
}

absl::Status LaunchGdnPrepare(float* mixed, const float* ba, int64_t ba_stride, const GdnShape& s,
                              const float* dt_bias, const float* neg_a, float* gates, cudaStream_t stream) {
  RETURN_IF_ERROR(CheckGdnShape(s));
  if (s.n == 0) return absl::OkStatus();
  if (s.n > 0x7fffffff) return InvalidArgumentError("Gated DeltaNet: too many tokens in one chunk");
  GdnPrepareKernel<<<static_cast<unsigned>(s.n), 256, 0, stream>>>(
      mixed, ba, ba_stride, s.conv_dim(), static_cast<int>(s.nk), static_cast<int>(s.nv), static_cast<int>(s.dk),
      dt_bias, neg_a, gates);
  CUDA_RETURN_IF_ERROR(cudaGetLastError());
  return absl::OkStatus();
}

absl::Status LaunchGdnRecurrence(const float* mixed, const float* gates, const GdnShape& s, float* state, float* core,
                                 cudaStream_t stream) {
  RETURN_IF_ERROR(CheckGdnShape(s));
  if (s.n == 0) return absl::OkStatus();
  const int warps = static_cast<int>((s.dk + kGdnRows - 1) / kGdnRows);
  const int chunk = s.dk <= 128 ? 32 : 16;
  const size_t smem = (static_cast<size_t>(chunk) * (2 * s.dk + kGdnCols + 2) + 2 * warps * kGdnCols) * sizeof(float);
  const dim3 grid(static_cast<unsigned>(s.nv), static_cast<unsigned>((s.dv + kGdnCols - 1) / kGdnCols));
  GdnRecurrenceKernel<<<grid, warps * 32, smem, stream>>>(mixed, gates, s.n, static_cast<int>(s.nk),
                                                          static_cast<int>(s.nv), static_cast<int>(s.dk),
                                                          static_cast<int>(s.dv), chunk, state, core);
  CUDA_RETURN_IF_ERROR(cudaGetLastError());
  return absl::OkStatus();
}

int64_t GdnChunkedScratchFloats(const GdnShape& s) {
  const int64_t m = std::min<int64_t>(std::max<int64_t>(s.n, 1), kGdnPiece);
  const int64_t mp = (m + kGdnChunk - 1) / kGdnChunk * kGdnChunk;
  return s.nv * mp * (s.dv + s.dk + kGdnChunk + 1);
}

absl::Status LaunchGdnChunked(const float* mixed, const float* gates, const GdnShape& s, float* state, float* core,
                              float* scratch, cudaStream_t stream) {
  RETURN_IF_ERROR(CheckGdnShape(s));
  if (s.n == 0) return absl::OkStatus();
  const int nk = static_cast<int>(s.nk), nv = static_cast<int>(s.nv), dk = static_cast<int>(s.dk),
            dv = static_cast<int>(s.dv);
  const size_t prep_smem = (2 * static_cast<size_t>(kGdnChunk) * (dk + 1) + kGdnChunk * (kGdnChunk + 1) +
                            2 * kGdnChunk) * sizeof(float);
  const size_t state_smem = (static_cast<size_t>(dk) * (kGdnCols + 1) + 2 * static_cast<size_t>(kGdnChunk) * dk +
                             kGdnChunk * kGdnChunk + kGdnChunk * (kGdnCols + 1)) * sizeof(float);
  CUDA_RETURN_IF_ERROR(cudaFuncSetAttribute(GdnChunkPrepKernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                            static_cast<int>(prep_smem)));
  CUDA_RETURN_IF_ERROR(cudaFuncSetAttribute(GdnChunkStateKernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                            static_cast<int>(state_smem)));
  const int prep_threads = std::min(256, (dk + dv + 31) / 32 * 32);
  for (int64_t first = 0; first < s.n; first += kGdnPiece) {
    const int64_t m = std::min(kGdnPiece, s.n - first);
    GdnChunkScratch sc;
    sc.mp = (m + kGdnChunk - 1) / kGdnChunk * kGdnChunk;
    sc.u = scratch;
    sc.w = sc.u + s.nv * sc.mp * s.dv;
    sc.p = sc.w + s.nv * sc.mp * s.dk;
    sc.lg = sc.p + s.nv * sc.mp * kGdnChunk;
    const dim3 prep_grid(static_cast<unsigned>(sc.mp / kGdnChunk), static_cast<unsigned>(nv));
    GdnChunkPrepKernel<<<prep_grid, prep_threads, prep_smem, stream>>>(mixed, gates, first, m, nk, nv, dk, dv, sc);
    CUDA_RETURN_IF_ERROR(cudaGetLastError());
    const dim3 state_grid(static_cast<unsigned>(nv), static_cast<unsigned>((dv + kGdnCols - 1) / kGdnCols));
    GdnChunkStateKernel<<<state_grid, kGdnStateWarps * 32, state_smem, stream>>>(mixed, first, m, nk, nv, dk, dv, sc,
                                                                                   state, core);
    CUDA_RETURN_IF_ERROR(cudaGetLastError());
  }
  return absl::OkStatus();
}

absl::Status LaunchGdnGatedNorm(const float* core, const float* z, int64_t z_stride, const GdnShape& s,
                                const float* weight, float eps, float* out, uint16_t* out_bf16, cudaStream_t stream) {
  RETURN_IF_ERROR(CheckGdnShape(s));
  if (s.n == 0) return absl::OkStatus();
  const int64_t blocks = s.n * s.nv;
  if (blocks > 0x7fffffff) return InvalidArgumentError("Gated DeltaNet: too many tokens in one chunk");
  GdnGatedNormKernel<<<static_cast<unsigned>(blocks), 128, 0, stream>>>(
      core, z, z_stride, static_cast<int>(s.nv), static_cast<int>(s.dv), weight, eps, out, out_bf16);
  CUDA_RETURN_IF_ERROR(cudaGetLastError());
  return absl::OkStatus();
}

}  // namespace krasis::cuda
