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
  for (int l = 0; l < c.num_hidden_layers; ++l) {
    DecoderLayer layer;
    std::string p = StrCat("model.layers.", l, ".");
    RETURN_IF_ERROR(LoadLayerNorms(weights, c, l, layer));
    ASSIGN_OR_RETURN(layer.mixer, LoadGqaAttention(c, weights, p + "self_attn.", attn, model.ops()));
    if (c.IsMoeLayer(l)) {
      ASSIGN_OR_RETURN(layer.ffn, LoadMoe(c, weights, p + "mlp.", MoeOptions{}, model.ops()));
    } else {
      ASSIGN_OR_RETURN(layer.ffn, LoadDenseMlp(weights, p + "mlp.", c.hidden_size,
                                               c.intermediate_size, model.ops()));
    }
    model.layers.push_back(std::move(layer));
  }
  return absl::OkStatus();
}

}  // namespace krasis
