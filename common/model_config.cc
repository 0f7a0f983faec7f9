// Hugging Face config.json parser (see model_config.h).
//
// A FieldReader wraps one JSON object and type-checks every key it is asked for,
// keeping the first error (which names the file and the field), so the parser below
// reads like a list of fields with their transformers defaults. JSON null counts as
// absent, except where HF gives null a meaning (q_lora_rank, n_routed_experts).
#include "common/model_config.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <limits>
#include <utility>

#include "absl/strings/str_join.h"
#include "common/status.h"

namespace krasis {
namespace {

using json = nlohmann::json;

struct ArchInfo {
  Architecture arch;
  std::string_view model_type;
  std::string_view class_name;
};

constexpr ArchInfo kArchs[] = {
    {Architecture::kQwen3Moe, "qwen3_moe", "Qwen3MoeForCausalLM"},
    {Architecture::kQwen3Next, "qwen3_next", "Qwen3NextForCausalLM"},
    {Architecture::kDeepseekV2, "deepseek_v2", "DeepseekV2ForCausalLM"},
    {Architecture::kDeepseekV3, "deepseek_v3", "DeepseekV3ForCausalLM"},
    {Architecture::kGlm4Moe, "glm4_moe", "Glm4MoeForCausalLM"},
};

bool IsQwen(Architecture a) { return a == Architecture::kQwen3Moe || a == Architecture::kQwen3Next; }
bool IsDeepseek(Architecture a) {
  return a == Architecture::kDeepseekV2 || a == Architecture::kDeepseekV3;
}

// Sanity bound on num_hidden_layers (real models have at most a few hundred), so a
// corrupt config cannot make the per-layer vectors huge.
constexpr int64_t kMaxLayers = 1 << 16;

// Short rendering of a JSON value for error messages.
std::string Show(const json& value) {
  std::string text = value.dump(-1, ' ', false, json::error_handler_t::replace);
  if (text.size() > 60) text = text.substr(0, 57) + "...";
  return text;
}

// Typed access to the keys of one JSON object. Errors go to a status shared by all
// readers of one parse; only the first is kept.
class FieldReader {
 public:
  FieldReader(const json& object, std::string_view source, std::string_view prefix,
              absl::Status* status)
      : object_(object), source_(source), prefix_(prefix), status_(status) {}

  // Present and not null.
  bool Has(std::string_view key) const { return Find(key) != nullptr && !Find(key)->is_null(); }
  bool IsNull(std::string_view key) const { return Find(key) != nullptr && Find(key)->is_null(); }

  std::optional<int64_t> Int(std::string_view key) {
    const json* v = Get(key);
    if (v == nullptr) return std::nullopt;
    if (v->is_number_unsigned()) {
      if (v->get<uint64_t>() <= static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
        return static_cast<int64_t>(v->get<uint64_t>());
      }
    } else if (v->is_number_integer()) {
      return v->get<int64_t>();
    } else if (v->is_number_float()) {  // 4096.0 is an integer too
      double d = v->get<double>();
      if (std::trunc(d) == d && std::fabs(d) < 9.0e18) return static_cast<int64_t>(d);
    }
    TypeError(key, "an integer", *v);
    return std::nullopt;
  }
  std::optional<double> Double(std::string_view key) {
    const json* v = Get(key);
    if (v == nullptr) return std::nullopt;
    if (v->is_number()) return v->get<double>();
    TypeError(key, "a number", *v);
    return std::nullopt;
  }
  std::optional<bool> Bool(std::string_view key) {
    const json* v = Get(key);
    if (v == nullptr) return std::nullopt;
    if (v->is_boolean()) return v->get<bool>();
    TypeError(key, "a boolean", *v);
    return std::nullopt;
  }
  std::optional<std::string> String(std::string_view key) {
    const json* v = Get(key);
    if (v == nullptr) return std::nullopt;
    if (v->is_string()) return v->get<std::string>();
    TypeError(key, "a string", *v);
    return std::nullopt;
  }
  // A list of integers; a single integer is a list of one (token ids). Absent: empty.
  std::vector<int64_t> IntList(std::string_view key) {
    const json* v = Get(key);
    if (v == nullptr) return {};
    if (!v->is_array()) {
      std::optional<int64_t> one = Int(key);
      if (one.has_value()) return {*one};
      return {};
    }
    std::vector<int64_t> out;
    for (const json& item : *v) {
      if (!item.is_number_integer()) {
        TypeError(key, "a list of integers", *v);
        return {};
      }
      out.push_back(item.get<int64_t>());
    }
    return out;
  }
  std::optional<std::vector<std::string>> StringList(std::string_view key) {
    const json* v = Get(key);
    if (v == nullptr) return std::nullopt;
    bool ok = v->is_array();
    std::vector<std::string> out;
    for (size_t i = 0; ok && i < v->size(); ++i) {
      ok = (*v)[i].is_string();
      if (ok) out.push_back((*v)[i].get<std::string>());
    }
    if (ok) return out;
    TypeError(key, "a list of strings", *v);
    return std::nullopt;
  }
  // A nested object, or nullptr when absent or null.
  const json* Object(std::string_view key) {
    const json* v = Get(key);
    if (v == nullptr) return nullptr;
    if (v->is_object()) return v;
    TypeError(key, "an object", *v);
    return nullptr;
  }
  int64_t RequiredInt(std::string_view key, std::string_view model_type) {
    if (!Has(key)) {
      Missing(key, absl::StrCat("model_type ", std::string(model_type)));
      return 0;
    }
    return Int(key).value_or(0);
  }
  // Error for a key that must be present; `why` says what needs it.
  void Missing(std::string_view key, std::string_view why) {
    Fail(InvalidArgumentError(source_, ": missing required field '", prefix_, std::string(key),
                              "' (", std::string(why), ")"));
  }
  // A reader of `object` (a value inside this one) sharing this reader's error status.
  FieldReader Nested(const json& object, std::string_view prefix) const {
    return FieldReader(object, source_, prefix, status_);
  }
  const absl::Status& status() const { return *status_; }
  void Fail(absl::Status error) {
    if (status_->ok()) *status_ = std::move(error);
  }
  // Error for a value that is present but out of range.
  void BadValue(std::string_view key, std::string_view why, const json& value) {
    Fail(InvalidArgumentError(source_, ": field '", prefix_, std::string(key), "' ",
                              std::string(why), ", got ", Show(value)));
  }

 private:
  const json* Find(std::string_view key) const {
    auto it = object_.find(key);
    return it == object_.end() ? nullptr : &*it;
  }
  const json* Get(std::string_view key) const {
    const json* v = Find(key);
    return v == nullptr || v->is_null() ? nullptr : v;
  }
  void TypeError(std::string_view key, std::string_view expected, const json& value) {
    Fail(InvalidArgumentError(source_, ": field '", prefix_, std::string(key), "' must be ",
                              std::string(expected), ", got ", value.type_name(), " ",
                              Show(value)));
  }

  const json& object_;
  std::string source_;
  std::string prefix_;
  absl::Status* status_;
};

// transformers' per-architecture defaults for keys a config may leave out.
struct Defaults {
  int64_t num_key_value_heads = 0;  // 0: num_attention_heads
  int64_t head_dim = 0;             // 0: hidden_size / num_attention_heads
  double rms_norm_eps = 1e-6;
  int64_t max_position_embeddings = 0;
  double partial_rotary_factor = 1.0;
  int64_t num_experts = 0;
  std::optional<int64_t> num_experts_per_tok;
  int64_t moe_intermediate_size = 0;
  std::optional<int64_t> n_shared_experts;
  std::optional<int64_t> shared_expert_intermediate_size;
  int64_t first_k_dense_replace = 0;
  std::optional<int64_t> n_group;
  std::optional<int64_t> topk_group;
  std::string topk_method = "greedy";
  std::string scoring_func = "softmax";
  double routed_scaling_factor = 1.0;
  bool norm_topk_prob = false;
};

Defaults DefaultsFor(Architecture arch) {
  Defaults d;
  switch (arch) {
    case Architecture::kQwen3Moe:  // Qwen3MoeConfig
      d.num_key_value_heads = 4;
      d.max_position_embeddings = 32768;
      d.num_experts = 128;
      d.num_experts_per_tok = 8;
      d.moe_intermediate_size = 768;
      break;
    case Architecture::kQwen3Next:  // Qwen3NextConfig
      d.num_key_value_heads = 2;
      d.head_dim = 256;
      d.max_position_embeddings = 32768;
      d.partial_rotary_factor = 0.25;
      d.num_experts = 512;
      d.num_experts_per_tok = 10;
      d.moe_intermediate_size = 512;
      d.shared_expert_intermediate_size = 512;
      d.norm_topk_prob = true;
      break;
    case Architecture::kDeepseekV2:  // DeepseekV2Config
      d.max_position_embeddings = 2048;
      d.num_experts = 64;
      d.moe_intermediate_size = 1407;
      d.n_shared_experts = 2;
      break;
    case Architecture::kDeepseekV3:  // DeepseekV3Config
      d.num_key_value_heads = 128;
      d.max_position_embeddings = 4096;
      d.num_experts = 256;
      d.num_experts_per_tok = 8;
      d.moe_intermediate_size = 2048;
      d.n_shared_experts = 1;
      d.first_k_dense_replace = 3;
      d.n_group = 8;
      d.topk_group = 4;
      d.topk_method = "noaux_tc";
      d.scoring_func = "sigmoid";
      d.routed_scaling_factor = 2.5;
      d.norm_topk_prob = true;
      break;
    case Architecture::kGlm4Moe:  // Glm4MoeConfig
      d.num_key_value_heads = 8;
      d.rms_norm_eps = 1e-5;
      d.max_position_embeddings = 131072;
      d.partial_rotary_factor = 0.5;
      d.num_experts = 128;
      d.num_experts_per_tok = 8;
      d.moe_intermediate_size = 1408;
      d.n_shared_experts = 1;
      d.first_k_dense_replace = 1;
      d.n_group = 1;
      d.topk_group = 1;
      d.topk_method = "noaux_tc";
      d.scoring_func = "sigmoid";
      d.norm_topk_prob = true;
      break;
  }
  return d;
}

// Reads a rope_scaling / rope_parameters object; nullopt for plain RoPE (no type, or
// "default"). The caller decides whether a missing type is an error.
std::optional<RopeScaling> ReadRopeScaling(FieldReader& r) {
  std::optional<std::string> type = r.String("rope_type");
  if (!type.has_value()) type = r.String("type");
  if (!type.has_value()) return std::nullopt;
  if (*type == "default") return std::nullopt;
  if (*type != "yarn" && *type != "linear" && *type != "dynamic") {
    r.BadValue("rope_type", "must be one of default, linear, dynamic, yarn", json(*type));
    return std::nullopt;
  }
  RopeScaling s;
  s.type = *type;
  s.factor = r.Double("factor");
  if (!s.factor.has_value()) r.Missing("factor", "rope_type " + *type);
  s.original_max_position_embeddings = r.Int("original_max_position_embeddings");
  s.beta_fast = r.Double("beta_fast");
  s.beta_slow = r.Double("beta_slow");
  s.mscale = r.Double("mscale");
  s.mscale_all_dim = r.Double("mscale_all_dim");
  s.attention_factor = r.Double("attention_factor");
  s.truncate = r.Bool("truncate");
  return s;
}

// Stage 1: the model_type, defaulting to the "architectures" class name.
absl::Status ReadArchitecture(FieldReader& r, ModelConfig& c) {
  c.model_type = r.String("model_type").value_or("");
  c.architectures = r.StringList("architectures").value_or(std::vector<std::string>{});
  RETURN_IF_ERROR(r.status());
  std::optional<Architecture> arch = ArchitectureFromModelType(c.model_type);
  if (!arch.has_value() && c.model_type.empty() && !c.architectures.empty()) {
    arch = ArchitectureFromClassName(c.architectures.front());
  }
  if (!arch.has_value()) {
    return InvalidArgumentError(
        c.source, ": unsupported model_type \"", c.model_type, "\" (architectures [",
        absl::StrJoin(c.architectures, ", "), "]); supported model_type values: ",
        SupportedModelTypes());
  }
  c.architecture = *arch;
  if (c.model_type.empty()) c.model_type = std::string(ArchitectureName(*arch));
  return absl::OkStatus();
}

// Stage 2: shapes, norms, attention (MLA included).
void ReadAttention(FieldReader& r, const Defaults& d, ModelConfig& c) {
  const std::string& mt = c.model_type;
  c.vocab_size = r.RequiredInt("vocab_size", mt);
  c.hidden_size = r.RequiredInt("hidden_size", mt);
  c.intermediate_size = r.RequiredInt("intermediate_size", mt);
  c.num_hidden_layers = r.RequiredInt("num_hidden_layers", mt);
  c.num_attention_heads = r.RequiredInt("num_attention_heads", mt);
  for (auto [key, value] : {std::pair<const char*, int64_t>{"vocab_size", c.vocab_size},
                            {"hidden_size", c.hidden_size},
                            {"intermediate_size", c.intermediate_size},
                            {"num_hidden_layers", c.num_hidden_layers},
                            {"num_attention_heads", c.num_attention_heads}}) {
    if (r.Has(key) && value <= 0) r.BadValue(key, "must be positive", json(value));
  }
  if (c.num_hidden_layers > kMaxLayers) {
    r.BadValue("num_hidden_layers", absl::StrCat("must be at most ", kMaxLayers),
               json(c.num_hidden_layers));
  }
  if (!r.status().ok()) return;
  c.num_key_value_heads = r.Int("num_key_value_heads")
                              .value_or(d.num_key_value_heads > 0 ? d.num_key_value_heads
                                                                  : c.num_attention_heads);
  if (c.num_key_value_heads <= 0 || c.num_attention_heads % c.num_key_value_heads != 0) {
    r.BadValue("num_key_value_heads", "must be positive and divide num_attention_heads",
               json(c.num_key_value_heads));
  }
  c.rms_norm_eps = r.Double("rms_norm_eps").value_or(d.rms_norm_eps);
  c.max_position_embeddings = r.Int("max_position_embeddings").value_or(d.max_position_embeddings);
  c.hidden_act = r.String("hidden_act").value_or("silu");
  c.attention_bias = r.Bool("attention_bias").value_or(false);
  c.use_qk_norm = IsQwen(c.architecture) || r.Bool("use_qk_norm").value_or(false);
  c.tie_word_embeddings = r.Bool("tie_word_embeddings").value_or(false);
  if (IsDeepseek(c.architecture)) {
    c.q_lora_rank = r.IsNull("q_lora_rank") ? std::nullopt
                                             : std::optional(r.Int("q_lora_rank").value_or(1536));
    c.kv_lora_rank = r.Int("kv_lora_rank").value_or(512);
    c.qk_nope_head_dim = r.Int("qk_nope_head_dim").value_or(128);
    c.qk_rope_head_dim = r.Int("qk_rope_head_dim").value_or(64);
    c.v_head_dim = r.Int("v_head_dim").value_or(128);
    c.head_dim = *c.qk_rope_head_dim;
  } else {
    c.head_dim = r.Int("head_dim").value_or(d.head_dim > 0 ? d.head_dim
                                                            : c.hidden_size / c.num_attention_heads);
  }
  if (c.head_dim <= 0) r.BadValue("head_dim", "must be positive", json(c.head_dim));
}

// Stage 3: RoPE. rope_parameters (transformers >= 5) wins over rope_theta/rope_scaling.
void ReadRope(FieldReader& r, const Defaults& d, ModelConfig& c) {
  const json* params = r.Object("rope_parameters");
  if (params != nullptr && params->contains("full_attention") &&
      (*params)["full_attention"].is_object()) {
    params = &(*params)["full_attention"];  // per-layer-type form
  }
  const double theta = r.Double("rope_theta").value_or(10000.0);
  const double partial = r.Double("partial_rotary_factor").value_or(d.partial_rotary_factor);
  if (params != nullptr) {
    FieldReader p = r.Nested(*params, "rope_parameters.");
    c.rope_theta = p.Double("rope_theta").value_or(theta);
    c.partial_rotary_factor = p.Double("partial_rotary_factor").value_or(partial);
    c.rope_scaling = ReadRopeScaling(p);
  } else {
    c.rope_theta = theta;
    c.partial_rotary_factor = partial;
    if (const json* scaling = r.Object("rope_scaling"); scaling != nullptr) {
      FieldReader s = r.Nested(*scaling, "rope_scaling.");
      c.rope_scaling = ReadRopeScaling(s);
      if (!s.Has("rope_type") && !s.Has("type")) s.Missing("rope_type", "or 'type'");
    }
  }
  if (!(c.partial_rotary_factor > 0 && c.partial_rotary_factor <= 1)) {
    r.BadValue("partial_rotary_factor", "must be in (0, 1]", json(c.partial_rotary_factor));
  }
}

// Stage 4: per-layer token mixer and the Qwen3-Next linear attention shapes.
void ReadLayerTypes(FieldReader& r, ModelConfig& c) {
  c.layer_types.assign(c.num_hidden_layers, LayerType::kFullAttention);
  if (c.architecture != Architecture::kQwen3Next) return;
  if (std::optional<std::vector<std::string>> types = r.StringList("layer_types")) {
    if (static_cast<int64_t>(types->size()) != c.num_hidden_layers) {
      r.BadValue("layer_types", "must have num_hidden_layers entries", json(*types));
    }
    for (size_t i = 0; i < types->size() && i < c.layer_types.size(); ++i) {
      if ((*types)[i] == "linear_attention") {
        c.layer_types[i] = LayerType::kLinearAttention;
      } else if ((*types)[i] != "full_attention") {
        r.BadValue("layer_types", "entries must be \"linear_attention\" or \"full_attention\"",
                   json((*types)[i]));
      }
    }
  } else {
    const int64_t interval = r.Int("full_attention_interval").value_or(4);
    if (interval < 1) r.BadValue("full_attention_interval", "must be positive", json(interval));
    for (int64_t i = 0; interval >= 1 && i < c.num_hidden_layers; ++i) {
      if ((i + 1) % interval != 0) c.layer_types[i] = LayerType::kLinearAttention;
    }
  }
  c.linear_conv_kernel_dim = r.Int("linear_conv_kernel_dim").value_or(4);
  c.linear_key_head_dim = r.Int("linear_key_head_dim").value_or(128);
  c.linear_value_head_dim = r.Int("linear_value_head_dim").value_or(128);
  c.linear_num_key_heads = r.Int("linear_num_key_heads").value_or(16);
  c.linear_num_value_heads = r.Int("linear_num_value_heads").value_or(32);
}

// Stage 5: experts, their placement and routing.
void ReadMoe(FieldReader& r, const Defaults& d, ModelConfig& c) {
  const bool qwen = IsQwen(c.architecture);
  const char* key = qwen ? "num_experts" : "n_routed_experts";
  const char* alias = qwen ? "n_routed_experts" : "num_experts";
  if (!qwen && r.IsNull(key)) {
    c.num_experts = 0;  // "n_routed_experts": null is a dense model
  } else {
    // transformers >= 5 saves Qwen3-MoE's expert count as "num_local_experts".
    c.num_experts = r.Int(key).value_or(
        r.Int(alias).value_or(r.Int("num_local_experts").value_or(d.num_experts)));
  }
  c.num_experts_per_tok =
      r.Has("num_experts_per_tok") ? r.Int("num_experts_per_tok") : d.num_experts_per_tok;
  c.moe_intermediate_size = r.Int("moe_intermediate_size").value_or(d.moe_intermediate_size);
  c.norm_topk_prob = r.Bool("norm_topk_prob").value_or(d.norm_topk_prob);
  c.num_nextn_predict_layers = r.Int("num_nextn_predict_layers").value_or(0);
  if (qwen) {
    c.mlp_only_layers = r.IntList("mlp_only_layers");
    c.decoder_sparse_step = r.Int("decoder_sparse_step").value_or(1);
    if (c.architecture == Architecture::kQwen3Next) {
      c.shared_expert_intermediate_size = r.Int("shared_expert_intermediate_size")
                                              .value_or(*d.shared_expert_intermediate_size);
    }
  } else {
    c.n_shared_experts = r.Has("n_shared_experts") ? r.Int("n_shared_experts") : d.n_shared_experts;
    c.first_k_dense_replace = r.Int("first_k_dense_replace").value_or(d.first_k_dense_replace);
    c.moe_layer_freq = r.Int("moe_layer_freq").value_or(1);
    c.n_group = r.Has("n_group") ? r.Int("n_group") : d.n_group;
    c.topk_group = r.Has("topk_group") ? r.Int("topk_group") : d.topk_group;
  }
  c.topk_method = qwen ? d.topk_method : r.String("topk_method").value_or(d.topk_method);
  c.scoring_func = qwen ? d.scoring_func : r.String("scoring_func").value_or(d.scoring_func);
  c.routed_scaling_factor =
      qwen ? 1.0 : r.Double("routed_scaling_factor").value_or(d.routed_scaling_factor);
  if (c.decoder_sparse_step < 1) {
    r.BadValue("decoder_sparse_step", "must be positive", json(c.decoder_sparse_step));
  }
  if (c.moe_layer_freq < 1) r.BadValue("moe_layer_freq", "must be positive", json(c.moe_layer_freq));
  if (!r.status().ok()) return;
  bool has_moe_layer = false;
  for (int i = 0; i < c.num_hidden_layers && !has_moe_layer; ++i) has_moe_layer = c.IsMoeLayer(i);
  if (!has_moe_layer) return;
  if (!c.num_experts_per_tok.has_value()) {
    r.Missing("num_experts_per_tok", absl::StrCat("model_type ", c.model_type, " with ",
                                                  c.num_experts, " experts"));
  } else if (*c.num_experts_per_tok < 1 || *c.num_experts_per_tok > c.num_experts) {
    r.BadValue("num_experts_per_tok", "must be between 1 and the number of experts",
               json(*c.num_experts_per_tok));
  }
}

}  // namespace


std::string_view ArchitectureName(Architecture arch) {
  for (const ArchInfo& info : kArchs) {
    if (info.arch == arch) return info.model_type;
  }
  return "unknown";
}

std::optional<Architecture> ArchitectureFromModelType(std::string_view model_type) {
  for (const ArchInfo& info : kArchs) {
    if (info.model_type == model_type) return info.arch;
  }
  return std::nullopt;
}

std::optional<Architecture> ArchitectureFromClassName(std::string_view class_name) {
  for (const ArchInfo& info : kArchs) {
    if (info.class_name == class_name) return info.arch;
  }
  return std::nullopt;
}

std::string SupportedModelTypes() {
  std::vector<std::string> names;
  for (const ArchInfo& info : kArchs) names.emplace_back(info.model_type);
  return absl::StrJoin(names, ", ");
}

std::string_view LayerTypeName(LayerType type) {
  return type == LayerType::kLinearAttention ? "linear_attention" : "full_attention";
}

bool ModelConfig::IsMoeLayer(int layer) const {
  if (layer < 0 || layer >= num_hidden_layers || num_experts <= 0) return false;
  if (IsQwen(architecture)) {
    if (std::find(mlp_only_layers.begin(), mlp_only_layers.end(), layer) != mlp_only_layers.end()) {
      return false;
    }
    return (layer + 1) % decoder_sparse_step == 0;
  }
  return layer >= first_k_dense_replace && layer % moe_layer_freq == 0;
}

LayerType ModelConfig::GetLayerType(int layer) const {
  if (layer < 0 || static_cast<size_t>(layer) >= layer_types.size()) {
    return LayerType::kFullAttention;
  }
  return layer_types[layer];
}

int64_t ModelConfig::RotaryDim() const {
  if (qk_rope_head_dim.has_value()) return *qk_rope_head_dim;
  return std::llround(static_cast<double>(head_dim) * partial_rotary_factor);
}

int64_t ModelConfig::SharedExpertIntermediateSize() const {
  if (shared_expert_intermediate_size.has_value()) return *shared_expert_intermediate_size;
  if (n_shared_experts.has_value()) return *n_shared_experts * moe_intermediate_size;
  return 0;
}

bool SameModel(const ModelConfig& a, const ModelConfig& b) {
  ModelConfig x = a;
  ModelConfig y = b;
  x.raw = y.raw = nullptr;
  x.source = y.source = "";
  return x == y;
}

absl::StatusOr<ModelConfig> ParseModelConfig(const json& top, std::string_view source_name) {
  const std::string source(source_name);
  if (!top.is_object()) {
    return InvalidArgumentError(source, ": config must be a JSON object, got ", top.type_name());
  }
  // Nested text model: text_config's keys win, the top level fills the gaps.
  json merged = top;
  if (top.contains("text_config") && !top["text_config"].is_null()) {
    if (!top["text_config"].is_object()) {
      return InvalidArgumentError(source, ": field 'text_config' must be an object, got ",
                                  top["text_config"].type_name());
    }
    merged.erase("text_config");
    for (const auto& [key, value] : top["text_config"].items()) merged[key] = value;
  }
  absl::Status status;
  FieldReader r(merged, source, "", &status);
  ModelConfig c;
  c.raw = top;
  c.source = source;
  RETURN_IF_ERROR(ReadArchitecture(r, c));
  const Defaults d = DefaultsFor(c.architecture);
  ReadAttention(r, d, c);
  RETURN_IF_ERROR(status);
  ReadRope(r, d, c);
  ReadLayerTypes(r, c);
  ReadMoe(r, d, c);
  c.bos_token_id = r.Int("bos_token_id");
  c.eos_token_ids = r.IntList("eos_token_id");
  c.pad_token_id = r.Int("pad_token_id");
  c.dtype = r.Has("dtype") ? r.String("dtype") : r.String("torch_dtype");
  RETURN_IF_ERROR(status);
  return c;
}

namespace {

// Records where the JSON parser gave up, without exceptions.
class ErrorFinder : public nlohmann::json_sax<json> {
 public:
  bool null() override { return true; }
  bool boolean(bool) override { return true; }
  bool number_integer(number_integer_t) override { return true; }
  bool number_unsigned(number_unsigned_t) override { return true; }
  bool number_float(number_float_t, const string_t&) override { return true; }
  bool string(string_t&) override { return true; }
  bool binary(binary_t&) override { return true; }
  bool start_object(std::size_t) override { return true; }
  bool key(string_t&) override { return true; }
  bool end_object() override { return true; }
  bool start_array(std::size_t) override { return true; }
  bool end_array() override { return true; }
  bool parse_error(std::size_t position, const std::string&,
                   const nlohmann::detail::exception& error) override {
    message = absl::StrCat(" at byte ", position, " (", error.what(), ")");
    return false;
  }
  std::string message;
};

}  // namespace

absl::StatusOr<ModelConfig> LoadModelConfig(const std::string& path) {
  std::filesystem::path file(path);
  std::error_code ec;
  if (std::filesystem::is_directory(file, ec)) file /= "config.json";
  if (!std::filesystem::is_regular_file(file, ec)) {
    return NotFoundError("model config not found: ", file.string());
  }
  std::ifstream in(file, std::ios::binary);
  if (!in) return NotFoundError("cannot open model config: ", file.string());
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  json parsed = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (parsed.is_discarded()) {
    ErrorFinder finder;
    json::sax_parse(text, &finder);
    return InvalidArgumentError(file.string(), ": not valid JSON", finder.message);
  }
  return ParseModelConfig(parsed, file.string());
}

std::vector<int32_t> EosTokenIds(const std::string& model_dir, const ModelConfig& config) {
  std::vector<int32_t> eos;
  auto add = [&](int64_t id) {
    if (std::find(eos.begin(), eos.end(), static_cast<int32_t>(id)) == eos.end()) eos.push_back(static_cast<int32_t>(id));
  };
  for (int64_t e : config.eos_token_ids) add(e);
  std::ifstream in(std::filesystem::path(model_dir) / "generation_config.json");
  if (!in) return eos;
  auto j = nlohmann::json::parse(in, nullptr, false);
  if (j.is_discarded() || !j.is_object() || !j.contains("eos_token_id")) return eos;
  const auto& v = j["eos_token_id"];
  if (v.is_number_integer()) add(v.get<int64_t>());
  if (v.is_array()) {
    for (const auto& e : v) {
      if (e.is_number_integer()) add(e.get<int64_t>());
    }
  }
  return eos;
}

}  // namespace krasis
