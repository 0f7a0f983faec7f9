// MoE routing as the checkpoints define it, in one place that both the CPU
// blocks (common/models/blocks/ffn.cc) and the CUDA router kernel's tests use:
//   kSoftmaxTopK      softmax, top-k, optional renormalisation (Qwen3, DeepSeek-V2 "greedy")
//   kGroupLimited     softmax, keep the topk_group groups with the largest max, then top-k
//                     (DeepSeek-V2 "group_limited_greedy")
//   kSigmoidNoAuxTc   sigmoid; selection on score + e_score_correction_bias within the
//                     topk_group groups of best top-2 sums; weights are the plain
//                     sigmoid scores (DeepSeek-V3 "noaux_tc", GLM-4.x)
// then optional renormalisation of the k weights and routed_scaling_factor.
#pragma once

#include <cstdint>
#include <vector>

namespace krasis {

enum class RouterKind { kSoftmaxTopK, kGroupLimited, kSigmoidNoAuxTc };

struct RouterParams {
  RouterKind kind = RouterKind::kSoftmaxTopK;
  int64_t num_experts = 0, top_k = 0, n_group = 1, topk_group = 1;
  bool norm_topk_prob = false;
  float routed_scaling = 1.0f;
};

namespace ref {
// One token: its router logits [num_experts] (and, for kSigmoidNoAuxTc, the
// correction bias [num_experts]) -> the chosen experts, best first, and their
// weights. (C++17-clean: the CUDA sources include this header.)
void Route(const RouterParams& p, const float* logits, const float* correction_bias,
           std::vector<int>* ids, std::vector<float>* weights);
}  // namespace ref

// The same choice and weights as ref::Route (bit-equal), made faster for the
// decode step's routers: for kSoftmaxTopK one pass keeps the k best logits and
// only their probabilities are formed (no copies, no sort); the other kinds
// use the reference. A NaN logit counts as -inf.
void Route(const RouterParams& p, const float* logits, const float* correction_bias, std::vector<int>* ids,
           std::vector<float>* weights);

}  // namespace krasis
