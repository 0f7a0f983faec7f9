// ModelRegistry over temporary models dirs built from the committed fixtures:
// discovery (nested ids, explicit --model dirs), summaries and parameter counts
// checked against counts computed independently from the safetensors header,
// cheap rescans, and every validation error with a message naming the problem.
#include "services/loader/model_registry.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <functional>

#include "common/safetensors.h"
#include "tests/loader/loader_test_util.h"

namespace krasis {
namespace {

using ::testing::HasSubstr;
using namespace krasis::testing_util;

RegistryOptions OptionsFor(const fs::path& models_dir) {
  RegistryOptions options;
  options.models_dir = models_dir.string();
  options.cache_dir = (models_dir / ".cache").string();
  options.recheck_interval = absl::ZeroDuration();  // see every change at once
  return options;
}

TEST(ModelRegistryTest, ListsEveryFixtureWithIndependentlyCheckedCounts) {
  TempDir tmp;
  for (const std::string& arch : FixtureArchs()) CopyFixture(arch, tmp.path() / arch);
  ModelRegistry registry(OptionsFor(tmp.path()));
  auto models = registry.List(true);
  ASSERT_EQ(models.size(), FixtureArchs().size());
  for (size_t i = 0; i < models.size(); ++i) {
    const ModelRecord& m = *models[i];
    const std::string& arch = FixtureArchs()[i];  // both sorted
    SCOPED_TRACE(arch);
    ASSERT_TRUE(m.ok()) << m.status;
    EXPECT_EQ(m.id, arch);
    EXPECT_EQ(m.path, (tmp.path() / arch).string());
    auto config = nlohmann::json::parse(ReadText(tmp.path() / arch / "config.json"));
    EXPECT_EQ(m.architecture, config["architectures"][0].get<std::string>());
    EXPECT_EQ(m.model_type, arch);
    EXPECT_EQ(m.num_layers, config["num_hidden_layers"].get<int64_t>());
    EXPECT_EQ(m.experts_per_token, config["num_experts_per_tok"].get<int64_t>());
    EXPECT_EQ(m.context_length, config["max_position_embeddings"].get<int64_t>());
    ExpectedCounts want = IndependentCounts(tmp.path() / arch);
    EXPECT_EQ(m.total_params, want.total);
    EXPECT_EQ(m.active_params, want.active);
    EXPECT_LT(m.active_params, m.total_params);
    EXPECT_GT(want.routed, 0);
    EXPECT_EQ(static_cast<int64_t>(m.tensors.size()), want.num_tensors);
    EXPECT_EQ(m.size_bytes, fs::file_size(tmp.path() / arch / "model.safetensors"));
    ASSERT_EQ(m.weight_files.size(), 1u);
    EXPECT_EQ(m.weight_files[0].file, "model.safetensors");
    // config, generation config, tokenizer.json, tokenizer_config.json
    EXPECT_EQ(m.tokenizer_files.size(), 4u);
    EXPECT_EQ(m.expert_dtype, DType::kBF16);
    EXPECT_EQ(m.dense_dtype, DType::kBF16);
    EXPECT_FALSE(m.generation_config_json.empty());
    // Routed-expert tensors carry layer and expert; shared experts are not routed.
    for (const ModelTensor& t : m.tensors) {
      bool routed = t.name.find(".mlp.experts.") != std::string::npos;
      EXPECT_EQ(t.routed_expert, routed) << t.name;
      EXPECT_EQ(t.expert.has_value(), routed) << t.name;
      if (t.name.starts_with("model.layers.")) {
        EXPECT_TRUE(t.layer.has_value()) << t.name;
      }
    }
  }
  const ModelTensor* t = models[0]->FindTensor("model.layers.2.mlp.experts.5.up_proj.weight");
  ASSERT_NE(t, nullptr);
  EXPECT_EQ(t->layer, 2);
  EXPECT_EQ(t->expert, 5);
}

TEST(ModelRegistryTest, OffsetsPointAtTheTensorsBytes) {
  TempDir tmp;
  CopyFixture("qwen3_next", tmp.path() / "m");
  ModelRegistry registry(OptionsFor(tmp.path()));
  auto m = registry.FindValid("m");
  ASSERT_TRUE(m.ok()) << m.status();
  auto file = SafetensorsFile::Open((tmp.path() / "m" / "model.safetensors").string());
  ASSERT_TRUE(file.ok()) << file.status();
  for (const TensorInfo& info : (*file)->tensors()) {
    const ModelTensor* t = (*m)->FindTensor(info.name);
    ASSERT_NE(t, nullptr) << info.name;
    auto bytes = (*file)->Bytes(info);
    ASSERT_EQ(t->byte_length, bytes.size());
    EXPECT_EQ(ReadRange(t->path, t->offset, t->byte_length),
              std::string(reinterpret_cast<const char*>(bytes.data()), bytes.size()))
        << info.name;
  }
}

TEST(ModelRegistryTest, NestedIdsExplicitDirsAndNotFound) {
  TempDir tmp;
  CopyFixture("glm4_moe", tmp.path() / "models" / "zai-org" / "GLM-tiny");
  CopyFixture("qwen3_moe", tmp.path() / "elsewhere" / "Qwen-tiny");
  fs::create_directories(tmp.path() / "models" / ".hidden" / "x");
  RegistryOptions options = OptionsFor(tmp.path() / "models");
  options.model_dirs = {(tmp.path() / "elsewhere" / "Qwen-tiny/").string(),
                        // Also under the models dir: listed once.
                        (tmp.path() / "models" / "zai-org" / "GLM-tiny").string()};
  ModelRegistry registry(options);
  auto models = registry.List(false);
  ASSERT_EQ(models.size(), 2u);
  EXPECT_EQ(models[0]->path, (tmp.path() / "models" / "zai-org" / "GLM-tiny").string());
  EXPECT_EQ(models[0]->id, "GLM-tiny");  // explicit: the folder name
  EXPECT_EQ(models[1]->id, "Qwen-tiny");
  EXPECT_TRUE(registry.FindValid("GLM-tiny").ok());
  EXPECT_EQ(registry.Find("nope").status().code(), absl::StatusCode::kNotFound);

  // A model added later is found without an explicit rescan.
  CopyFixture("deepseek_v2", tmp.path() / "models" / "late");
  EXPECT_TRUE(registry.FindValid("late").ok());
  // A removed one is gone.
  fs::remove_all(tmp.path() / "models" / "late");
  EXPECT_EQ(registry.Find("late").status().code(), absl::StatusCode::kNotFound);
}

TEST(ModelRegistryTest, RescanOnlyReinspectsChangedModels) {
  TempDir tmp;
  CopyFixture("qwen3_moe", tmp.path() / "a");
  CopyFixture("deepseek_v3", tmp.path() / "b");
  ModelRegistry registry(OptionsFor(tmp.path()));
  registry.List(true);
  EXPECT_EQ(registry.inspections(), 2);
  registry.List(true);
  ASSERT_TRUE(registry.FindValid("a").ok());
  EXPECT_EQ(registry.inspections(), 2);
  // Breaking b's tokenizer is noticed by the next lookup.
  fs::remove(tmp.path() / "b" / "tokenizer.json");
  auto b = registry.Find("b");
  ASSERT_TRUE(b.ok());
  EXPECT_FALSE((*b)->ok());
  EXPECT_EQ(registry.inspections(), 3);
  EXPECT_EQ(registry.FindValid("b").status().code(), absl::StatusCode::kFailedPrecondition);

  // With a recheck interval, lookups within it trust the last check; a rescan
  // always looks.
  RegistryOptions lazy = OptionsFor(tmp.path());
  lazy.recheck_interval = absl::Hours(1);
  ModelRegistry lazy_registry(lazy);
  ASSERT_TRUE(lazy_registry.FindValid("a").ok());
  fs::remove(tmp.path() / "a" / "tokenizer.json");
  EXPECT_TRUE(lazy_registry.FindValid("a").ok());
  lazy_registry.List(/*rescan=*/true);
  EXPECT_EQ(lazy_registry.FindValid("a").status().code(), absl::StatusCode::kFailedPrecondition);
}

// --- validation errors ----------------------------------------------------------

class ValidationTest : public ::testing::Test {
 protected:
  void SetUp() override { CopyFixture("qwen3_moe", dir()); }
  fs::path dir() const { return tmp_.path() / "bad"; }
  // The status of the model after inspection; also checks FindValid refuses it.
  absl::Status Inspect() {
    ModelRegistry registry(OptionsFor(tmp_.path()));
    auto models = registry.List(true);
    EXPECT_EQ(models.size(), 1u);
    if (models.empty()) return absl::UnknownError("no model");
    auto valid = registry.FindValid("bad");
    if (!models[0]->ok()) {
      EXPECT_EQ(valid.status().code(), absl::StatusCode::kFailedPrecondition);
      EXPECT_THAT(std::string(valid.status().message()),
                  HasSubstr(std::string(models[0]->status.message())));
    }
    return models[0]->status;
  }
  void EditConfig(const std::function<void(nlohmann::json&)>& edit) {
    auto config = nlohmann::json::parse(ReadText(dir() / "config.json"));
    edit(config);
    WriteText(dir() / "config.json", config.dump(2));
  }
  TempDir tmp_;
};

TEST_F(ValidationTest, FixtureIsValid) { EXPECT_TRUE(Inspect().ok()); }

TEST_F(ValidationTest, MissingConfig) {
  fs::remove(dir() / "config.json");
  absl::Status s = Inspect();
  EXPECT_EQ(s.code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(s.message()), HasSubstr("missing config.json"));
  EXPECT_THAT(std::string(s.message()), HasSubstr((dir() / "config.json").string()));
}

TEST_F(ValidationTest, UnknownArchitectureListsSupportedOnes) {
  EditConfig([](nlohmann::json& c) {
    c["model_type"] = "llama";
    c["architectures"] = {"LlamaForCausalLM"};
  });
  absl::Status s = Inspect();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(s.message()), HasSubstr("llama"));
  for (const char* arch : {"qwen3_moe", "qwen3_next", "deepseek_v2", "deepseek_v3", "glm4_moe"}) {
    EXPECT_THAT(std::string(s.message()), HasSubstr(arch));
  }
  // The summary still shows what the config says.
  ModelRegistry registry(OptionsFor(tmp_.path()));
  auto m = registry.Find("bad");
  ASSERT_TRUE(m.ok());
  EXPECT_EQ((*m)->architecture, "LlamaForCausalLM");
  EXPECT_EQ((*m)->model_type, "llama");
}

TEST_F(ValidationTest, MissingTokenizer) {
  fs::remove(dir() / "tokenizer.json");
  absl::Status s = Inspect();
  EXPECT_EQ(s.code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(s.message()), HasSubstr("missing tokenizer"));
  EXPECT_THAT(std::string(s.message()), HasSubstr("tokenizer.json"));
}

TEST_F(ValidationTest, TruncatedFile) {
  fs::resize_file(dir() / "model.safetensors", fs::file_size(dir() / "model.safetensors") - 100);
  absl::Status s = Inspect();
  EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(std::string(s.message()), HasSubstr("model.safetensors"));
}

TEST_F(ValidationTest, NoWeights) {
  fs::remove(dir() / "model.safetensors");
  absl::Status s = Inspect();
  EXPECT_EQ(s.code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(s.message()), HasSubstr("no .safetensors files"));
}

TEST_F(ValidationTest, EmbeddingDoesNotMatchConfig) {
  EditConfig([](nlohmann::json& c) { c["vocab_size"] = 1024; });
  absl::Status s = Inspect();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(s.message()), HasSubstr("model.embed_tokens.weight"));
  EXPECT_THAT(std::string(s.message()), HasSubstr("[512, 64]"));
  EXPECT_THAT(std::string(s.message()), HasSubstr("[1024, 64]"));
}

TEST_F(ValidationTest, MissingLayer) {
  EditConfig([](nlohmann::json& c) { c["num_hidden_layers"] = 5; });
  absl::Status s = Inspect();
  EXPECT_EQ(s.code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(s.message()), HasSubstr("no tensors of layer 4"));
}

TEST_F(ValidationTest, RouterDoesNotMatchExpertCount) {
  EditConfig([](nlohmann::json& c) { c["num_experts"] = 16; });
  absl::Status s = Inspect();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(s.message()), HasSubstr("mlp.gate.weight"));
}

// Rewrites the fixture as two shards plus model.safetensors.index.json.
void Shard(const fs::path& dir) {
  auto model = SafetensorsFile::Open((dir / "model.safetensors").string());
  ASSERT_TRUE(model.ok()) << model.status();
  std::vector<std::pair<std::string, TensorView>> parts[2];
  nlohmann::json weight_map = nlohmann::json::object();
  for (const TensorInfo& info : (*model)->tensors()) {
    int shard =
        info.name.find("layers.") != std::string::npos && info.name < "model.layers.2" ? 0 : 1;
    parts[shard].emplace_back(info.name, (*model)->View(info));
    weight_map[info.name] =
        shard == 0 ? "model-00001-of-00002.safetensors" : "model-00002-of-00002.safetensors";
  }
  ASSERT_TRUE(WriteSafetensors((dir / "model-00001-of-00002.safetensors").string(), parts[0]).ok());
  ASSERT_TRUE(WriteSafetensors((dir / "model-00002-of-00002.safetensors").string(), parts[1]).ok());
  model->reset();
  fs::remove(dir / "model.safetensors");
  WriteText(
      dir / "model.safetensors.index.json",
      nlohmann::json{{"metadata", nlohmann::json::object()}, {"weight_map", weight_map}}.dump());
}

TEST_F(ValidationTest, ShardedCheckpointAndMissingShard) {
  ExpectedCounts want = IndependentCounts(dir());
  Shard(dir());
  {
    ModelRegistry registry(OptionsFor(tmp_.path()));
    auto m = registry.FindValid("bad");
    ASSERT_TRUE(m.ok()) << m.status();
    EXPECT_EQ((*m)->total_params, want.total);
    EXPECT_EQ((*m)->active_params, want.active);
    ASSERT_EQ((*m)->weight_files.size(), 2u);
    EXPECT_EQ((*m)->weight_files[1].file, "model-00002-of-00002.safetensors");
    EXPECT_EQ((*m)->size_bytes,
              (*m)->weight_files[0].size_bytes + (*m)->weight_files[1].size_bytes);
    const ModelTensor* t = (*m)->FindTensor("model.norm.weight");
    ASSERT_NE(t, nullptr);
    EXPECT_EQ(t->file, "model-00002-of-00002.safetensors");
  }
  fs::remove(dir() / "model-00002-of-00002.safetensors");
  absl::Status s = Inspect();
  EXPECT_EQ(s.code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(s.message()), HasSubstr("model-00002-of-00002.safetensors"));
  EXPECT_THAT(std::string(s.message()), HasSubstr("missing"));
}

TEST(CountParamsTest, ActiveIsDensePlusTopKShareOfRoutedExperts) {
  std::vector<ModelTensor> tensors(3);
  tensors[0].shape = {100, 10};  // dense: 1000
  tensors[1].shape = {8, 50};    // routed: 400 (8 experts)
  tensors[1].routed_expert = true;
  tensors[2].shape = {8, 25};  // routed: 200
  tensors[2].routed_expert = true;
  ParamCounts c = CountParams(tensors, 8, 2);
  EXPECT_EQ(c.total, 1600);
  EXPECT_EQ(c.routed_experts, 600);
  EXPECT_EQ(c.active, 1000 + 600 * 2 / 8);
  EXPECT_EQ(CountParams(tensors, 0, 0).active, 1600);  // dense model: no routing
}

}  // namespace
}  // namespace krasis
