// Routed experts taken from a GGUF file instead of the safetensors: a GGUF
// written here holds the fixture's experts (merged ffn_*_exps tensors) as F32,
// which carries the BF16 weights exactly, so quantizing from it gives exactly the
// logits of quantizing from the safetensors; as Q8_0 (lossy) the logits stay
// close but differ; a file whose experts have the wrong shape is refused with a
// message naming the tensor.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>

#include "common/dtype.h"
#include "common/models/model.h"
#include "common/safetensors.h"
#include "common/status.h"
#include "tests/common/gguf_test_util.h"

namespace krasis {
namespace {

namespace fs = std::filesystem;
using namespace krasis::gguf_test;

const std::string kFixture = std::string(KRASIS_TEST_DATA_DIR) + "/models/qwen3_moe";

void PutF32(Bytes& out, float v) {
  uint32_t bits;
  std::memcpy(&bits, &v, 4);
  PutLE(out, bits, 4);
}

// The fixture's experts as one GGUF, each matrix stored as `type` (kTF32 or kTQ8_0).
// `transpose_down` stores down_proj with the wrong shape.
std::string WriteGguf(uint32_t type, bool wrong_shape = false) {
  auto config = LoadModelConfig(kFixture);
  auto st = SafetensorsModel::Open(kFixture);
  EXPECT_TRUE(config.ok() && st.ok());
  GgufBuilder b;
  b.Kv("general.architecture", Str("qwen3moe"));
  const int64_t E = config->num_experts;
  for (int64_t l = 0; l < config->num_hidden_layers; ++l) {
    if (!config->IsMoeLayer(static_cast<int>(l))) continue;
    for (const char* proj : {"gate", "up", "down"}) {
      Bytes data;
      int64_t rows = 0, cols = 0;
      for (int64_t e = 0; e < E; ++e) {
        auto t = (*st)->GetTensor(StrCat("model.layers.", l, ".mlp.experts.", e, ".", proj, "_proj.weight"));
        EXPECT_TRUE(t.ok());
        std::vector<float> w = ToFloatVector(*t);
        rows = t->dim(0);
        cols = t->dim(1);
        if (type == kTF32) {
          for (float v : w) PutF32(data, v);
        } else {
          for (size_t blk = 0; blk < w.size(); blk += 32) {
            float amax = 0;
            for (size_t j = 0; j < 32; ++j) amax = std::max(amax, std::fabs(w[blk + j]));
            const float d = amax / 127.0f;
            int8_t q[32];
            for (size_t j = 0; j < 32; ++j) q[j] = static_cast<int8_t>(d > 0 ? std::lrint(w[blk + j] / d) : 0);
            PackQ8_0(data, FloatToF16(d), q);
          }
        }
      }
      if (wrong_shape && std::string(proj) == "down") std::swap(rows, cols);
      b.Tensor(TensorSpec(StrCat("blk.", l, ".ffn_", proj, "_exps.weight"), type,
                          {static_cast<uint64_t>(cols), static_cast<uint64_t>(rows), static_cast<uint64_t>(E)},
                          std::move(data)));
    }
  }
  const std::string path = ::testing::TempDir() + "experts-" + std::to_string(type) + (wrong_shape ? "-bad" : "") +
                           "-" + std::to_string(getpid()) + ".gguf";
  Bytes bytes = b.Build();
  std::ofstream(path, std::ios::binary).write(reinterpret_cast<const char*>(bytes.data()),
                                              static_cast<std::streamsize>(bytes.size()));
  return path;
}

std::vector<float> Logits(const std::string& gguf_path) {
  auto model = LoadModel(kFixture);
  EXPECT_TRUE(model.ok());
  auto options = CachedExpertOptions(kFixture, "", ExpertFormat::kInt8, 128, gguf_path);
  EXPECT_TRUE(options.ok()) << options.status();
  options->cache_dir.clear();  // quantize in memory
  absl::Status s = SetExpertFormat(**model, *options);
  EXPECT_TRUE(s.ok()) << s;
  auto cache = (*model)->MakeCache(64, 16);
  SequenceState seq;
  (*model)->InitSequence(seq);
  std::vector<std::vector<float>> logits;
  BatchItem item{&seq, {1, 5, 9, 13, 200, 7}, false};
  EXPECT_TRUE((*model)->Forward(std::span(&item, 1), *cache, &logits).ok());
  return logits.empty() ? std::vector<float>{} : logits[0];
}

TEST(GgufExpertsModelTest, F32GgufGivesTheSafetensorsResultExactly) {
  const std::string path = WriteGguf(kTF32);
  EXPECT_EQ(Logits(path), Logits(""));
  fs::remove(path);
}

TEST(GgufExpertsModelTest, Q8GgufIsCloseButNotIdentical) {
  const std::string path = WriteGguf(kTQ8_0);
  auto a = Logits(path), b = Logits("");
  ASSERT_EQ(a.size(), b.size());
  double num = 0, den = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    num += (a[i] - b[i]) * double(a[i] - b[i]);
    den += double(b[i]) * b[i];
  }
  EXPECT_GT(num, 0.0);
  EXPECT_LT(std::sqrt(num / den), 0.05);
  fs::remove(path);
}

TEST(GgufExpertsModelTest, WrongShapesAreNamed) {
  const std::string path = WriteGguf(kTF32, /*wrong_shape=*/true);
  auto model = LoadModel(kFixture);
  ASSERT_TRUE(model.ok());
  auto options = CachedExpertOptions(kFixture, "", ExpertFormat::kInt8, 128, path);
  ASSERT_TRUE(options.ok());
  options->cache_dir.clear();
  absl::Status s = SetExpertFormat(**model, *options);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(std::string(s.message()).find("ffn_down_exps"), std::string::npos) << s;
  fs::remove(path);
}

}  // namespace
}  // namespace krasis
