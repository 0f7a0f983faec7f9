// DeepSeek-V2 / V2-Lite / V3 / R1: Multi-head Latent Attention (with or without
// q-LoRA; YaRN RoPE), dense first_k_dense_replace layers, MoE layers with shared
// experts and the routing topk_method names: "greedy" (softmax top-k),
// "group_limited_greedy" (softmax, best groups by max), "noaux_tc" (sigmoid with
// e_score_correction_bias, best groups by top-2 sum), then routed_scaling_factor.
#include "common/models/architectures.h"
#include "common/models/blocks/ffn.h"
#include "common/models/blocks/mla_attention.h"
#include "common/status.h"

namespace krasis {

absl::Status BuildDeepseek(const Weights& weights, DecoderModel& model) {
  const ModelConfig& c = model.config();
  MoeOptions moe;
  if (c.topk_method == "noaux_tc" || c.scoring_func == "sigmoid") {
    moe.router = RouterKind::kSigmoidNoAuxTc;
  } else if (c.topk_method == "group_limited_greedy") {
    moe.router = RouterKind::kGroupLimited;
  } else if (c.topk_method == "greedy" || c.topk_method.empty()) {
    moe.router = RouterKind::kSoftmaxTopK;
  } else {
    return InvalidArgumentError(c.source, ": unsupported topk_method '", c.topk_method,
                                "' (supported: greedy, group_limited_greedy, noaux_tc)");
  }
  moe.shared_prefix = "shared_experts.";
  moe.shared_intermediate = c.SharedExpertIntermediateSize();
  return BuildLayers(weights, model, moe, [&](int, const std::string& p) {
    return LoadMlaAttention(c, weights, p + "self_attn.", model.ops());
  });
}

}  // namespace krasis
