// Qwen3-Next / Qwen3-Coder-Next: hybrid layers per layer_types -- Gated DeltaNet
// linear attention, or gated full attention (q_proj also carries a sigmoid
// output gate; zero-centred QK-norm; partial RoPE) -- every norm zero-centred
// (weight used as 1 + w); MoE with softmax top-k, renormalised, plus a shared
// expert scaled by sigmoid(shared_expert_gate(x)).
#include "common/models/architectures.h"
#include "common/models/blocks/ffn.h"
#include "common/models/blocks/gated_deltanet.h"
#include "common/models/blocks/gqa_attention.h"
#include "common/status.h"

namespace krasis {

absl::Status BuildQwen3Next(const Weights& weights, DecoderModel& model) {
  const ModelConfig& c = model.config();
  model.zero_centred_norms = true;
  GqaOptions attn;
  attn.qk_norm = true;
  attn.zero_centred_qk_norm = true;
  attn.output_gate = true;
  MoeOptions moe;
  moe.shared_prefix = "shared_expert.";
  moe.shared_intermediate = c.SharedExpertIntermediateSize();
  moe.shared_gate = true;
  return BuildLayers(weights, model, moe, [&](int l, const std::string& p) {
    if (c.GetLayerType(l) == LayerType::kLinearAttention) {
      return LoadGatedDeltaNet(c, weights, p + "linear_attn.", model.ops());
    }
    return LoadGqaAttention(c, weights, p + "self_attn.", attn, model.ops());
  });
}

}  // namespace krasis
