// The prefill engine's answer to running out of (GPU) memory: a chunk that
// fails with kResourceExhausted before any of its rows went out is redone in
// halves, and the result equals an undisturbed run; when even the smallest
// chunk fails, the prefill fails with that status instead of crashing or
// hanging. A wrapper around the CPU backend plays the GPU that runs out.
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <map>

#include <nlohmann/json.hpp>

#include "services/prefill/prefill_engine.h"

namespace krasis {
namespace {

std::string Fixture(const std::string& arch) { return std::string(KRASIS_TEST_DATA_DIR) + "/models/" + arch; }

// The CPU backend, except that chunks longer than `limit` tokens run out of memory.
class SmallMemoryBackend final : public PrefillBackend {
 public:
  SmallMemoryBackend(const DecoderModel& model, int64_t limit, std::vector<int64_t>* sizes, int64_t forward_scale = 1)
      : cpu_(MakeCpuPrefillBackend(model)), limit_(limit), sizes_(sizes), forward_scale_(forward_scale) {}
  std::string name() const override { return "small-memory"; }
  // (A pipeline over several cards asks for longer Forwards this way.)
  int64_t ForwardTokens(int64_t chunk_tokens) const override { return chunk_tokens * forward_scale_; }
  absl::Status Forward(std::span<const int32_t> tokens, SequenceState& seq, PagedKvCache& cache,
                       std::vector<float>* logits, bool all_positions,
                       const std::function<void(int)>& on_layer_done) override {
    sizes_->push_back(static_cast<int64_t>(tokens.size()));
    if (static_cast<int64_t>(tokens.size()) > limit_) return absl::ResourceExhaustedError("out of memory (test)");
    return cpu_->Forward(tokens, seq, cache, logits, all_positions, on_layer_done);
  }

 private:
  std::unique_ptr<PrefillBackend> cpu_;
  int64_t limit_;
  std::vector<int64_t>* sizes_;
  int64_t forward_scale_;
};

// Rows per (layer, first token) and the result of a prefill of `prompt`.
struct Captured {
  std::map<std::pair<int, int64_t>, std::vector<float>> rows;
  absl::StatusOr<PrefillResult> result;
};

Captured Prefill(PrefillEngine& engine, const std::vector<int32_t>& prompt, int64_t chunk) {
  Captured c;
  KvOutput out{[&](int layer, int64_t first, int64_t count, std::span<const float> rows) {
                 for (int64_t t = 0; t < count; ++t) {
                   const size_t f = rows.size() / static_cast<size_t>(count);
                   c.rows[{layer, first + t}].assign(rows.begin() + t * f, rows.begin() + (t + 1) * f);
                 }
                 return absl::OkStatus();
               },
               [](int, const LinearState&) { return absl::OkStatus(); }};
  c.result = engine.Run(prompt, engine.EmptyPrefix(), out, chunk, 4);
  return c;
}

TEST(PrefillRetryTest, OutOfMemoryChunksAreRedoneSmallerWithTheSameResult) {
  std::ifstream in(Fixture("qwen3_moe") + "/reference.json");
  const auto prompt = nlohmann::json::parse(in)["long_prompt_ids"].get<std::vector<int32_t>>();
  PrefillEngine plain(*LoadModel(Fixture("qwen3_moe")));
  Captured want = Prefill(plain, prompt, 32);
  ASSERT_TRUE(want.result.ok()) << want.result.status();

  auto model = *LoadModel(Fixture("qwen3_moe"));
  std::vector<int64_t> sizes;
  auto backend = std::make_unique<SmallMemoryBackend>(*model, 8, &sizes);
  PrefillEngine small(std::move(model), DType::kBF16, std::move(backend));
  Captured got = Prefill(small, prompt, 32);
  ASSERT_TRUE(got.result.ok()) << got.result.status();
  // 32 fails, 16 fails, then chunks of 8.
  ASSERT_GE(sizes.size(), 3u);
  EXPECT_EQ(sizes[0], 32);
  EXPECT_EQ(sizes[1], 16);
  EXPECT_EQ(sizes[2], 8);
  EXPECT_EQ(got.result->smaller_chunk_retries, 2);
  EXPECT_EQ(got.result->computed_tokens, static_cast<int64_t>(prompt.size()));
  // Chunk sizes only regroup independent per-token work: equal to fp32 rounding.
  auto close = [](const std::vector<float>& a, const std::vector<float>& b) {
    if (a.size() != b.size()) return false;
    for (size_t i = 0; i < a.size(); ++i) {
      if (std::abs(a[i] - b[i]) > 1e-5f * (1.0f + std::abs(b[i]))) return false;
    }
    return true;
  };
  EXPECT_TRUE(close(got.result->last_logits, want.result->last_logits));
  ASSERT_EQ(got.rows.size(), want.rows.size());
  for (const auto& [key, row] : want.rows) {
    ASSERT_TRUE(got.rows.count(key)) << "layer " << key.first << " token " << key.second;
    EXPECT_TRUE(close(got.rows.at(key), row)) << "layer " << key.first << " token " << key.second;
  }
}

// The engine gives each Forward what the backend's ForwardTokens asks for
// (rounded down to whole blocks), and out-of-memory retries still halve from there.
TEST(PrefillRetryTest, ForwardsAreAsLongAsTheBackendAsks) {
  auto model = *LoadModel(Fixture("qwen3_moe"));
  std::vector<int64_t> sizes;
  auto backend = std::make_unique<SmallMemoryBackend>(*model, 1000, &sizes, 3);
  PrefillEngine engine(std::move(model), DType::kBF16, std::move(backend));
  std::vector<int32_t> prompt(50, 5);
  Captured got = Prefill(engine, prompt, 7);  // 21 tokens asked for: 20 in blocks of 4
  ASSERT_TRUE(got.result.ok()) << got.result.status();
  EXPECT_EQ(sizes, (std::vector<int64_t>{20, 20, 10}));

  auto small_model = *LoadModel(Fixture("qwen3_moe"));
  sizes.clear();
  auto small_backend = std::make_unique<SmallMemoryBackend>(*small_model, 8, &sizes, 3);
  PrefillEngine small(std::move(small_model), DType::kBF16, std::move(small_backend));
  got = Prefill(small, prompt, 7);
  ASSERT_TRUE(got.result.ok()) << got.result.status();
  ASSERT_GE(sizes.size(), 3u);
  EXPECT_EQ(sizes[0], 20);
  EXPECT_EQ(sizes[1], 8);  // 20 / 2 = 10, down to whole blocks
  EXPECT_EQ(got.result->computed_tokens, 50);
}

// A --cuda-split other than layers or experts is refused by name, whichever
// backend is asked for and whether or not a GPU is there.
TEST(PrefillBackendChoiceTest, ABadCudaSplitIsRefused) {
  auto model = *LoadModel(Fixture("qwen3_moe"));
  for (const char* backend : {"cpu", "auto", "cuda"}) {
    BackendChoice choice;
    choice.name = backend;
    choice.cuda_split = "diagonal";
    auto made = MakePrefillBackend(*model, choice);
    ASSERT_FALSE(made.ok()) << backend;
    EXPECT_EQ(made.status().code(), absl::StatusCode::kInvalidArgument) << backend;
    EXPECT_NE(made.status().message().find("--cuda-split diagonal"), std::string::npos) << made.status();
  }
  BackendChoice cpu;
  cpu.name = "cpu";
  for (const char* split : {"layers", "experts"}) {
    cpu.cuda_split = split;
    auto made = MakePrefillBackend(*model, cpu);
    ASSERT_TRUE(made.ok()) << made.status();
    EXPECT_EQ((*made)->name(), "cpu");
  }
}

TEST(PrefillRetryTest, WhenEvenTheSmallestChunkFailsThePrefillFails) {
  auto model = *LoadModel(Fixture("qwen3_moe"));
  std::vector<int64_t> sizes;
  auto backend = std::make_unique<SmallMemoryBackend>(*model, 2, &sizes);
  PrefillEngine engine(std::move(model), DType::kBF16, std::move(backend));
  std::vector<int32_t> prompt(40, 5);
  Captured got = Prefill(engine, prompt, 32);
  ASSERT_FALSE(got.result.ok());
  EXPECT_EQ(got.result.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(sizes.back(), 4);  // halved down to the alignment, no further
  EXPECT_TRUE(got.rows.empty());
}

}  // namespace
}  // namespace krasis
