// Device helpers the prefill kernels share: launch geometry and block-wide
// reductions. Included by .cu files only.
#pragma once

#include <cuda_runtime.h>

#include <cfloat>
#include <cstdint>

namespace krasis::cuda {

constexpr int kBlockThreads = 256;

// silu(g) * u, the one formula every SiLU-mul path (separate, span, fused into
// the grouped GEMM, the gated norm's gate) computes, so they agree bit for bit.
__device__ inline float Silu(float g) { return g / (1.0f + expf(-g)); }
__device__ inline float SiluMul(float g, float u) { return Silu(g) * u; }

// Blocks for a grid-stride loop over `count` items.
inline unsigned GridFor(int64_t count) {
  const int64_t blocks = (count + kBlockThreads - 1) / kBlockThreads;
  return static_cast<unsigned>(blocks < 65535 ? (blocks > 0 ? blocks : 1) : 65535);
}

__device__ inline float WarpSum(float v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

__device__ inline float WarpMax(float v) {
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// Sum over the block (blockDim.x a multiple of 32, at most 1024); every thread
// gets the result.
__device__ inline float BlockSum(float v) {
  __shared__ float partial[32];
  __shared__ float total;
  v = WarpSum(v);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  __syncthreads();  // partial[] may still be read by a previous call
  if (lane == 0) partial[warp] = v;
  __syncthreads();
  if (warp == 0) {
    float s = lane < static_cast<int>(blockDim.x / 32) ? partial[lane] : 0.0f;
    s = WarpSum(s);
    if (lane == 0) total = s;
  }
  __syncthreads();
  return total;
}

// True when (va, ia) ranks before (vb, ib): the larger value, then the lower index.
__device__ inline bool RanksBefore(float va, int ia, float vb, int ib) {
  return va > vb || (va == vb && ia < ib);
}

// The best (value, index) over the block by RanksBefore; every thread gets it.
// Threads with nothing to offer pass (-FLT_MAX, INT32_MAX).
__device__ inline void BlockArgBest(float& v, int& i) {
  __shared__ float pv[32];
  __shared__ int pi[32];
  for (int o = 16; o > 0; o >>= 1) {
    const float ov = __shfl_xor_sync(0xffffffffu, v, o);
    const int oi = __shfl_xor_sync(0xffffffffu, i, o);
    if (RanksBefore(ov, oi, v, i)) v = ov, i = oi;
  }
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  __syncthreads();
  if (lane == 0) pv[warp] = v, pi[warp] = i;
  __syncthreads();
  v = pv[0], i = pi[0];
  for (int w = 1; w < static_cast<int>(blockDim.x / 32); ++w) {
    if (RanksBefore(pv[w], pi[w], v, i)) v = pv[w], i = pi[w];
  }
}

}  // namespace krasis::cuda
