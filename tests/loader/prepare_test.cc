// The loader engine below the registry: cache variants (keys, what needs a
// conversion), FileRange reads and ChecksumFile, and Prepare jobs (phases,
// pass-through with verify filling CRCs, INT4 decode experts built into the
// conversion cache, UNIMPLEMENTED for conversions not built yet,
// shared jobs).
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "services/loader/crc32c.h"
#include "services/loader/file_io.h"
#include "services/loader/model_registry.h"
#include "services/loader/prepare_job.h"
#include "services/loader/variant.h"
#include "tests/loader/loader_test_util.h"

namespace krasis {
namespace {

using ::testing::HasSubstr;
using namespace krasis::testing_util;

class EngineTest : public ::testing::Test {
 protected:
  void SetUp() override {
    CopyFixture("deepseek_v3", tmp_.path() / "ds3");
    RegistryOptions options;
    options.models_dir = tmp_.path().string();
    options.recheck_interval = absl::ZeroDuration();
    registry_ = std::make_unique<ModelRegistry>(options);
    auto m = registry_->FindValid("ds3");
    ASSERT_TRUE(m.ok()) << m.status();
    model_ = *m;
  }
  TempDir tmp_;
  std::unique_ptr<ModelRegistry> registry_;
  std::shared_ptr<const ModelRecord> model_;
};

TEST_F(EngineTest, VariantKeys) {
  EXPECT_EQ(PassThroughCacheKey(*model_), "bf16-bf16");
  auto pass = ResolveVariant(*model_, PassThroughSpec());
  ASSERT_TRUE(pass.ok());
  EXPECT_FALSE(pass->needs_conversion);
  VariantSpec bf16;
  bf16.decode_experts = WeightFormat::kBF16;  // the checkpoint's own format: pass-through
  EXPECT_EQ(ResolveVariant(*model_, bf16)->cache_key, "bf16-bf16");

  auto standard = ResolveVariant(*model_, VariantSpec{});  // INT4 g128 decode experts
  ASSERT_TRUE(standard.ok());
  EXPECT_EQ(standard->cache_key, "int4g128-bf16");
  EXPECT_TRUE(standard->needs_conversion);
  EXPECT_THAT(standard->conversion, HasSubstr("decode experts BF16 -> INT4_GROUP_SYM (group 128)"));

  VariantSpec mixed;
  mixed.decode_experts = WeightFormat::kInt8GroupSym;
  mixed.decode_group_size = 64;
  mixed.prefill_experts = WeightFormat::kInt4GroupSym;
  mixed.dense = WeightFormat::kF32;
  EXPECT_EQ(ResolveVariant(*model_, mixed)->cache_key, "int8g64-int4g128-densef32");

  VariantSpec bad;
  bad.decode_group_size = 100;
  EXPECT_EQ(ResolveVariant(*model_, bad).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(EngineTest, FileRangeReadsChunksWithCrcs) {
  const ModelTensor* t = model_->FindTensor("model.embed_tokens.weight");
  ASSERT_NE(t, nullptr);
  const std::string want = ReadRange(t->path, t->offset, t->byte_length);
  auto range = FileRange::Open(t->path, t->offset, t->byte_length, 100, 0);
  ASSERT_TRUE(range.ok()) << range.status();
  EXPECT_EQ(range->range_length(), t->byte_length - 100);
  std::string got;
  int chunks = 0;
  auto crc = range->Stream(5000, [&](uint64_t offset, std::span<const std::byte> data, uint32_t c) {
    EXPECT_EQ(offset, 100 + got.size());
    EXPECT_EQ(c, Crc32c(data));
    got.append(reinterpret_cast<const char*>(data.data()), data.size());
    ++chunks;
    return true;
  });
  ASSERT_TRUE(crc.ok()) << crc.status();
  EXPECT_EQ(got, want.substr(100));
  EXPECT_EQ(*crc, Crc32c(std::string_view(want).substr(100)));
  EXPECT_EQ(chunks, static_cast<int>((t->byte_length - 100 + 4999) / 5000));

  // A sink that stops cancels.
  EXPECT_EQ(range->Stream(5000, [](auto, auto, auto) { return false; }).status().code(),
            absl::StatusCode::kCancelled);
  // Ranges past the end.
  EXPECT_EQ(
      FileRange::Open(t->path, t->offset, t->byte_length, t->byte_length + 1, 0).status().code(),
      absl::StatusCode::kOutOfRange);
  EXPECT_EQ(FileRange::Open(t->path, t->offset, t->byte_length, 10, t->byte_length).status().code(),
            absl::StatusCode::kOutOfRange);
  EXPECT_TRUE(FileRange::Open(t->path, t->offset, t->byte_length, t->byte_length, 0).ok());
  // An object the file cannot hold (file shrank since indexing).
  EXPECT_EQ(FileRange::Open(t->path, model_->size_bytes, 10, 0, 0).status().code(),
            absl::StatusCode::kDataLoss);
}

TEST_F(EngineTest, ChecksumFileComputesFileAndSpanCrcs) {
  const ModelFile& f = model_->weight_files[0];
  const std::string bytes = ReadText(f.path);
  std::vector<FileSpan> spans = {{8, 100}, {5000, 0}, {5000, 300000}, {bytes.size() - 10, 10}};
  uint64_t last = 0;
  auto sums = ChecksumFile(f.path, spans, [&](uint64_t done, size_t) {
    EXPECT_GT(done, last);
    last = done;
    return true;
  });
  ASSERT_TRUE(sums.ok()) << sums.status();
  EXPECT_EQ(last, bytes.size());
  EXPECT_EQ(sums->file_crc32c, Crc32c(bytes));
  for (size_t i = 0; i < spans.size(); ++i) {
    EXPECT_EQ(sums->span_crc32c[i],
              Crc32c(std::string_view(bytes).substr(spans[i].offset, spans[i].length)));
  }
  EXPECT_EQ(ChecksumFile(f.path, {{10, 10}, {15, 10}}, nullptr).status().code(),
            absl::StatusCode::kInvalidArgument);
}

// Collects every state a job publishes until it finishes.
std::vector<PrepareState> Watch(const std::shared_ptr<PrepareJob>& job) {
  std::vector<PrepareState> states;
  uint64_t seen = 0;
  while (true) {
    for (const PrepareState& s : job->WaitForChange(seen, absl::Seconds(5))) {
      EXPECT_GE(s.version, seen);
      seen = s.version;
      states.push_back(s);
      if (s.finished()) return states;
    }
  }
}

TEST_F(EngineTest, PreparePassThroughWithVerifyFillsChecksums) {
  Preparer preparer(registry_.get());
  auto job = preparer.Start("ds3", PassThroughSpec(), /*verify=*/true);
  auto states = Watch(job);
  const PrepareState& last = states.back();
  ASSERT_EQ(last.phase, PreparePhase::kDone) << last.error;
  EXPECT_EQ(last.cache_key, "bf16-bf16");
  EXPECT_TRUE(last.already_prepared);
  std::vector<PreparePhase> phases;
  for (const auto& s : states) {
    if (phases.empty() || phases.back() != s.phase) phases.push_back(s.phase);
  }
  // Every phase is seen, however short.
  EXPECT_THAT(phases, ::testing::ElementsAre(PreparePhase::kQueued, PreparePhase::kValidating,
                                             PreparePhase::kVerifying, PreparePhase::kFinalizing,
                                             PreparePhase::kDone));
  // The last VERIFYING state seen is the phase's final progress.
  auto verifying = std::find_if(states.rbegin(), states.rend(), [](const PrepareState& s) {
    return s.phase == PreparePhase::kVerifying;
  });
  ASSERT_NE(verifying, states.rend());
  EXPECT_GT(verifying->bytes_total, model_->size_bytes);  // weights + tokenizer files
  EXPECT_EQ(verifying->bytes_done, verifying->bytes_total);
  EXPECT_EQ(verifying->tensors_done, verifying->tensors_total);

  auto m = registry_->FindValid("ds3");
  ASSERT_TRUE(m.ok());
  for (const ModelFile& f : (*m)->weight_files) {
    ASSERT_TRUE(f.crc32c.has_value()) << f.file;
    EXPECT_EQ(*f.crc32c, Crc32c(ReadText(f.path)));
  }
  for (const ModelFile& f : (*m)->tokenizer_files) EXPECT_TRUE(f.crc32c.has_value()) << f.file;
  for (const ModelTensor& t : (*m)->tensors) {
    ASSERT_TRUE(t.crc32c.has_value()) << t.name;
    EXPECT_EQ(*t.crc32c, Crc32c(ReadRange(t.path, t.offset, t.byte_length))) << t.name;
  }
}

TEST_F(EngineTest, PrepareFailures) {
  Preparer preparer(registry_.get());
  VariantSpec dense_f32;
  dense_f32.dense = WeightFormat::kF32;
  auto unsupported = Watch(preparer.Start("ds3", dense_f32, false)).back();
  EXPECT_EQ(unsupported.phase, PreparePhase::kFailed);
  EXPECT_EQ(unsupported.error.code(), absl::StatusCode::kUnimplemented);
  EXPECT_THAT(std::string(unsupported.error.message()), HasSubstr("dense"));
  EXPECT_THAT(std::string(unsupported.error.message()), HasSubstr("bf16-bf16"));

  auto unknown = Watch(preparer.Start("nope", PassThroughSpec(), false)).back();
  EXPECT_EQ(unknown.error.code(), absl::StatusCode::kNotFound);

  fs::remove(tmp_.path() / "ds3" / "tokenizer.json");
  auto invalid = Watch(preparer.Start("ds3", PassThroughSpec(), false)).back();
  EXPECT_EQ(invalid.error.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(invalid.error.message()), HasSubstr("tokenizer"));
}

// The standard variant (INT4 g128 decode experts) is built into the conversion
// cache: CONVERTING with one step per MoE layer, files in <cache>/<model>/...;
// a second Prepare finds them already there.
TEST_F(EngineTest, PrepareBuildsQuantizedExperts) {
  Preparer preparer(registry_.get());
  auto states = Watch(preparer.Start("ds3", VariantSpec{}, false));
  const PrepareState& done = states.back();
  ASSERT_EQ(done.phase, PreparePhase::kDone) << done.error;
  EXPECT_EQ(done.cache_key, "int4g128-bf16");
  EXPECT_FALSE(done.already_prepared);
  EXPECT_GT(done.bytes_written, 0u);
  bool converting = false;
  for (const auto& s : states) converting |= s.phase == PreparePhase::kConverting && s.tensors_total > 0;
  EXPECT_TRUE(converting);
  int files = 0;
  for (const auto& e : fs::directory_iterator(done.cache_dir)) files += e.path().extension() == ".kxq";
  EXPECT_GT(files, 0);
  auto again = Watch(preparer.Start("ds3", VariantSpec{}, false)).back();
  ASSERT_EQ(again.phase, PreparePhase::kDone) << again.error;
  EXPECT_TRUE(again.already_prepared);
  EXPECT_EQ(again.cache_dir, done.cache_dir);
}

// GPU experts of another quantized format (INT4 decode, INT8 prefill) build
// both formats' files; the result names the decode experts' directory.
TEST_F(EngineTest, PrepareBuildsTheGpuExpertFormatToo) {
  Preparer preparer(registry_.get());
  VariantSpec spec;
  spec.prefill_experts = WeightFormat::kInt8GroupSym;
  auto states = Watch(preparer.Start("ds3", spec, false));
  const PrepareState& done = states.back();
  ASSERT_EQ(done.phase, PreparePhase::kDone) << done.error;
  EXPECT_EQ(done.cache_key, "int4g128-int8g128");
  EXPECT_THAT(done.cache_dir, HasSubstr("experts-int4g128"));
  int64_t most = 0;
  for (const auto& s : states) most = std::max(most, s.tensors_total);
  auto count = [](const fs::path& dir) {
    int files = 0;
    for (const auto& e : fs::directory_iterator(dir)) files += e.path().extension() == ".kxq";
    return files;
  };
  const fs::path int8_dir = fs::path(done.cache_dir).parent_path() / "experts-int8g128";
  ASSERT_TRUE(fs::exists(int8_dir));
  EXPECT_GT(count(done.cache_dir), 0);
  EXPECT_EQ(count(int8_dir), count(done.cache_dir));
  EXPECT_EQ(most, 2 * count(int8_dir));  // progress over both builds
  auto again = Watch(preparer.Start("ds3", spec, false)).back();
  ASSERT_EQ(again.phase, PreparePhase::kDone) << again.error;
  EXPECT_TRUE(again.already_prepared);
}

TEST_F(EngineTest, ConcurrentCallersShareAJob) {
  Preparer preparer(registry_.get());
  auto a = preparer.Start("ds3", PassThroughSpec(), true);
  auto b = preparer.Start("ds3", PassThroughSpec(), true);
  if (!a->finished()) {  // unless the first one was already done
    EXPECT_EQ(a, b);
  }
  EXPECT_EQ(Watch(a).back().phase, PreparePhase::kDone);
  EXPECT_EQ(Watch(b).back().phase, PreparePhase::kDone);
}

}  // namespace
}  // namespace krasis
