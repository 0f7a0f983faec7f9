// The conversion cache of quantized experts: built once and then mapped (same
// logits as quantizing in memory, files untouched on the next start); a stale
// (config changed), truncated or foreign file is rejected and rebuilt; leftovers
// of an interrupted build are removed and never used; the lock keeps builders
// apart and a dead owner's lock does not block.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "common/models/model.h"
#include "common/quant/expert_cache.h"

namespace krasis {
namespace {

namespace fs = std::filesystem;

class ExpertCacheTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = fs::path(::testing::TempDir()) / ("krasis-expert-cache-" + std::to_string(getpid()));
    fs::remove_all(root_);
    fs::create_directories(root_ / "models");
    fs::copy(std::string(KRASIS_TEST_DATA_DIR) + "/models/qwen3_moe", model_dir());
  }
  void TearDown() override { fs::remove_all(root_); }

  std::string model_dir() const { return (root_ / "models" / "qwen3_moe").string(); }
  std::string cache_root() const { return (root_ / "cache").string(); }

  // Last-position logits of a fixed prompt with int4 experts (from the cache
  // when `cached`).
  std::vector<float> Logits(bool cached, std::string* cache_dir = nullptr) {
    auto model = LoadModel(model_dir());
    EXPECT_TRUE(model.ok()) << model.status();
    ExpertOptions options;
    options.format = ExpertFormat::kInt4;
    if (cached) {
      auto o = CachedExpertOptions(model_dir(), cache_root(), ExpertFormat::kInt4, 128);
      EXPECT_TRUE(o.ok()) << o.status();
      options = *o;
      if (cache_dir != nullptr) *cache_dir = options.cache_dir;
    }
    absl::Status s = SetExpertFormat(**model, options);
    EXPECT_TRUE(s.ok()) << s;
    auto cache = (*model)->MakeCache(64, 16);
    SequenceState seq;
    (*model)->InitSequence(seq);
    std::vector<std::vector<float>> logits;
    BatchItem item{&seq, {1, 5, 9, 13, 200, 7}, false};
    EXPECT_TRUE((*model)->Forward(std::span(&item, 1), *cache, &logits).ok());
    return logits.at(0);
  }

  static std::vector<fs::path> LayerFiles(const std::string& dir) {
    std::vector<fs::path> files;
    for (const auto& e : fs::directory_iterator(dir)) {
      if (e.path().extension() == ".kxq") files.push_back(e.path());
    }
    std::sort(files.begin(), files.end());
    return files;
  }

  fs::path root_;
};

TEST_F(ExpertCacheTest, BuiltOnceThenMappedWithTheSameResults) {
  const std::vector<float> in_memory = Logits(false);
  std::string dir;
  const std::vector<float> first = Logits(true, &dir);
  EXPECT_EQ(first, in_memory) << "the cache must hold exactly the in-memory quantization";
  auto files = LayerFiles(dir);
  auto config = LoadModelConfig(model_dir());
  ASSERT_TRUE(config.ok());
  size_t moe_layers = 0;
  for (int l = 0; l < config->num_hidden_layers; ++l) moe_layers += config->IsMoeLayer(l) ? 1 : 0;
  EXPECT_EQ(files.size(), moe_layers);
  std::vector<fs::file_time_type> times;
  for (const auto& f : files) times.push_back(fs::last_write_time(f));
  EXPECT_EQ(Logits(true), in_memory);
  for (size_t i = 0; i < files.size(); ++i) EXPECT_EQ(fs::last_write_time(files[i]), times[i]) << files[i];
}

TEST_F(ExpertCacheTest, StaleTruncatedAndForeignFilesAreRebuilt) {
  std::string dir;
  const std::vector<float> reference = Logits(true, &dir);
  auto files = LayerFiles(dir);
  ASSERT_GE(files.size(), 3u);
  // Truncated and foreign files.
  fs::resize_file(files[0], fs::file_size(files[0]) / 2);
  {
    std::ofstream out(files[1], std::ios::binary | std::ios::trunc);
    out << std::string(8192, 'x');
  }
  // Leftover of an interrupted build.
  const fs::path leftover = fs::path(dir) / (files[2].filename().string() + ".tmp.999999");
  { std::ofstream(leftover) << "partial"; }
  EXPECT_EQ(Logits(true), reference);
  EXPECT_FALSE(fs::exists(leftover));
  // A changed config.json makes every file stale: rebuilt, same results (the
  // change is only whitespace).
  auto old_time = fs::last_write_time(files[2]);
  { std::ofstream(fs::path(model_dir()) / "config.json", std::ios::app) << "\n"; }
  EXPECT_EQ(Logits(true), reference);
  EXPECT_NE(fs::last_write_time(files[2]), old_time) << "stale file was not rebuilt";
}

TEST_F(ExpertCacheTest, OpenRejectsWithReasons) {
  std::string dir;
  Logits(true, &dir);
  const fs::path file = LayerFiles(dir).at(0);
  auto fp = quant::SourceFingerprint(model_dir());
  ASSERT_TRUE(fp.ok());
  auto config = LoadModelConfig(model_dir());
  quant::ExpertLayerShape shape{quant::QuantFormat::kInt4, 128, config->hidden_size, config->moe_intermediate_size,
                                config->num_experts, *fp};
  EXPECT_TRUE(quant::MappedExpertLayer::Open(file.string(), shape).ok());
  auto other = shape;
  other.fingerprint ^= 1;
  auto r = quant::MappedExpertLayer::Open(file.string(), other);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_NE(std::string(r.status().message()).find("stale"), std::string::npos) << r.status();
  other = shape;
  other.format = quant::QuantFormat::kInt8;
  EXPECT_EQ(quant::MappedExpertLayer::Open(file.string(), other).status().code(), absl::StatusCode::kDataLoss);
  EXPECT_EQ(quant::MappedExpertLayer::Open((root_ / "nope.kxq").string(), shape).status().code(),
            absl::StatusCode::kNotFound);
}

TEST(CacheLockTest, ExclusiveAndReleasedWhenTheOwnerDies) {
  const std::string dir = ::testing::TempDir() + "krasis-lock-" + std::to_string(getpid());
  {
    auto first = quant::CacheLock::Acquire(dir, 1.0);
    ASSERT_TRUE(first.ok()) << first.status();
    auto second = quant::CacheLock::Acquire(dir, 0.2);
    EXPECT_EQ(second.status().code(), absl::StatusCode::kDeadlineExceeded);
    EXPECT_NE(std::string(second.status().message()).find(std::to_string(getpid())), std::string::npos)
        << second.status();
  }
  // A child takes the lock and dies without releasing it.
  pid_t child = fork();
  if (child == 0) {
    auto lock = quant::CacheLock::Acquire(dir, 1.0);
    _exit(lock.ok() ? 0 : 1);
  }
  int status = 0;
  waitpid(child, &status, 0);
  ASSERT_EQ(WEXITSTATUS(status), 0);
  EXPECT_TRUE(quant::CacheLock::Acquire(dir, 1.0).ok());
  fs::remove_all(dir);
}

}  // namespace
}  // namespace krasis
