// One builder per architecture: each fills model.layers with the blocks its
// checkpoint describes (tensor names as published on the hub). LoadModel
// (model.cc) has already loaded the embedding, final norm and lm_head.
#pragma once

#include <functional>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "common/models/blocks/ffn.h"
#include "common/models/model.h"

namespace krasis {

absl::Status BuildQwen3Moe(const Weights& weights, DecoderModel& model);   // qwen3_moe.cc
absl::Status BuildQwen3Next(const Weights& weights, DecoderModel& model);  // qwen3_next.cc
absl::Status BuildDeepseek(const Weights& weights, DecoderModel& model);   // deepseek.cc (V2, V3)
absl::Status BuildGlm4Moe(const Weights& weights, DecoderModel& model);    // glm4_moe.cc

// The pre-norms of layer `layer` (input_layernorm, post_attention_layernorm); model.cc.
absl::Status LoadLayerNorms(const Weights& weights, const ModelConfig& config, int layer,
                            DecoderLayer& out);

// Makes the token mixer of layer `layer`, whose tensors start with `prefix`
// ("model.layers.<layer>.").
using MixerFactory =
    std::function<absl::StatusOr<std::unique_ptr<Mixer>>(int layer, const std::string& prefix)>;

// Fills model.layers: every layer's norms, its mixer, and an MoE block (with
// `moe`) where config.IsMoeLayer says so, else the dense MLP; model.cc.
absl::Status BuildLayers(const Weights& weights, DecoderModel& model, const MoeOptions& moe,
                         const MixerFactory& make_mixer);

}  // namespace krasis
