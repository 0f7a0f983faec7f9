// Qwen3-MoE (Qwen3-30B-A3B, Qwen3-235B-A22B): GQA with per-head QK RMSNorm and
// full RoPE; softmax top-k routing with optional renormalisation; layers listed
// in mlp_only_layers (or off the decoder_sparse_step grid) use a dense MLP.
#include "common/models/architectures.h"
#include "common/models/blocks/ffn.h"
#include "common/models/blocks/gqa_attention.h"
#include "common/status.h"

namespace krasis {

absl::Status BuildQwen3Moe(const Weights& weights, DecoderModel& model) {
  const ModelConfig& c = model.config();
  GqaOptions attn;
  attn.qk_norm = true;
  return BuildLayers(weights, model, MoeOptions{}, [&](int, const std::string& p) {
    return LoadGqaAttention(c, weights, p + "self_attn.", attn, model.ops());
  });
}

}  // namespace krasis
