// Grouped-query attention as Qwen3-MoE, Qwen3-Next (full-attention layers) and
// GLM-4.x use it: q/k/v projections (optional bias), optional per-head QK RMSNorm
// (plain or zero-centred), partial RoPE, causal softmax attention over the paged
// cache, an optional sigmoid output gate carried in q_proj (Qwen3-Next), o_proj.
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "common/models/model.h"
#include "common/models/rope.h"

namespace krasis {

struct GqaOptions {
  bool qk_norm = false;               // q_norm / k_norm over head_dim
  bool zero_centred_qk_norm = false;  // Qwen3-Next: 1 + w
  bool output_gate = false;           // q_proj also yields a per-head gate (Qwen3-Next)
  bool interleaved_rope = false;      // pairs (2i, 2i+1) instead of rotate_half
};

// Loads prefix + {q,k,v,o}_proj.weight (and biases when config.attention_bias),
// q_norm/k_norm when options.qk_norm.
absl::StatusOr<std::unique_ptr<Mixer>> LoadGqaAttention(const ModelConfig& config,
                                                        const Weights& weights,
                                                        const std::string& prefix,
                                                        const GqaOptions& options, const Ops& ops);

}  // namespace krasis
