// Gated DeltaNet linear attention, the token mixer of Qwen3-Next's
// "linear_attention" layers.
//
// Instead of a growing KV cache each sequence keeps a fixed-size state per layer
// (SequenceState::linear[layer]): the last kernel-1 inputs of a causal depthwise
// conv1d, and a [key_dim, value_dim] matrix per value head that the gated delta
// rule updates token by token. The reference computes the recurrent
// form for every token (prefill and decode alike); Hugging Face's chunked prefill
// is the same function regrouped, so decoding token by token reproduces prefill.
// It matches transformers' Qwen3NextGatedDeltaNet with its torch fallbacks
// (torch_causal_conv1d_update, torch_recurrent_gated_delta_rule,
// Qwen3NextRMSNormGated).
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "common/kernels/ops.h"
#include "common/model_config.h"
#include "common/models/model.h"
#include "common/models/weights.h"

namespace krasis {

// Loads the Gated DeltaNet of one layer from the tensors under `prefix` (e.g.
// "model.layers.0.linear_attn."): in_proj_qkvz, in_proj_ba, conv1d (bias
// optional), dt_bias, A_log, norm and out_proj. Needs config.linear_* to be set;
// errors name the missing field or the missing/mis-shaped tensor. The returned
// mixer keeps views into `weights`, which must outlive it.
absl::StatusOr<std::unique_ptr<Mixer>> LoadGatedDeltaNet(const ModelConfig& config,
                                                         const Weights& weights,
                                                         const std::string& prefix,
                                                         const Ops& ops);

}  // namespace krasis
