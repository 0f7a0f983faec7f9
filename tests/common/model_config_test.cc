// Tests for the Hugging Face config parser (common/model_config.h).
//
// The real config.json of each supported family (tests/data/configs, provenance in
// SOURCES.md there) must parse to the numbers published on its model card; the
// transformers >= 5 and text_config-nested serializations of the same models must
// parse to the same ModelConfig; bad input must fail with a message that names the
// file and the field.
#include "common/model_config.h"

#include <filesystem>
#include <fstream>
#include <string>
#include <string_view>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace krasis {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using json = nlohmann::json;

std::string ConfigPath(std::string_view name) {
  return absl::StrCat(KRASIS_TEST_DATA_DIR, "/configs/", std::string(name));
}

json ReadJson(std::string_view name) {
  std::ifstream in(ConfigPath(name));
  return json::parse(in, nullptr, /*allow_exceptions=*/false);
}

int CountMoeLayers(const ModelConfig& c) {
  int n = 0;
  for (int i = 0; i < c.num_hidden_layers; ++i) n += c.IsMoeLayer(i) ? 1 : 0;
  return n;
}

int CountLayers(const ModelConfig& c, LayerType type) {
  int n = 0;
  for (int i = 0; i < c.num_hidden_layers; ++i) n += c.GetLayerType(i) == type ? 1 : 0;
  return n;
}

// A small valid config of `model_type`, to be broken one field at a time.
json Minimal(std::string_view model_type) {
  return json{{"model_type", model_type},   {"vocab_size", 1000},
              {"hidden_size", 256},         {"intermediate_size", 512},
              {"num_hidden_layers", 4},     {"num_attention_heads", 8},
              {"num_key_value_heads", 2},   {"num_experts_per_tok", 2}};
}

TEST(ModelConfigTest, QwenCoderNext) {
  absl::StatusOr<ModelConfig> c = LoadModelConfig(ConfigPath("qwen3_coder_next.json"));
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->architecture, Architecture::kQwen3Next);
  EXPECT_EQ(c->model_type, "qwen3_next");
  EXPECT_THAT(c->architectures, ElementsAre("Qwen3NextForCausalLM"));
  EXPECT_EQ(c->vocab_size, 151936);
  EXPECT_EQ(c->hidden_size, 2048);
  EXPECT_EQ(c->intermediate_size, 5120);
  EXPECT_EQ(c->num_hidden_layers, 48);
  EXPECT_EQ(c->num_attention_heads, 16);
  EXPECT_EQ(c->num_key_value_heads, 2);
  EXPECT_EQ(c->head_dim, 256);
  EXPECT_DOUBLE_EQ(c->rms_norm_eps, 1e-6);
  EXPECT_EQ(c->max_position_embeddings, 262144);
  EXPECT_EQ(c->hidden_act, "silu");
  EXPECT_DOUBLE_EQ(c->rope_theta, 5000000);
  EXPECT_DOUBLE_EQ(c->partial_rotary_factor, 0.25);
  EXPECT_EQ(c->RotaryDim(), 64);
  EXPECT_FALSE(c->rope_scaling.has_value());
  EXPECT_FALSE(c->attention_bias);
  EXPECT_TRUE(c->use_qk_norm);
  EXPECT_FALSE(c->tie_word_embeddings);
  // 12 x (3 gated DeltaNet + 1 gated attention).
  ASSERT_EQ(c->layer_types.size(), 48u);
  EXPECT_EQ(CountLayers(*c, LayerType::kFullAttention), 12);
  EXPECT_EQ(CountLayers(*c, LayerType::kLinearAttention), 36);
  for (int i = 0; i < 48; ++i) {
    EXPECT_EQ(c->GetLayerType(i),
              (i + 1) % 4 == 0 ? LayerType::kFullAttention : LayerType::kLinearAttention)
        << "layer " << i;
  }
  EXPECT_EQ(c->linear_conv_kernel_dim, 4);
  EXPECT_EQ(c->linear_key_head_dim, 128);
  EXPECT_EQ(c->linear_value_head_dim, 128);
  EXPECT_EQ(c->linear_num_key_heads, 16);
  EXPECT_EQ(c->linear_num_value_heads, 32);
  EXPECT_EQ(c->num_experts, 512);
  EXPECT_EQ(c->num_experts_per_tok, 10);
  EXPECT_EQ(c->moe_intermediate_size, 512);
  EXPECT_EQ(c->shared_expert_intermediate_size, 512);
  EXPECT_EQ(c->SharedExpertIntermediateSize(), 512);
  EXPECT_TRUE(c->norm_topk_prob);
  EXPECT_EQ(c->scoring_func, "softmax");
  EXPECT_EQ(CountMoeLayers(*c), 48);
  EXPECT_FALSE(c->IsMla());
  EXPECT_FALSE(c->q_lora_rank.has_value());
  EXPECT_EQ(c->bos_token_id, 151643);
  EXPECT_THAT(c->eos_token_ids, ElementsAre(151645));
  EXPECT_FALSE(c->pad_token_id.has_value());
  EXPECT_EQ(c->dtype, "bfloat16");
  EXPECT_EQ(c->raw["transformers_version"], "4.57.0.dev0");
}

TEST(ModelConfigTest, Qwen3_235B) {
  absl::StatusOr<ModelConfig> c = LoadModelConfig(ConfigPath("qwen3_235b_a22b.json"));
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->architecture, Architecture::kQwen3Moe);
  EXPECT_EQ(c->vocab_size, 151936);
  EXPECT_EQ(c->hidden_size, 4096);
  EXPECT_EQ(c->intermediate_size, 12288);
  EXPECT_EQ(c->num_hidden_layers, 94);
  EXPECT_EQ(c->num_attention_heads, 64);
  EXPECT_EQ(c->num_key_value_heads, 4);
  EXPECT_EQ(c->head_dim, 128);
  EXPECT_EQ(c->RotaryDim(), 128);
  EXPECT_EQ(c->max_position_embeddings, 40960);
  EXPECT_DOUBLE_EQ(c->rope_theta, 1000000);
  EXPECT_DOUBLE_EQ(c->partial_rotary_factor, 1.0);
  EXPECT_FALSE(c->rope_scaling.has_value());
  EXPECT_EQ(c->num_experts, 128);
  EXPECT_EQ(c->num_experts_per_tok, 8);
  EXPECT_EQ(c->moe_intermediate_size, 1536);
  EXPECT_EQ(c->SharedExpertIntermediateSize(), 0);
  EXPECT_TRUE(c->norm_topk_prob);
  EXPECT_EQ(c->decoder_sparse_step, 1);
  EXPECT_TRUE(c->mlp_only_layers.empty());
  EXPECT_EQ(CountMoeLayers(*c), 94);
  EXPECT_EQ(CountLayers(*c, LayerType::kFullAttention), 94);
  EXPECT_FALSE(c->linear_num_value_heads.has_value());
  EXPECT_FALSE(c->IsMla());
  EXPECT_EQ(c->bos_token_id, 151643);
  EXPECT_THAT(c->eos_token_ids, ElementsAre(151645));
}

TEST(ModelConfigTest, DeepSeekV2Lite) {
  absl::StatusOr<ModelConfig> c = LoadModelConfig(ConfigPath("deepseek_v2_lite.json"));
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->architecture, Architecture::kDeepseekV2);
  EXPECT_EQ(c->vocab_size, 102400);
  EXPECT_EQ(c->hidden_size, 2048);
  EXPECT_EQ(c->intermediate_size, 10944);
  EXPECT_EQ(c->num_hidden_layers, 27);
  EXPECT_EQ(c->num_attention_heads, 16);
  EXPECT_EQ(c->num_key_value_heads, 16);
  EXPECT_EQ(c->max_position_embeddings, 163840);
  // MLA without a query compression ("q_lora_rank": null).
  EXPECT_TRUE(c->IsMla());
  EXPECT_FALSE(c->q_lora_rank.has_value());
  EXPECT_EQ(c->kv_lora_rank, 512);
  EXPECT_EQ(c->qk_nope_head_dim, 128);
  EXPECT_EQ(c->qk_rope_head_dim, 64);
  EXPECT_EQ(c->v_head_dim, 128);
  EXPECT_EQ(c->head_dim, 64);
  EXPECT_EQ(c->RotaryDim(), 64);
  EXPECT_DOUBLE_EQ(c->rope_theta, 10000);
  ASSERT_TRUE(c->rope_scaling.has_value());
  EXPECT_EQ(c->rope_scaling->type, "yarn");
  EXPECT_EQ(c->rope_scaling->factor, 40.0);
  EXPECT_EQ(c->rope_scaling->original_max_position_embeddings, 4096);
  EXPECT_EQ(c->rope_scaling->beta_fast, 32.0);
  EXPECT_EQ(c->rope_scaling->beta_slow, 1.0);
  EXPECT_EQ(c->rope_scaling->mscale, 0.707);
  EXPECT_EQ(c->rope_scaling->mscale_all_dim, 0.707);
  EXPECT_EQ(c->num_experts, 64);
  EXPECT_EQ(c->num_experts_per_tok, 6);
  EXPECT_EQ(c->moe_intermediate_size, 1408);
  EXPECT_EQ(c->n_shared_experts, 2);
  EXPECT_EQ(c->SharedExpertIntermediateSize(), 2816);
  EXPECT_EQ(c->first_k_dense_replace, 1);
  EXPECT_EQ(c->moe_layer_freq, 1);
  EXPECT_FALSE(c->IsMoeLayer(0));
  EXPECT_TRUE(c->IsMoeLayer(1));
  EXPECT_TRUE(c->IsMoeLayer(26));
  EXPECT_FALSE(c->IsMoeLayer(27));  // past the last layer
  EXPECT_FALSE(c->IsMoeLayer(-1));
  EXPECT_EQ(CountMoeLayers(*c), 26);
  EXPECT_EQ(c->n_group, 1);
  EXPECT_EQ(c->topk_group, 1);
  EXPECT_EQ(c->topk_method, "greedy");
  EXPECT_EQ(c->scoring_func, "softmax");
  EXPECT_DOUBLE_EQ(c->routed_scaling_factor, 1.0);
  EXPECT_FALSE(c->norm_topk_prob);
  EXPECT_FALSE(c->use_qk_norm);
  EXPECT_EQ(c->bos_token_id, 100000);
  EXPECT_THAT(c->eos_token_ids, ElementsAre(100001));
  EXPECT_EQ(c->num_nextn_predict_layers, 0);
}

TEST(ModelConfigTest, DeepSeekV3) {
  absl::StatusOr<ModelConfig> c = LoadModelConfig(ConfigPath("deepseek_v3.json"));
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->architecture, Architecture::kDeepseekV3);
  EXPECT_EQ(c->vocab_size, 129280);
  EXPECT_EQ(c->hidden_size, 7168);
  EXPECT_EQ(c->intermediate_size, 18432);
  EXPECT_EQ(c->num_hidden_layers, 61);
  EXPECT_EQ(c->num_attention_heads, 128);
  EXPECT_EQ(c->num_key_value_heads, 128);
  EXPECT_EQ(c->q_lora_rank, 1536);
  EXPECT_EQ(c->kv_lora_rank, 512);
  EXPECT_EQ(c->qk_nope_head_dim, 128);
  EXPECT_EQ(c->qk_rope_head_dim, 64);
  EXPECT_EQ(c->v_head_dim, 128);
  EXPECT_EQ(c->num_experts, 256);
  EXPECT_EQ(c->num_experts_per_tok, 8);
  EXPECT_EQ(c->moe_intermediate_size, 2048);
  EXPECT_EQ(c->n_shared_experts, 1);
  EXPECT_EQ(c->SharedExpertIntermediateSize(), 2048);
  // The first three layers are dense.
  EXPECT_EQ(c->first_k_dense_replace, 3);
  for (int i = 0; i < 3; ++i) EXPECT_FALSE(c->IsMoeLayer(i)) << i;
  for (int i = 3; i < 61; ++i) EXPECT_TRUE(c->IsMoeLayer(i)) << i;
  EXPECT_EQ(CountMoeLayers(*c), 58);
  EXPECT_EQ(c->n_group, 8);
  EXPECT_EQ(c->topk_group, 4);
  EXPECT_EQ(c->topk_method, "noaux_tc");
  EXPECT_EQ(c->scoring_func, "sigmoid");
  EXPECT_DOUBLE_EQ(c->routed_scaling_factor, 2.5);
  EXPECT_TRUE(c->norm_topk_prob);
  EXPECT_EQ(c->max_position_embeddings, 163840);
  ASSERT_TRUE(c->rope_scaling.has_value());
  EXPECT_EQ(c->rope_scaling->type, "yarn");
  EXPECT_EQ(c->rope_scaling->factor, 40.0);
  EXPECT_EQ(c->rope_scaling->original_max_position_embeddings, 4096);
  EXPECT_EQ(c->rope_scaling->mscale, 1.0);
  EXPECT_EQ(c->rope_scaling->mscale_all_dim, 1.0);
  EXPECT_EQ(c->num_nextn_predict_layers, 1);
  EXPECT_EQ(c->bos_token_id, 0);
  EXPECT_THAT(c->eos_token_ids, ElementsAre(1));
  EXPECT_EQ(c->raw["quantization_config"]["quant_method"], "fp8");
}

TEST(ModelConfigTest, Glm47) {
  absl::StatusOr<ModelConfig> c = LoadModelConfig(ConfigPath("glm_4_7.json"));
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->architecture, Architecture::kGlm4Moe);
  EXPECT_EQ(c->vocab_size, 151552);
  EXPECT_EQ(c->hidden_size, 5120);
  EXPECT_EQ(c->intermediate_size, 12288);
  EXPECT_EQ(c->num_hidden_layers, 92);
  EXPECT_EQ(c->num_attention_heads, 96);
  EXPECT_EQ(c->num_key_value_heads, 8);
  EXPECT_EQ(c->head_dim, 128);
  EXPECT_DOUBLE_EQ(c->partial_rotary_factor, 0.5);
  EXPECT_EQ(c->RotaryDim(), 64);
  EXPECT_DOUBLE_EQ(c->rope_theta, 1000000);
  EXPECT_FALSE(c->rope_scaling.has_value());
  EXPECT_DOUBLE_EQ(c->rms_norm_eps, 1e-5);
  EXPECT_EQ(c->max_position_embeddings, 202752);
  EXPECT_TRUE(c->attention_bias);
  EXPECT_TRUE(c->use_qk_norm);
  EXPECT_EQ(c->num_experts, 160);
  EXPECT_EQ(c->num_experts_per_tok, 8);
  EXPECT_EQ(c->moe_intermediate_size, 1536);
  EXPECT_EQ(c->SharedExpertIntermediateSize(), 1536);
  EXPECT_EQ(c->first_k_dense_replace, 3);
  EXPECT_FALSE(c->IsMoeLayer(2));
  EXPECT_TRUE(c->IsMoeLayer(3));
  EXPECT_EQ(CountMoeLayers(*c), 89);
  EXPECT_EQ(c->n_group, 1);
  EXPECT_EQ(c->topk_group, 1);
  EXPECT_DOUBLE_EQ(c->routed_scaling_factor, 2.5);
  EXPECT_EQ(c->topk_method, "noaux_tc");
  EXPECT_EQ(c->scoring_func, "sigmoid");
  EXPECT_EQ(c->num_nextn_predict_layers, 1);
  EXPECT_FALSE(c->bos_token_id.has_value());
  EXPECT_THAT(c->eos_token_ids, ElementsAre(151329, 151336, 151338));
  EXPECT_EQ(c->pad_token_id, 151329);
  EXPECT_FALSE(c->IsMla());
}

// Transformers >= 5 (rope_parameters, dtype, layer_types) and text_config nesting
// describe the same models as the classic files.
TEST(ModelConfigTest, AlternativeSerializationsParseIdentically) {
  const std::pair<const char*, const char*> pairs[] = {
      {"deepseek_v3.json", "deepseek_v3_tf5.json"},
      {"deepseek_v2_lite.json", "deepseek_v2_lite_tf5.json"},
      {"qwen3_coder_next.json", "qwen3_coder_next_tf5.json"},
      {"qwen3_coder_next.json", "qwen3_coder_next_text_config.json"},
  };
  for (const auto& [classic, variant] : pairs) {
    absl::StatusOr<ModelConfig> a = LoadModelConfig(ConfigPath(classic));
    absl::StatusOr<ModelConfig> b = LoadModelConfig(ConfigPath(variant));
    ASSERT_TRUE(a.ok()) << a.status();
    ASSERT_TRUE(b.ok()) << b.status();
    EXPECT_NE(a->raw, b->raw) << variant;
    EXPECT_TRUE(SameModel(*a, *b)) << classic << " vs " << variant;
  }
  absl::StatusOr<ModelConfig> v5 = LoadModelConfig(ConfigPath("deepseek_v3_tf5.json"));
  ASSERT_TRUE(v5.ok()) << v5.status();
  EXPECT_FALSE(v5->raw.contains("rope_scaling"));
  ASSERT_TRUE(v5->rope_scaling.has_value());
  EXPECT_EQ(v5->rope_scaling->type, "yarn");
  EXPECT_EQ(v5->rope_scaling->factor, 40.0);
  EXPECT_EQ(v5->dtype, "bfloat16");
}

TEST(ModelConfigTest, SameModelSeesDifferences) {
  json j = ReadJson("glm_4_7.json");
  absl::StatusOr<ModelConfig> a = ParseModelConfig(j, "a");
  j["first_k_dense_replace"] = 1;
  absl::StatusOr<ModelConfig> b = ParseModelConfig(j, "b");
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_FALSE(SameModel(*a, *b));
  EXPECT_TRUE(SameModel(*a, *a));
}

TEST(ModelConfigTest, LoadsFromModelDirectory) {
  const std::filesystem::path dir = std::filesystem::path(testing::TempDir()) / "model_config_dir";
  std::filesystem::create_directories(dir);
  std::filesystem::copy_file(ConfigPath("glm_4_7.json"), dir / "config.json",
                             std::filesystem::copy_options::overwrite_existing);
  absl::StatusOr<ModelConfig> c = LoadModelConfig(dir.string());
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->num_hidden_layers, 92);
  EXPECT_THAT(c->source, HasSubstr("config.json"));
}

TEST(ModelConfigTest, ArchitectureNames) {
  for (Architecture a : {Architecture::kQwen3Moe, Architecture::kQwen3Next,
                         Architecture::kDeepseekV2, Architecture::kDeepseekV3,
                         Architecture::kGlm4Moe}) {
    EXPECT_EQ(ArchitectureFromModelType(ArchitectureName(a)), a);
  }
  EXPECT_EQ(ArchitectureName(Architecture::kDeepseekV3), "deepseek_v3");
  EXPECT_EQ(ArchitectureFromClassName("Glm4MoeForCausalLM"), Architecture::kGlm4Moe);
  EXPECT_FALSE(ArchitectureFromModelType("llama").has_value());
  EXPECT_EQ(SupportedModelTypes(), "qwen3_moe, qwen3_next, deepseek_v2, deepseek_v3, glm4_moe");
  EXPECT_EQ(LayerTypeName(LayerType::kLinearAttention), "linear_attention");
}

TEST(ModelConfigTest, ArchitectureFromClassNameWhenModelTypeMissing) {
  json j = ReadJson("deepseek_v3.json");
  j.erase("model_type");
  absl::StatusOr<ModelConfig> c = ParseModelConfig(j, "no_model_type.json");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->architecture, Architecture::kDeepseekV3);
  EXPECT_EQ(c->model_type, "deepseek_v3");
}

TEST(ModelConfigTest, TransformersDefaultsFillMissingFields) {
  json j = Minimal("glm4_moe");
  j.erase("num_key_value_heads");
  absl::StatusOr<ModelConfig> c = ParseModelConfig(j, "glm_minimal");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->num_key_value_heads, 8);
  EXPECT_EQ(c->head_dim, 32);  // hidden_size / num_attention_heads
  EXPECT_DOUBLE_EQ(c->rms_norm_eps, 1e-5);
  EXPECT_DOUBLE_EQ(c->partial_rotary_factor, 0.5);
  EXPECT_DOUBLE_EQ(c->rope_theta, 10000);
  EXPECT_EQ(c->num_experts, 128);
  EXPECT_EQ(c->first_k_dense_replace, 1);
  EXPECT_EQ(c->max_position_embeddings, 131072);

  json n = Minimal("qwen3_next");
  n["num_hidden_layers"] = 8;
  absl::StatusOr<ModelConfig> q = ParseModelConfig(n, "next_minimal");
  ASSERT_TRUE(q.ok()) << q.status();
  EXPECT_EQ(q->head_dim, 256);
  EXPECT_EQ(q->num_experts, 512);
  EXPECT_EQ(q->shared_expert_intermediate_size, 512);
  EXPECT_DOUBLE_EQ(q->partial_rotary_factor, 0.25);
  EXPECT_EQ(CountLayers(*q, LayerType::kFullAttention), 2);  // interval 4 by default

  json v = Minimal("deepseek_v3");
  absl::StatusOr<ModelConfig> d = ParseModelConfig(v, "v3_minimal");
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ(d->q_lora_rank, 1536);  // absent key: transformers' default
  EXPECT_EQ(d->kv_lora_rank, 512);
  EXPECT_EQ(d->n_group, 8);
  v["q_lora_rank"] = nullptr;  // explicit null: no query compression
  d = ParseModelConfig(v, "v3_minimal");
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_FALSE(d->q_lora_rank.has_value());
}

TEST(ModelConfigTest, FullAttentionIntervalAndLayerTypes) {
  json j = Minimal("qwen3_next");
  j["num_hidden_layers"] = 6;
  j["full_attention_interval"] = 2;
  absl::StatusOr<ModelConfig> c = ParseModelConfig(j, "interval");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->GetLayerType(0), LayerType::kLinearAttention);
  EXPECT_EQ(c->GetLayerType(1), LayerType::kFullAttention);
  EXPECT_EQ(c->GetLayerType(5), LayerType::kFullAttention);
  // An explicit layer_types list wins over the interval.
  j["layer_types"] = {"full_attention",   "full_attention",   "linear_attention",
                      "linear_attention", "linear_attention", "full_attention"};
  c = ParseModelConfig(j, "types");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->GetLayerType(0), LayerType::kFullAttention);
  EXPECT_EQ(c->GetLayerType(1), LayerType::kFullAttention);
  EXPECT_EQ(c->GetLayerType(2), LayerType::kLinearAttention);
}

TEST(ModelConfigTest, QwenMoeLayerRule) {
  json j = Minimal("qwen3_moe");
  j["num_hidden_layers"] = 6;
  j["decoder_sparse_step"] = 2;
  j["mlp_only_layers"] = {3};
  absl::StatusOr<ModelConfig> c = ParseModelConfig(j, "sparse_step");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_FALSE(c->IsMoeLayer(0));
  EXPECT_TRUE(c->IsMoeLayer(1));
  EXPECT_FALSE(c->IsMoeLayer(2));
  EXPECT_FALSE(c->IsMoeLayer(3));  // in mlp_only_layers
  EXPECT_TRUE(c->IsMoeLayer(5));
  j["num_experts"] = 0;
  c = ParseModelConfig(j, "dense");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(CountMoeLayers(*c), 0);
}

TEST(ModelConfigTest, DeepSeekMoeLayerFreq) {
  json j = Minimal("deepseek_v2");
  j["num_hidden_layers"] = 8;
  j["first_k_dense_replace"] = 2;
  j["moe_layer_freq"] = 3;
  absl::StatusOr<ModelConfig> c = ParseModelConfig(j, "freq");
  ASSERT_TRUE(c.ok()) << c.status();
  for (int i = 0; i < 8; ++i) EXPECT_EQ(c->IsMoeLayer(i), i == 3 || i == 6) << i;
  j["n_routed_experts"] = nullptr;
  c = ParseModelConfig(j, "dense");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->num_experts, 0);
  EXPECT_EQ(CountMoeLayers(*c), 0);
}

TEST(ModelConfigTest, TextConfigOverridesTopLevel) {
  json inner = Minimal("qwen3_moe");
  json j = {{"model_type", "some_wrapper"},
            {"vocab_size", 5},
            {"tie_word_embeddings", true},
            {"text_config", inner}};
  absl::StatusOr<ModelConfig> c = ParseModelConfig(j, "wrapper");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->architecture, Architecture::kQwen3Moe);
  EXPECT_EQ(c->vocab_size, 1000);          // from text_config
  EXPECT_TRUE(c->tie_word_embeddings);     // only at the top level
  EXPECT_TRUE(c->raw.contains("text_config"));
}

TEST(ModelConfigTest, UnknownModelTypeListsSupportedOnes) {
  json j = Minimal("llama");
  j["architectures"] = {"LlamaForCausalLM"};
  absl::StatusOr<ModelConfig> c = ParseModelConfig(j, "llama/config.json");
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument);
  const std::string message(c.status().message());
  EXPECT_THAT(message, HasSubstr("llama/config.json"));
  EXPECT_THAT(message, HasSubstr("\"llama\""));
  for (const char* name : {"qwen3_moe", "qwen3_next", "deepseek_v2", "deepseek_v3", "glm4_moe"}) {
    EXPECT_THAT(message, HasSubstr(name));
  }
}

TEST(ModelConfigTest, WrongTypeNamesFieldAndFile) {
  json j = ReadJson("qwen3_235b_a22b.json");
  j["hidden_size"] = "abc";
  absl::StatusOr<ModelConfig> c = ParseModelConfig(j, "/models/q/config.json");
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(c.status().message(), HasSubstr("/models/q/config.json"));
  EXPECT_THAT(c.status().message(), HasSubstr("'hidden_size' must be an integer"));
  EXPECT_THAT(c.status().message(), HasSubstr("\"abc\""));

  for (auto [key, value] : {std::pair<const char*, json>{"eos_token_id", "x"},
                            {"norm_topk_prob", 1},
                            {"rope_theta", "big"},
                            {"mlp_only_layers", "none"},
                            {"architectures", 3},
                            {"rope_scaling", 2.0}}) {
    json bad = ReadJson("qwen3_235b_a22b.json");
    bad[key] = value;
    c = ParseModelConfig(bad, "bad.json");
    ASSERT_FALSE(c.ok()) << key;
    EXPECT_THAT(c.status().message(), HasSubstr(absl::StrCat("'", key, "'"))) << key;
  }
  json not_utf8 = ReadJson("qwen3_235b_a22b.json");
  not_utf8["hidden_size"] = "\xff\xfe";  // must not throw while rendering the message
  c = ParseModelConfig(not_utf8, "bytes.json");
  ASSERT_FALSE(c.ok());
  EXPECT_THAT(c.status().message(), HasSubstr("'hidden_size'"));

  json nested = ReadJson("deepseek_v3.json");
  nested["rope_scaling"]["factor"] = "forty";
  c = ParseModelConfig(nested, "v3.json");
  ASSERT_FALSE(c.ok());
  EXPECT_THAT(c.status().message(), HasSubstr("'rope_scaling.factor' must be a number"));
}

TEST(ModelConfigTest, MissingRequiredField) {
  json j = ReadJson("deepseek_v3.json");
  j.erase("num_hidden_layers");
  absl::StatusOr<ModelConfig> c = ParseModelConfig(j, "v3.json");
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(c.status().message(), HasSubstr("v3.json"));
  EXPECT_THAT(c.status().message(), HasSubstr("missing required field 'num_hidden_layers'"));

  json v2 = Minimal("deepseek_v2");  // MoE layers but no top-k: transformers has no default
  v2.erase("num_experts_per_tok");
  c = ParseModelConfig(v2, "v2.json");
  ASSERT_FALSE(c.ok());
  EXPECT_THAT(c.status().message(), HasSubstr("'num_experts_per_tok'"));
}

TEST(ModelConfigTest, BadValues) {
  const std::pair<const char*, json> cases[] = {
      {"num_hidden_layers", 0},
      {"num_hidden_layers", int64_t{1} << 40},
      {"num_key_value_heads", 3},  // does not divide 8 heads
      {"layer_types", json::array({"full_attention"})},
      {"rope_scaling", json{{"rope_type", "llama3"}, {"factor", 8.0}}},
      {"rope_scaling", json{{"factor", 8.0}}},
      {"rope_parameters", json{{"rope_type", "yarn"}, {"rope_theta", 1e6}}},  // no factor
      {"text_config", json::array()},
  };
  for (const auto& [key, value] : cases) {
    json j = Minimal("qwen3_next");
    j[key] = value;
    absl::StatusOr<ModelConfig> c = ParseModelConfig(j, "bad.json");
    ASSERT_FALSE(c.ok()) << key << " = " << value.dump();
    EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(c.status().message(), HasSubstr(key)) << c.status();
  }
  absl::StatusOr<ModelConfig> c = ParseModelConfig(json::array({1, 2}), "array.json");
  ASSERT_FALSE(c.ok());
  EXPECT_THAT(c.status().message(), HasSubstr("array.json"));
}

TEST(ModelConfigTest, MissingFileNamesPath) {
  const std::string path = ConfigPath("no_such_model/config.json");
  absl::StatusOr<ModelConfig> c = LoadModelConfig(path);
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(c.status().message(), HasSubstr(path));
}

TEST(ModelConfigTest, InvalidJsonNamesPath) {
  const std::string path = (std::filesystem::path(testing::TempDir()) / "broken.json").string();
  std::ofstream(path) << "{\"model_type\": \"qwen3_moe\",\n \"hidden_size\": 4096,,}";
  absl::StatusOr<ModelConfig> c = LoadModelConfig(path);
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(c.status().message(), HasSubstr(path));
  EXPECT_THAT(c.status().message(), HasSubstr("not valid JSON at byte"));
}

}  // namespace
}  // namespace krasis

namespace krasis {
namespace {

// transformers >= 5 writes Qwen3-MoE's expert count as "num_local_experts"
// (the demo model, saved by transformers 5.17, is such a file).
TEST(ModelConfigTest, Transformers5NumLocalExperts) {
  auto c = LoadModelConfig(std::string(KRASIS_TEST_DATA_DIR) + "/../../models/demo/config.json");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->architecture, Architecture::kQwen3Moe);
  EXPECT_EQ(c->num_experts, 8);
  EXPECT_EQ(c->num_experts_per_tok, 2);
  EXPECT_TRUE(c->IsMoeLayer(0));
}

}  // namespace
}  // namespace krasis
