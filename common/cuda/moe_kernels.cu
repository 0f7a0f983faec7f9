// MoE kernels of GPU prefill (see prefill_kernels.h): routing, and sorting the
// chosen (token, expert) pairs into per-expert segments so each expert runs one
// dense GEMM over its rows, then combining the experts' outputs per token.
#include <cuda_bf16.h>

#include <algorithm>
#include <cstdint>
#include <type_traits>

#include "common/cuda/cuda_check.h"
#include "common/cuda/launch.cuh"
#include "common/cuda/prefill_kernels.h"

namespace krasis::cuda {
namespace {

constexpr int kMaxGroups = 64;
constexpr int kMaxTopK = 64;

// One block per token. Dynamic shared memory: scores, choice [E] floats, taken [E] ints.
__global__ void RouteKernel(const float* logits, int64_t num_experts, RouterKind kind, int top_k, int n_group,
                            int topk_group, bool norm_topk_prob, float routed_scaling, const float* bias,
                            int32_t* ids, float* weights) {
  extern __shared__ float sm[];
  const int E = static_cast<int>(num_experts);
  float* scores = sm;
  float* choice = sm + E;
  int* taken = reinterpret_cast<int*>(sm + 2 * E);
  __shared__ float group_score[kMaxGroups];
  __shared__ int group_kept[kMaxGroups];
  __shared__ float chosen_score[kMaxTopK];
  const float* lg = logits + blockIdx.x * num_experts;

  if (kind == RouterKind::kSigmoidNoAuxTc) {
    for (int e = threadIdx.x; e < E; e += blockDim.x) {
      scores[e] = 1.0f / (1.0f + expf(-lg[e]));
      choice[e] = scores[e] + bias[e];
    }
  } else {
    float m = -FLT_MAX;
    int unused = 0;
    for (int e = threadIdx.x; e < E; e += blockDim.x) m = fmaxf(m, lg[e]);
    BlockArgBest(m, unused);
    float s = 0.0f;
    for (int e = threadIdx.x; e < E; e += blockDim.x) {
      scores[e] = expf(lg[e] - m);
      s += scores[e];
    }
    s = BlockSum(s);
    for (int e = threadIdx.x; e < E; e += blockDim.x) {
      scores[e] /= s;
      choice[e] = scores[e];
    }
  }
  for (int e = threadIdx.x; e < E; e += blockDim.x) taken[e] = 0;
  __syncthreads();

  if (kind != RouterKind::kSoftmaxTopK && n_group > 1) {
    const int per_group = E / n_group;
    for (int g = threadIdx.x; g < n_group; g += blockDim.x) {
      float best = -FLT_MAX, second = -FLT_MAX;
      for (int e = g * per_group; e < (g + 1) * per_group; ++e) {
        const float c = choice[e];
        if (c > best) {
          second = best;
          best = c;
        } else if (c > second) {
          second = c;
        }
      }
      if (per_group < 2) second = 0.0f;  // a one-expert group's "top 2" is that expert
      group_score[g] = kind == RouterKind::kGroupLimited ? best : best + second;
      group_kept[g] = 0;
    }
    __syncthreads();
    if (threadIdx.x == 0) {
      for (int j = 0; j < topk_group; ++j) {
        int bi = -1;
        for (int g = 0; g < n_group; ++g) {
          if (!group_kept[g] && (bi < 0 || RanksBefore(group_score[g], g, group_score[bi], bi))) bi = g;
        }
        group_kept[bi] = 1;
      }
    }
    __syncthreads();
    // Experts of dropped groups score 0, as transformers' masked_fill does.
    for (int e = threadIdx.x; e < E; e += blockDim.x) {
      if (!group_kept[e / per_group]) choice[e] = 0.0f;
    }
    __syncthreads();
  }

  for (int j = 0; j < top_k; ++j) {
    float v = -FLT_MAX;
    int i = INT32_MAX;
    for (int e = threadIdx.x; e < E; e += blockDim.x) {
      if (!taken[e] && RanksBefore(choice[e], e, v, i)) v = choice[e], i = e;
    }
    BlockArgBest(v, i);
    if (threadIdx.x == 0) {
      taken[i] = 1;
      ids[blockIdx.x * top_k + j] = i;
      chosen_score[j] = scores[i];
    }
    __syncthreads();
  }
  if (threadIdx.x == 0) {
    double sum = 0.0;
    for (int j = 0; j < top_k; ++j) sum += chosen_score[j];
    if (kind == RouterKind::kSigmoidNoAuxTc) sum += 1e-20;
    for (int j = 0; j < top_k; ++j) {
      const float w = norm_topk_prob ? static_cast<float>(chosen_score[j] / sum) : chosen_score[j];
      weights[blockIdx.x * top_k + j] = w * routed_scaling;
    }
  }
}

__global__ void CountKernel(const int32_t* ids, int64_t choices, int32_t* counts) {
  for (int64_t c = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; c < choices; c += int64_t{gridDim.x} * blockDim.x) {
    atomicAdd(&counts[ids[c]], 1);
  }
}

__global__ void AssignKernel(const int32_t* ids, int64_t choices, int64_t top_k, int32_t* cursor,
                             int32_t* row_of_choice, int32_t* token_of_row) {
  for (int64_t c = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; c < choices; c += int64_t{gridDim.x} * blockDim.x) {
    const int32_t row = atomicAdd(&cursor[ids[c]], 1);
    row_of_choice[c] = row;
    token_of_row[row] = static_cast<int32_t>(c / top_k);
  }
}

__device__ inline void Put(uint16_t* out, int64_t i, float v) {
  __nv_bfloat16 b = __float2bfloat16_rn(v);
  out[i] = *reinterpret_cast<uint16_t*>(&b);
}
__device__ inline void Put(float* out, int64_t i, float v) { out[i] = v; }

template <typename Out>
__global__ void GatherKernel(const float* x, const int32_t* token_of_row, int64_t rows, int64_t dim, Out* out) {
  const int64_t total = rows * dim;
  for (int64_t idx = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; idx < total;
       idx += int64_t{gridDim.x} * blockDim.x) {
    const int64_t r = idx / dim, d = idx % dim;
    Put(out, idx, x[token_of_row[r] * dim + d]);
  }
}

// span: null, or rows [span[first], span[end]) of y only. A block per token
// in turn, kVec consecutive columns per thread (4: float4 rows, 16-byte
// aligned with dim % 4 == 0); each column's sum in the same order either way.
template <int kVec>
__global__ void CombineKernel(const float* y, const int32_t* row_of_choice, const float* weights, int64_t n,
                              int64_t top_k, int64_t dim, const int32_t* span, int64_t first, int64_t end,
                              float* out) {
  using V = std::conditional_t<kVec == 4, float4, float>;
  const int32_t lo = span != nullptr ? span[first] : 0, hi = span != nullptr ? span[end] : INT32_MAX;
  for (int64_t t = blockIdx.x; t < n; t += gridDim.x) {
    for (int64_t d = int64_t{threadIdx.x} * kVec; d < dim; d += int64_t{blockDim.x} * kVec) {
      V s = *reinterpret_cast<const V*>(out + t * dim + d);
      for (int64_t j = 0; j < top_k; ++j) {
        const int32_t row = row_of_choice[t * top_k + j];
        if (row < lo || row >= hi) continue;
        const float w = weights[t * top_k + j];
        const V v = *reinterpret_cast<const V*>(y + static_cast<int64_t>(row) * dim + d);
        if constexpr (kVec == 4) {
          s.x += w * v.x, s.y += w * v.y, s.z += w * v.z, s.w += w * v.w;
        } else {
          s += w * v;
        }
      }
      *reinterpret_cast<V*>(out + t * dim + d) = s;
    }
  }
}

absl::Status LaunchCombine(const float* y, const int32_t* row_of_choice, const float* weights, int64_t n,
                           int64_t top_k, int64_t dim, const int32_t* span, int64_t first, int64_t end, float* out,
                           cudaStream_t stream) {
  const unsigned blocks = static_cast<unsigned>(std::min<int64_t>(n, 65535));
  const bool vec = dim % 4 == 0 && reinterpret_cast<uintptr_t>(y) % 16 == 0 && reinterpret_cast<uintptr_t>(out) % 16 == 0;
  if (vec) {
    CombineKernel<4><<<blocks, kBlockThreads, 0, stream>>>(y, row_of_choice, weights, n, top_k, dim, span, first, end,
                                                           out);
  } else {
    CombineKernel<1><<<blocks, kBlockThreads, 0, stream>>>(y, row_of_choice, weights, n, top_k, dim, span, first, end,
                                                           out);
  }
  CUDA_RETURN_IF_ERROR(cudaGetLastError());
  return absl::OkStatus();
}

__global__ void SiluMulSpanKernel(const float* gate_up, int64_t inter, const int32_t* span, int64_t first,
                                  int64_t end, uint16_t* out) {
  const int64_t row0 = span[first], total = (span[end] - row0) * inter;
  for (int64_t idx = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; idx < total;
       idx += int64_t{gridDim.x} * blockDim.x) {
    const int64_t r = row0 + idx / inter, i = idx % inter;
    const float g = gate_up[r * 2 * inter + i], u = gate_up[r * 2 * inter + inter + i];
    Put(out, r * inter + i, SiluMul(g, u));
  }
}

}  // namespace

absl::Status LaunchRoute(const float* logits, int64_t n, const RouterParams& p, const float* correction_bias,
                         int32_t* ids, float* weights, cudaStream_t stream) {
  if (n <= 0) return absl::OkStatus();
  if (p.num_experts < 1 || p.num_experts > 1024 || p.top_k < 1 || p.top_k > p.num_experts ||
      p.top_k > kMaxTopK || p.n_group < 1 || p.n_group > kMaxGroups || p.num_experts % p.n_group != 0 ||
      p.topk_group < 1 || p.topk_group > p.n_group) {
    return InvalidArgumentError("LaunchRoute: unsupported routing (", p.num_experts, " experts, top-k ", p.top_k,
                                ", n_group ", p.n_group, ", topk_group ", p.topk_group, ")");
  }
  if (p.kind == RouterKind::kSigmoidNoAuxTc && correction_bias == nullptr) {
    return InvalidArgumentError("LaunchRoute: sigmoid routing needs the correction bias");
  }
  const size_t smem = static_cast<size_t>(p.num_experts) * (2 * sizeof(float) + sizeof(int));
  RouteKernel<<<static_cast<unsigned>(n), kBlockThreads, smem, stream>>>(
      logits, p.num_experts, p.kind, static_cast<int>(p.top_k), static_cast<int>(p.n_group),
      static_cast<int>(p.topk_group), p.norm_topk_prob, p.routed_scaling, correction_bias, ids, weights);
  CUDA_RETURN_IF_ERROR(cudaGetLastError());
  return absl::OkStatus();
}

absl::Status LaunchCountExperts(const int32_t* ids, int64_t choices, int64_t num_experts, int32_t* counts,
                                cudaStream_t stream) {
  (void)num_experts;
  if (choices <= 0) return absl::OkStatus();
  CountKernel<<<GridFor(choices), kBlockThreads, 0, stream>>>(ids, choices, counts);
  CUDA_RETURN_IF_ERROR(cudaGetLastError());
  return absl::OkStatus();
}

absl::Status LaunchAssignRows(const int32_t* ids, int64_t choices, int64_t top_k, int32_t* cursor,
                              int32_t* row_of_choice, int32_t* token_of_row, cudaStream_t stream) {
  if (choices <= 0) return absl::OkStatus();
  AssignKernel<<<GridFor(choices), kBlockThreads, 0, stream>>>(ids, choices, top_k, cursor, row_of_choice,
                                                                token_of_row);
  CUDA_RETURN_IF_ERROR(cudaGetLastError());
  return absl::OkStatus();
}

absl::Status LaunchGatherRowsBf16(const float* x, const int32_t* token_of_row, int64_t rows, int64_t dim,
                                  uint16_t* out, cudaStream_t stream) {
  if (rows * dim <= 0) return absl::OkStatus();
  GatherKernel<<<GridFor(rows * dim), kBlockThreads, 0, stream>>>(x, token_of_row, rows, dim, out);
  CUDA_RETURN_IF_ERROR(cudaGetLastError());
  return absl::OkStatus();
}

absl::Status LaunchGatherRows(const float* x, const int32_t* token_of_row, int64_t rows, int64_t dim, float* out,
                              cudaStream_t stream) {
  if (rows * dim <= 0) return absl::OkStatus();
  GatherKernel<<<GridFor(rows * dim), kBlockThreads, 0, stream>>>(x, token_of_row, rows, dim, out);
  CUDA_RETURN_IF_ERROR(cudaGetLastError());
  return absl::OkStatus();
}

absl::Status LaunchCombineExperts(const float* y, const int32_t* row_of_choice, const float* weights, int64_t n,
                                  int64_t top_k, int64_t dim, float* out, cudaStream_t stream) {
  if (n * dim <= 0) return absl::OkStatus();
  return LaunchCombine(y, row_of_choice, weights, n, top_k, dim, nullptr, 0, 0, out, stream);
}

absl::Status LaunchCombineExpertSpan(const float* y, const int32_t* row_of_choice, const float* weights, int64_t n,
                                     int64_t top_k, int64_t dim, const int32_t* offsets, int64_t first, int64_t end,
                                     float* out, cudaStream_t stream) {
  if (n * dim <= 0) return absl::OkStatus();
  if (offsets == nullptr) return InvalidArgumentError("LaunchCombineExpertSpan: no offsets");
  return LaunchCombine(y, row_of_choice, weights, n, top_k, dim, offsets, first, end, out, stream);
}

absl::Status LaunchSiluMulBf16Span(const float* gate_up, int64_t inter, const int32_t* offsets, int64_t first,
                                   int64_t end, int64_t max_rows, uint16_t* out, cudaStream_t stream) {
  if (max_rows * inter <= 0 || first >= end) return absl::OkStatus();
  SiluMulSpanKernel<<<GridFor(max_rows * inter), kBlockThreads, 0, stream>>>(gate_up, inter, offsets, first, end,
                                                                             out);
  CUDA_RETURN_IF_ERROR(cudaGetLastError());
  return absl::OkStatus();
}

}  // namespace krasis::cuda
