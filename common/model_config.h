// Typed view of a Hugging Face config.json for the MoE architectures Krasis serves.
//
// Every forward pass (prefill on the GPU, decode on the CPU) and the loader read model
// shapes from here instead of from raw JSON, so each key is parsed, type-checked and
// defaulted exactly once. Supported model_type values: qwen3_moe, qwen3_next,
// deepseek_v2, deepseek_v3, glm4_moe.
//
// Two serializations of the same model parse to the same ModelConfig:
//   - the classic hub form: top-level rope_theta + rope_scaling ({"type"|"rope_type":
//     "yarn", "factor", ...}) and partial_rotary_factor;
//   - transformers >= 5: a rope_parameters dict holding rope_type, rope_theta,
//     partial_rotary_factor and the scaling fields. When rope_parameters is present it
//     wins over the top-level keys.
// A config whose top level has a text_config (multimodal wrappers) is read from
// text_config, with top-level keys filling in what text_config lacks (dtype,
// tie_word_embeddings, token ids).
//
// Absent optional keys take the defaults of transformers' own config classes
// (Qwen3MoeConfig, Qwen3NextConfig, DeepseekV2Config, DeepseekV3Config,
// Glm4MoeConfig); each field below names them. The five shape fields vocab_size,
// hidden_size, intermediate_size, num_hidden_layers and num_attention_heads are
// required: transformers' defaults for those describe some other model. Token ids
// are only ever taken from the file. Nothing here throws.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"

namespace krasis {

enum class Architecture {
  kQwen3Moe,    // model_type "qwen3_moe",   Qwen3MoeForCausalLM
  kQwen3Next,   // model_type "qwen3_next",  Qwen3NextForCausalLM (hybrid linear attention)
  kDeepseekV2,  // model_type "deepseek_v2", DeepseekV2ForCausalLM (MLA)
  kDeepseekV3,  // model_type "deepseek_v3", DeepseekV3ForCausalLM (MLA, sigmoid routing)
  kGlm4Moe,     // model_type "glm4_moe",    Glm4MoeForCausalLM
};

// The HF model_type string, e.g. "deepseek_v3".
std::string_view ArchitectureName(Architecture arch);
// Inverse of ArchitectureName; nullopt for anything else.
std::optional<Architecture> ArchitectureFromModelType(std::string_view model_type);
// From an "architectures" entry such as "Qwen3NextForCausalLM"; nullopt if unknown.
std::optional<Architecture> ArchitectureFromClassName(std::string_view class_name);
// "qwen3_moe, qwen3_next, deepseek_v2, deepseek_v3, glm4_moe", for error messages.
std::string SupportedModelTypes();

// Token mixer of one decoder layer.
enum class LayerType {
  kFullAttention,    // "full_attention": softmax attention with a KV cache
  kLinearAttention,  // "linear_attention": Qwen3-Next gated DeltaNet with recurrent state
};
std::string_view LayerTypeName(LayerType type);

// RoPE scaling, from rope_scaling (classic) or rope_parameters (transformers >= 5).
// Absent for plain RoPE (rope_scaling null, or rope_type "default").
struct RopeScaling {
  std::string type;  // "yarn", "linear" or "dynamic" ("type" and "rope_type" both accepted)
  std::optional<double> factor;
  std::optional<int64_t> original_max_position_embeddings;
  // YaRN. transformers' defaults when absent: beta_fast 32, beta_slow 1; DeepSeek's
  // mscale 1 and mscale_all_dim 0; attention_factor derived from factor.
  std::optional<double> beta_fast;
  std::optional<double> beta_slow;
  std::optional<double> mscale;
  std::optional<double> mscale_all_dim;
  std::optional<double> attention_factor;
  std::optional<bool> truncate;

  bool operator==(const RopeScaling&) const = default;
};

struct ModelConfig {
  Architecture architecture = Architecture::kQwen3Moe;
  std::string model_type;                  // as written (text_config's when nested)
  std::vector<std::string> architectures;  // "architectures", e.g. {"DeepseekV3ForCausalLM"}

  // Shapes. Required: vocab_size, hidden_size, intermediate_size, num_hidden_layers,
  // num_attention_heads.
  int64_t vocab_size = 0;
  int64_t hidden_size = 0;
  int64_t intermediate_size = 0;  // dense MLP width (dense layers of MoE models)
  int64_t num_hidden_layers = 0;
  int64_t num_attention_heads = 0;
  // Default: qwen3_moe 4, qwen3_next 2, deepseek_v2 = num_attention_heads,
  // deepseek_v3 128, glm4_moe 8.
  int64_t num_key_value_heads = 0;
  // Default hidden_size / num_attention_heads; qwen3_next 256. For deepseek it is
  // qk_rope_head_dim whatever the file says (as transformers sets it); MLA widths are
  // the qk_*/v_head_dim fields below.
  int64_t head_dim = 0;
  double rms_norm_eps = 0;               // 1e-6; glm4_moe 1e-5
  int64_t max_position_embeddings = 0;   // qwen3 32768, v2 2048, v3 4096, glm 131072
  std::string hidden_act = "silu";       // default "silu"
  bool attention_bias = false;           // default false
  bool use_qk_norm = false;              // glm4_moe key (default false); qwen3 always true
  bool tie_word_embeddings = false;      // default false

  // RoPE.
  double rope_theta = 10000;  // default 10000
  // Fraction of head_dim that is rotated: default 1; qwen3_next 0.25; glm4_moe 0.5.
  double partial_rotary_factor = 1;
  std::optional<RopeScaling> rope_scaling;

  // Per-layer token mixer, num_hidden_layers entries. All full attention except
  // qwen3_next, where it comes from layer_types or else full_attention_interval
  // (default 4): layer i is full when (i + 1) % interval == 0. (The interval itself is
  // not kept: layer_types is the one source of truth, whichever key the file used.)
  std::vector<LayerType> layer_types;

  // Mixture of experts. num_experts is num_experts (qwen) or n_routed_experts
  // (deepseek, glm); 0 means dense ("n_routed_experts": null). Defaults: qwen3_moe 128,
  // qwen3_next 512, deepseek_v2 64, deepseek_v3 256, glm4_moe 128.
  int64_t num_experts = 0;
  // Default qwen3_moe 8, qwen3_next 10, deepseek_v3 8, glm4_moe 8; deepseek_v2 none
  // (required when the model has MoE layers).
  std::optional<int64_t> num_experts_per_tok;
  int64_t moe_intermediate_size = 0;  // per expert: 768, 512, 1407, 2048, 1408 (same order)
  // Shared experts: deepseek/glm count (v2 2, v3 1, glm 1); qwen3_next one shared expert
  // of shared_expert_intermediate_size (default 512). See SharedExpertIntermediateSize.
  std::optional<int64_t> n_shared_experts;
  std::optional<int64_t> shared_expert_intermediate_size;
  // Which layers are MoE (see IsMoeLayer). deepseek/glm: first_k_dense_replace
  // (v2 0, v3 3, glm 1) and moe_layer_freq (1). qwen: mlp_only_layers ([]) and
  // decoder_sparse_step (1).
  int64_t first_k_dense_replace = 0;
  int64_t moe_layer_freq = 1;
  std::vector<int64_t> mlp_only_layers;
  int64_t decoder_sparse_step = 1;
  // Routing. n_group/topk_group: v2 none, v3 8/4, glm 1/1, qwen none.
  std::optional<int64_t> n_group;
  std::optional<int64_t> topk_group;
  std::string topk_method;     // v2 "greedy", v3/glm "noaux_tc", qwen "greedy" (plain top-k)
  std::string scoring_func;    // v2/qwen "softmax", v3/glm "sigmoid"
  double routed_scaling_factor = 1;  // v2 1.0, v3 2.5, glm 1.0, qwen 1.0
  bool norm_topk_prob = false;       // qwen3_moe false, qwen3_next true, v2 false, v3/glm true
  int64_t num_nextn_predict_layers = 0;  // MTP layers stored after the main stack; 0

  // Multi-head latent attention (deepseek only; absent elsewhere).
  std::optional<int64_t> q_lora_rank;  // default 1536; JSON null = no q compression
  std::optional<int64_t> kv_lora_rank;      // 512
  std::optional<int64_t> qk_nope_head_dim;  // 128
  std::optional<int64_t> qk_rope_head_dim;  // 64
  std::optional<int64_t> v_head_dim;        // 128

  // Gated DeltaNet linear attention (qwen3_next only; absent elsewhere).
  std::optional<int64_t> linear_conv_kernel_dim;  // 4
  std::optional<int64_t> linear_key_head_dim;     // 128
  std::optional<int64_t> linear_value_head_dim;   // 128
  std::optional<int64_t> linear_num_key_heads;    // 16
  std::optional<int64_t> linear_num_value_heads;  // 32

  // Tokens and storage, only as written in the file.
  std::optional<int64_t> bos_token_id;
  std::vector<int64_t> eos_token_ids;  // "eos_token_id": int or list
  std::optional<int64_t> pad_token_id;
  std::optional<std::string> dtype;  // "torch_dtype" or "dtype", e.g. "bfloat16"

  // The whole file as read (the top level, text_config included), for later readers.
  nlohmann::json raw;
  // Where it came from (a path or a caller-chosen name), for error messages.
  std::string source;

  // Whether decoder layer `layer` has routed experts. qwen3_moe/qwen3_next: not in
  // mlp_only_layers, num_experts > 0 and (layer + 1) % decoder_sparse_step == 0.
  // deepseek/glm: num_experts > 0, layer >= first_k_dense_replace and
  // layer % moe_layer_freq == 0. False outside [0, num_hidden_layers).
  bool IsMoeLayer(int layer) const;
  // layer_types[layer]; full attention outside [0, num_hidden_layers).
  LayerType GetLayerType(int layer) const;
  // Number of rotated dimensions per head: qk_rope_head_dim for MLA, else
  // head_dim * partial_rotary_factor.
  int64_t RotaryDim() const;
  // Total width of the shared expert MLP of an MoE layer (0 if none):
  // n_shared_experts * moe_intermediate_size (deepseek, glm) or
  // shared_expert_intermediate_size (qwen3_next).
  int64_t SharedExpertIntermediateSize() const;
  bool IsMla() const { return kv_lora_rank.has_value(); }

  bool operator==(const ModelConfig&) const = default;
};

// True when a and b describe the same model: every field equal except raw and source.
bool SameModel(const ModelConfig& a, const ModelConfig& b);

// Parses a config.json already in memory. `source_name` (usually the path) prefixes
// every error message. InvalidArgument for an unsupported model_type (the message lists
// the supported ones), a missing required field or a value of the wrong JSON type (the
// message names the field).
absl::StatusOr<ModelConfig> ParseModelConfig(const nlohmann::json& json,
                                             std::string_view source_name);

// Reads `path`, a config.json or a model directory containing one. NotFound when the
// file does not exist, InvalidArgument when it is not valid JSON; both name the path.
absl::StatusOr<ModelConfig> LoadModelConfig(const std::string& path);

// The ids that end a generation: config.json's eos_token_id, then those of the
// model directory's generation_config.json (int or list) when it has one, without
// duplicates and in that order.
std::vector<int32_t> EosTokenIds(const std::string& model_dir, const ModelConfig& config);

}  // namespace krasis
