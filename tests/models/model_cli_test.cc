// krasis-cli logits end to end (greedy output equal to transformers' for every
// fixture architecture), and bad model directories: an unsupported architecture,
// a missing tensor, a tensor of the wrong shape -- each a clear error naming the
// culprit and a non-zero exit from krasis-cli.
#include <gtest/gtest.h>

#include <array>
#include <cstdio>
#include <filesystem>
#include <cmath>
#include <fstream>

#include <nlohmann/json.hpp>

#include "common/models/model.h"
#include "common/safetensors.h"

namespace krasis {
namespace {

namespace fs = std::filesystem;

std::string Fixture(const std::string& arch) {
  return std::string(KRASIS_TEST_DATA_DIR) + "/models/" + arch;
}

// Runs a shell command; returns {exit code, stdout+stderr}.
std::pair<int, std::string> RunCommand(const std::string& command) {
  std::string out;
  FILE* pipe = popen((command + " 2>&1").c_str(), "r");
  std::array<char, 4096> buf;
  size_t n;
  while ((n = fread(buf.data(), 1, buf.size(), pipe)) > 0) out.append(buf.data(), n);
  int status = pclose(pipe);
  return {WEXITSTATUS(status), out};
}

std::string Cli() { return std::string(KRASIS_BINARY_DIR) + "/bin/krasis-cli"; }

class ModelCliTest : public ::testing::TestWithParam<std::string> {};

TEST_P(ModelCliTest, GreedyMatchesTransformers) {
  std::ifstream in(Fixture(GetParam()) + "/reference.json");
  auto ref = nlohmann::json::parse(in);
  std::string tokens;
  for (int t : ref["prompt_ids"]) tokens += (tokens.empty() ? "" : ",") + std::to_string(t);
  auto [code, out] = RunCommand(Cli() + " logits --model " + Fixture(GetParam()) + " --tokens " + tokens +
                         " --greedy 24 --json");
  ASSERT_EQ(code, 0) << out;
  auto j = nlohmann::json::parse(out);
  EXPECT_EQ(j["greedy"], ref["greedy"]);
  EXPECT_EQ(j["argmax"], ref["argmax"]);
  EXPECT_EQ(j["last_logits"].size(), ref["last_logits"].size());
}

INSTANTIATE_TEST_SUITE_P(AllArchitectures, ModelCliTest,
                         ::testing::Values("qwen3_moe", "qwen3_next", "deepseek_v2", "deepseek_v3",
                                           "glm4_moe"),
                         [](const ::testing::TestParamInfo<std::string>& info) { return info.param; });

// A copy of a fixture in a temp dir whose tensors can be edited.
class BrokenModel {
 public:
  explicit BrokenModel(const std::string& arch) {
    dir_ = fs::path(::testing::TempDir()) / ("broken-" + arch + "-" + std::to_string(getpid()));
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    fs::copy_file(Fixture(arch) + "/config.json", dir_ / "config.json");
  }
  ~BrokenModel() { fs::remove_all(dir_); }
  // Writes model.safetensors from the fixture, dropping `drop` and giving
  // `reshape` the shape `shape`.
  void WriteTensors(const std::string& arch, const std::string& drop, const std::string& reshape,
                    const Shape& shape) {
    auto file = SafetensorsFile::Open(Fixture(arch) + "/model.safetensors");
    ASSERT_TRUE(file.ok()) << file.status();
    std::vector<std::pair<std::string, TensorView>> tensors;
    for (const auto& info : (*file)->tensors()) {
      if (info.name == drop) continue;
      TensorView v = *(*file)->GetTensor(info.name);
      if (info.name == reshape) {
        v.shape = shape;  // same bytes, another shape
      }
      tensors.emplace_back(info.name, v);
    }
    ASSERT_TRUE(WriteSafetensors((dir_ / "model.safetensors").string(), tensors).ok());
  }
  void EditConfig(const std::string& key, const nlohmann::json& value) {
    std::ifstream in(dir_ / "config.json");
    auto j = nlohmann::json::parse(in);
    j[key] = value;
    std::ofstream(dir_ / "config.json") << j.dump();
  }
  std::string path() const { return dir_.string(); }

 private:
  fs::path dir_;
};

TEST(ModelErrorsTest, UnsupportedArchitecture) {
  BrokenModel m("qwen3_moe");
  m.WriteTensors("qwen3_moe", "", "", {});
  m.EditConfig("model_type", "llama");
  auto model = LoadModel(m.path());
  ASSERT_FALSE(model.ok());
  EXPECT_NE(model.status().message().find("llama"), std::string::npos) << model.status();
  EXPECT_NE(model.status().message().find("qwen3_moe"), std::string::npos) << model.status();
  auto [code, out] = RunCommand(Cli() + " logits --model " + m.path() + " --tokens 1,2");
  EXPECT_EQ(code, 1);
  EXPECT_NE(out.find("supported"), std::string::npos) << out;
}

TEST(ModelErrorsTest, MissingTensorIsNamed) {
  const std::string name = "model.layers.1.mlp.experts.3.up_proj.weight";
  BrokenModel m("deepseek_v3");
  m.WriteTensors("deepseek_v3", name, "", {});
  auto model = LoadModel(m.path());
  ASSERT_FALSE(model.ok());
  EXPECT_EQ(model.status().code(), absl::StatusCode::kNotFound);
  EXPECT_NE(model.status().message().find(name), std::string::npos) << model.status();
  EXPECT_NE(model.status().message().find(m.path()), std::string::npos) << model.status();
  auto [code, out] = RunCommand(Cli() + " logits --model " + m.path() + " --tokens 1,2");
  EXPECT_EQ(code, 1);
  EXPECT_NE(out.find(name), std::string::npos) << out;
}

TEST(ModelErrorsTest, WrongShapeIsNamedWithItsFile) {
  const std::string name = "model.layers.0.linear_attn.in_proj_qkvz.weight";
  BrokenModel m("qwen3_next");
  m.WriteTensors("qwen3_next", "", name, {64, 192});
  auto model = LoadModel(m.path());
  ASSERT_FALSE(model.ok());
  EXPECT_NE(model.status().message().find("in_proj_qkvz"), std::string::npos) << model.status();
  EXPECT_NE(model.status().message().find("model.safetensors"), std::string::npos) << model.status();
  EXPECT_NE(model.status().message().find("[64, 192]"), std::string::npos) << model.status();
  auto [code, out] = RunCommand(Cli() + " logits --model " + m.path() + " --tokens 1,2");
  EXPECT_EQ(code, 1);
}

TEST(ModelErrorsTest, CliRejectsBadArguments) {
  EXPECT_EQ(RunCommand(Cli() + " logits --model " + Fixture("qwen3_moe") + " --tokens 1,x").first, 2);
  EXPECT_EQ(RunCommand(Cli() + " logits --tokens 1,2").first, 2);
  EXPECT_EQ(RunCommand(Cli() + " logits --model /nonexistent --tokens 1").first, 1);
  EXPECT_EQ(RunCommand(Cli() + " logits --model " + Fixture("qwen3_moe") + " --tokens 1,99999").first, 1);
  EXPECT_EQ(RunCommand(Cli() + " frobnicate").first, 2);
  auto [code, out] = RunCommand(Cli() + " logits --model " + Fixture("qwen3_moe") + " --tokens 1 --experts int3");
  EXPECT_EQ(code, 2);
  EXPECT_NE(out.find("int3"), std::string::npos) << out;
}

// --experts: bf16 is the reference exactly; int8 and int4 run the quantized
// experts and stay close to it.
TEST(ModelCliExpertsTest, ExpertFormats) {
  std::ifstream in(Fixture("deepseek_v2") + "/reference.json");
  auto ref = nlohmann::json::parse(in);
  std::string tokens;
  for (int t : ref["prompt_ids"]) tokens += (tokens.empty() ? "" : ",") + std::to_string(t);
  const std::string cache = ::testing::TempDir() + "krasis-cli-cache-" + std::to_string(getpid());
  auto run = [&](const std::string& experts, const std::string& cache_dir = "none") {
    auto [code, out] = RunCommand(Cli() + " logits --model " + Fixture("deepseek_v2") + " --tokens " + tokens +
                                  " --greedy 4 --json --experts " + experts + " --cache-dir " + cache_dir);
    EXPECT_EQ(code, 0) << out;
    return nlohmann::json::parse(out, nullptr, false);
  };
  auto bf16 = run("bf16");
  std::vector<int> want = ref["greedy"].get<std::vector<int>>();
  want.resize(4);
  EXPECT_EQ(bf16["greedy"].get<std::vector<int>>(), want);
  auto ref_logits = bf16["last_logits"].get<std::vector<float>>();
  for (const char* f : {"int8", "int4"}) {
    auto q = run(f)["last_logits"].get<std::vector<float>>();
    ASSERT_EQ(q.size(), ref_logits.size());
    double num = 0, den = 0;
    for (size_t i = 0; i < q.size(); ++i) {
      num += (q[i] - ref_logits[i]) * double(q[i] - ref_logits[i]);
      den += double(ref_logits[i]) * ref_logits[i];
    }
    const double rel = std::sqrt(num / den);
    EXPECT_GT(rel, 0.0) << f << ": quantized experts must change the logits a little";
    // (Random fixture weights are sensitive: INT4's ~10% weight error moves
    // these logits by ~20%.)
    EXPECT_LT(rel, std::string(f) == "int8" ? 0.02 : 0.4) << f;
    // Built into the cache, then read back from it: the same logits.
    EXPECT_EQ(run(f, cache)["last_logits"].get<std::vector<float>>(), q) << f;
    EXPECT_EQ(run(f, cache)["last_logits"].get<std::vector<float>>(), q) << f;
  }
  EXPECT_TRUE(std::filesystem::exists(cache + "/deepseek_v2/experts-int4g128"));
  std::filesystem::remove_all(cache);
}

}  // namespace
}  // namespace krasis

namespace krasis {
namespace {

// The built-in demo model (models/demo, trained by tools/train_demo_model.py):
// the engine's greedy continuation equals transformers'.
TEST(DemoModelTest, GreedyMatchesTransformers) {
  std::string dir = std::string(KRASIS_TEST_DATA_DIR) + "/../../models/demo";
  std::ifstream in(dir + "/reference.json");
  auto ref = nlohmann::json::parse(in);
  std::string tokens;
  for (int t : ref["prompt_ids"]) tokens += (tokens.empty() ? "" : ",") + std::to_string(t);
  auto [code, out] = RunCommand(Cli() + " logits --model " + dir + " --tokens " + tokens +
                                " --greedy " + std::to_string(ref["greedy"].size()) + " --json");
  ASSERT_EQ(code, 0) << out;
  EXPECT_EQ(nlohmann::json::parse(out)["greedy"], ref["greedy"]);
}

}  // namespace
}  // namespace krasis
