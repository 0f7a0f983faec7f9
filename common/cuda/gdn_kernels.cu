// Gated DeltaNet prefill kernels and the sigmoid gates of Qwen3-Next's other
// blocks (see prefill_kernels.h). The delta rule runs token by token (as the
// CPU reference does) or chunk by chunk in the WY form; either way what is
// parallel across blocks is the value heads and, inside a head, the columns of
// its state (each column of S evolves independently given q, k, beta and the
// decay), and the chunked form also computes every chunk's own terms at once.
#include "common/cuda/cuda_check.h"
#include "common/cuda/gdn_chunked.cuh"
#include "common/cuda/launch.cuh"
#include "common/cuda/prefill_kernels.h"
#include "common/status.h"

#include <cuda_bf16.h>

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
    PutOut(out, out_bf16, base + i, x[i] * inv * w[i] * Silu(g));
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

int64_t GdnChunkedScratchFloats(const GdnShape& s) { return GdnChunkScratchFloats(s.n, s.nv, s.dk, s.dv); }

absl::Status LaunchGdnChunked(const float* mixed, const float* gates, const GdnShape& s, float* state, float* core,
                              float* scratch, cudaStream_t stream) {
  RETURN_IF_ERROR(CheckGdnShape(s));
  if (s.n == 0) return absl::OkStatus();
  const int nk = static_cast<int>(s.nk), nv = static_cast<int>(s.nv), dk = static_cast<int>(s.dk),
            dv = static_cast<int>(s.dv);
  const GdnChunkLaunch geometry(nv, dk, dv);
  CUDA_RETURN_IF_ERROR(cudaFuncSetAttribute(GdnChunkPrepKernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                            static_cast<int>(geometry.prep_smem)));
  CUDA_RETURN_IF_ERROR(cudaFuncSetAttribute(GdnChunkStateKernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                            static_cast<int>(geometry.state_smem)));
  cudaError_t err = cudaSuccess;
  ForEachGdnPiece(s.n, nv, dk, dv, scratch, [&](int64_t first, int64_t m, const GdnChunkScratch& sc, unsigned chunks) {
    GdnChunkPrepKernel<<<dim3(chunks, static_cast<unsigned>(nv)), geometry.prep_threads, geometry.prep_smem, stream>>>(
        mixed, gates, first, m, nk, nv, dk, dv, sc);
    if ((err = cudaGetLastError()) != cudaSuccess) return false;
    GdnChunkStateKernel<<<dim3(geometry.state_grid_x, geometry.state_grid_y), geometry.state_threads,
                          geometry.state_smem, stream>>>(mixed, first, m, nk, nv, dk, dv, sc, state, core);
    return (err = cudaGetLastError()) == cudaSuccess;
  });
  CUDA_RETURN_IF_ERROR(err);
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
