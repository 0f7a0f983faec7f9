// Feed-forward blocks: the dense SwiGLU MLP and the mixture of experts with the
// routers of every supported architecture:
//   kSoftmaxTopK      softmax, top-k, optional renormalisation (Qwen3, DeepSeek-V2 "greedy")
//   kGroupLimited     softmax, keep the topk_group groups with the largest max, then top-k
//                     (DeepSeek-V2 "group_limited_greedy")
//   kSigmoidNoAuxTc   sigmoid; selection on score + e_score_correction_bias within the
//                     topk_group groups of best top-2 sums; weights are the plain
//                     sigmoid scores (DeepSeek-V3 "noaux_tc", GLM-4.x)
// then routed_scaling_factor, and an optional shared expert (plain sum, or scaled
// by sigmoid(shared_expert_gate(x)) for Qwen3-Next).
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "common/kernels/routing.h"
#include "common/models/model.h"

namespace krasis {

// prefix + {gate,up,down}_proj.weight, width `intermediate`.
absl::StatusOr<std::unique_ptr<FeedForward>> LoadDenseMlp(const Weights& weights,
                                                          const std::string& prefix, int64_t hidden,
                                                          int64_t intermediate, const Ops& ops);

struct MoeOptions {
  RouterKind router = RouterKind::kSoftmaxTopK;
  std::string shared_prefix;    // "shared_experts." / "shared_expert."; empty: none
  int64_t shared_intermediate = 0;
  bool shared_gate = false;     // Qwen3-Next's shared_expert_gate
};

// prefix + gate.weight [experts, hidden] (+ gate.e_score_correction_bias), experts.<e>.*,
// and the shared expert. Top-k, groups, scaling and renormalisation come from config.
absl::StatusOr<std::unique_ptr<FeedForward>> LoadMoe(const ModelConfig& config,
                                                     const Weights& weights,
                                                     const std::string& prefix,
                                                     const MoeOptions& options, const Ops& ops);

}  // namespace krasis
