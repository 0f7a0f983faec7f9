// DeepSeek's Multi-head Latent Attention (MLA), the token mixer of deepseek_v2
// and deepseek_v3 layers, computed as Hugging Face transformers'
// DeepseekV2Attention / DeepseekV3Attention do (fp32 throughout).
//
// Why a block of its own: MLA caches one compressed vector per token instead of
// per-head keys and values. Per token and layer the paged cache holds
//   [ kv_a_layernorm(latent) (kv_lora_rank) | roped k_pe (qk_rope_head_dim) ]
// (KvFloatsPerToken() = kv_lora_rank + qk_rope_head_dim); per-head keys/values
// are re-expanded from the latent with kv_b_proj when attending. The decode
// worker keeps the same layout (in BF16/FP16).
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "common/kernels/ops.h"
#include "common/model_config.h"
#include "common/models/model.h"
#include "common/models/weights.h"

namespace krasis {

// Loads the MLA block whose tensors are named `prefix` + "q_proj.weight" etc.
// (prefix e.g. "model.layers.3.self_attn."). Every tensor is shape-checked, so a
// missing or mis-shaped one fails with its name. InvalidArgument when the config
// lacks the MLA widths (kv_lora_rank, qk_nope_head_dim, qk_rope_head_dim,
// v_head_dim). `weights` and `ops` must outlive the returned mixer.
absl::StatusOr<std::unique_ptr<Mixer>> LoadMlaAttention(const ModelConfig& config,
                                                        const Weights& weights,
                                                        const std::string& prefix,
                                                        const Ops& ops);

}  // namespace krasis
