// GLM-4.5 / GLM-4.6 / GLM-4.7 (glm4_moe): GQA with q/k/v bias, optional per-head
// QK RMSNorm (use_qk_norm), partial RoPE (partial_rotary_factor, rotate_half
// pairing); the first first_k_dense_replace layers are dense; MoE layers route
// with sigmoid scores, e_score_correction_bias and group limits (noaux_tc) and
// add a shared expert.
#include "common/models/architectures.h"
#include "common/models/blocks/ffn.h"
#include "common/models/blocks/gqa_attention.h"
#include "common/status.h"

namespace krasis {

absl::Status BuildGlm4Moe(const Weights& weights, DecoderModel& model) {
  const ModelConfig& c = model.config();
  GqaOptions attn;
  attn.qk_norm = c.use_qk_norm;
  MoeOptions moe;
  moe.router = RouterKind::kSigmoidNoAuxTc;
  moe.shared_prefix = "shared_experts.";
  moe.shared_intermediate = c.SharedExpertIntermediateSize();
  return BuildLayers(weights, model, moe, [&](int, const std::string& p) {
    return LoadGqaAttention(c, weights, p + "self_attn.", attn, model.ops());
  });
}

}  // namespace krasis
