// The decode engine over the fixture models: greedy output equal to transformers',
// concurrent requests (continuous batching) equal to solo runs, prefix-cache
// reuse (including the hybrid Qwen3-Next with linear-state snapshots) giving the
// same output while skipping cached tokens, cancellation, finish reasons, seeds,
// and clean errors for bad requests.
#include "services/decode/decode_engine.h"

#include <gtest/gtest.h>

#include <condition_variable>
#include <filesystem>
#include <fstream>
#include <mutex>

#include <nlohmann/json.hpp>

namespace krasis {
namespace {

std::string Fixture(const std::string& arch) {
  return std::string(KRASIS_TEST_DATA_DIR) + "/models/" + arch;
}

// Collects one request's events.
struct Collector {
  std::mutex mu;
  std::condition_variable cv;
  std::vector<GenerationEvent> events;
  bool done = false;
  EventSink Sink() {
    return [this](const GenerationEvent& e) {
      std::lock_guard<std::mutex> lock(mu);
      events.push_back(e);
      if (e.final) done = true;
      cv.notify_all();
    };
  }
  void Wait() {
    std::unique_lock<std::mutex> lock(mu);
    ASSERT_TRUE(cv.wait_for(lock, std::chrono::seconds(60), [&] { return done; })) << "no final event";
  }
  std::vector<int32_t> Tokens() {
    std::vector<int32_t> t;
    for (auto& e : events)
      if (!e.final) t.push_back(e.token);
    return t;
  }
  const GenerationEvent& Final() { return events.back(); }
};

std::unique_ptr<DecodeEngine> MakeEngine(const std::string& arch, int64_t block_size = 4,
                                         int64_t budget = 64 << 20) {
  auto model = LoadModel(Fixture(arch));
  EXPECT_TRUE(model.ok()) << model.status();
  EngineOptions options;
  options.kv.block_size = block_size;
  options.kv.budget_bytes = budget;
  options.prefill_chunk = 7;  // several chunks per prompt
  std::vector<int32_t> eos;
  for (int64_t e : (*model)->config().eos_token_ids) eos.push_back(static_cast<int32_t>(e));
  return std::make_unique<DecodeEngine>(std::move(*model), options, eos);
}

GenerationRequest Greedy(const std::string& id, std::vector<int32_t> prompt, int max_tokens) {
  GenerationRequest r;
  r.id = id;
  r.prompt = std::move(prompt);
  r.sampling.temperature = 0.0f;
  r.max_tokens = max_tokens;
  r.ignore_eos = true;
  return r;
}

nlohmann::json Reference(const std::string& arch) {
  std::ifstream in(Fixture(arch) + "/reference.json");
  return nlohmann::json::parse(in);
}

// A model whose every layer is linear attention keeps nothing in KV blocks
// (bytes per block 0): the engine still sizes its bookkeeping sanely and serves.
TEST(DecodeEngineTest, LinearAttentionOnlyModelServes) {
  const std::filesystem::path dir = std::filesystem::path(::testing::TempDir()) / "linear_only";
  std::filesystem::create_directories(dir);
  nlohmann::json config = nlohmann::json::parse(std::ifstream(Fixture("qwen3_next") + "/config.json"));
  config["num_hidden_layers"] = 1;
  config["layer_types"] = {"linear_attention"};
  std::ofstream(dir / "config.json") << config.dump();
  std::filesystem::copy_file(Fixture("qwen3_next") + "/model.safetensors", dir / "model.safetensors",
                             std::filesystem::copy_options::overwrite_existing);
  auto model = LoadModel(dir.string());
  ASSERT_TRUE(model.ok()) << model.status();
  EngineOptions options;
  options.kv.budget_bytes = int64_t{1} << 30;
  DecodeEngine engine(std::move(*model), options, {});
  Collector c;
  ASSERT_TRUE(engine.Submit(Greedy("a", {1, 5, 9}, 6), c.Sink()).ok());
  c.Wait();
  EXPECT_EQ(c.Tokens().size(), 6u);
  EXPECT_TRUE(c.Final().error.ok()) << c.Final().error;
  EXPECT_EQ(c.Final().finish_reason, FinishReason::kLength);
}

class DecodeEngineArchTest : public ::testing::TestWithParam<std::string> {};

TEST_P(DecodeEngineArchTest, GreedyMatchesTransformers) {
  auto engine = MakeEngine(GetParam());
  auto ref = Reference(GetParam());
  Collector c;
  ASSERT_TRUE(engine->Submit(Greedy("a", ref["prompt_ids"].get<std::vector<int32_t>>(), 24), c.Sink()).ok());
  c.Wait();
  EXPECT_EQ(c.Tokens(), ref["greedy"].get<std::vector<int32_t>>());
  EXPECT_EQ(c.Final().finish_reason, FinishReason::kLength);
  EXPECT_EQ(c.Final().usage.completion_tokens, 24);
  EXPECT_EQ(c.Final().usage.prompt_tokens, static_cast<int64_t>(ref["prompt_ids"].size()));
}

TEST_P(DecodeEngineArchTest, ConcurrentRequestsEqualSoloRuns) {
  auto ref = Reference(GetParam());
  auto long_prompt = ref["long_prompt_ids"].get<std::vector<int32_t>>();
  std::vector<std::vector<int32_t>> prompts;
  for (size_t len : {3u, 9u, 21u, 40u, 64u}) prompts.emplace_back(long_prompt.begin(), long_prompt.begin() + len);
  std::vector<std::vector<int32_t>> solo;
  for (size_t i = 0; i < prompts.size(); ++i) {
    auto engine = MakeEngine(GetParam());
    Collector c;
    ASSERT_TRUE(engine->Submit(Greedy("s", prompts[i], 10), c.Sink()).ok());
    c.Wait();
    solo.push_back(c.Tokens());
  }
  auto engine = MakeEngine(GetParam());
  std::vector<Collector> cs(prompts.size());
  for (size_t i = 0; i < prompts.size(); ++i) {
    ASSERT_TRUE(engine->Submit(Greedy("r" + std::to_string(i), prompts[i], 10), cs[i].Sink()).ok());
  }
  bool batched = false;
  for (size_t i = 0; i < prompts.size(); ++i) {
    cs[i].Wait();
    EXPECT_EQ(cs[i].Tokens(), solo[i]) << "request " << i;
    for (auto& e : cs[i].events) batched |= e.batch_size > 1;
  }
  EXPECT_TRUE(batched) << "requests never shared a step";
}

TEST_P(DecodeEngineArchTest, FollowUpReusesCachedPrefix) {
  auto ref = Reference(GetParam());
  auto prompt = ref["long_prompt_ids"].get<std::vector<int32_t>>();
  std::vector<int32_t> first(prompt.begin(), prompt.begin() + 30);
  auto engine = MakeEngine(GetParam());
  Collector a;
  ASSERT_TRUE(engine->Submit(Greedy("turn1", first, 12), a.Sink()).ok());
  a.Wait();
  // The follow-up turn: the first prompt, the answer, then new tokens.
  std::vector<int32_t> follow = first;
  for (int32_t t : a.Tokens()) follow.push_back(t);
  follow.insert(follow.end(), prompt.begin() + 30, prompt.begin() + 50);
  EXPECT_GE(engine->LookupPrefix(follow), 28);
  Collector b;
  ASSERT_TRUE(engine->Submit(Greedy("turn2", follow, 8), b.Sink()).ok());
  b.Wait();
  EXPECT_GE(b.Final().usage.cached_tokens, 28) << "the follow-up re-read the whole history";
  // Same answer as an engine that has nothing cached.
  auto cold = MakeEngine(GetParam());
  Collector c;
  ASSERT_TRUE(cold->Submit(Greedy("cold", follow, 8), c.Sink()).ok());
  c.Wait();
  EXPECT_EQ(c.Final().usage.cached_tokens, 0);
  EXPECT_EQ(b.Tokens(), c.Tokens());
  EngineStats s = engine->Stats();
  EXPECT_GE(s.prefix_hit_tokens, 28);
  EXPECT_EQ(s.requests_finished, 2);
}

INSTANTIATE_TEST_SUITE_P(Fixtures, DecodeEngineArchTest,
                         ::testing::Values("qwen3_moe", "qwen3_next", "deepseek_v3"),
                         [](const ::testing::TestParamInfo<std::string>& info) { return info.param; });

TEST(DecodeEngineTest, CancelEndsTheStream) {
  auto engine = MakeEngine("qwen3_moe");
  Collector c;
  ASSERT_TRUE(engine->Submit(Greedy("long", {5, 6, 7}, 200), c.Sink()).ok());
  {
    std::unique_lock<std::mutex> lock(c.mu);
    c.cv.wait(lock, [&] { return !c.events.empty(); });
  }
  EXPECT_TRUE(engine->Cancel("long"));
  c.Wait();
  EXPECT_EQ(c.Final().finish_reason, FinishReason::kCancelled);
  EXPECT_LT(c.Tokens().size(), 200u);
  EXPECT_FALSE(engine->Cancel("long"));
  EXPECT_FALSE(engine->Cancel("never-existed"));
}

TEST(DecodeEngineTest, StopTokensMinTokensAndEos) {
  auto engine = MakeEngine("qwen3_moe");
  auto ref = Reference("qwen3_moe");
  auto prompt = ref["prompt_ids"].get<std::vector<int32_t>>();
  auto greedy = ref["greedy"].get<std::vector<int32_t>>();
  // Stop on the 5th greedy token: output ends with it, reason stop.
  GenerationRequest r = Greedy("stop", prompt, 24);
  r.stop_token_ids = {greedy[4]};
  size_t first = std::find(greedy.begin(), greedy.end(), greedy[4]) - greedy.begin();
  Collector c;
  ASSERT_TRUE(engine->Submit(r, c.Sink()).ok());
  c.Wait();
  EXPECT_EQ(c.Final().finish_reason, FinishReason::kStop);
  ASSERT_TRUE(c.Final().stop_token_id.has_value());
  EXPECT_EQ(*c.Final().stop_token_id, greedy[4]);
  EXPECT_EQ(c.Tokens().size(), first + 1);
  // With min_tokens past it, the stop token is banned until then.
  r.id = "min";
  r.min_tokens = static_cast<int32_t>(first) + 3;
  Collector m;
  ASSERT_TRUE(engine->Submit(r, m.Sink()).ok());
  m.Wait();
  auto t = m.Tokens();
  for (size_t i = 0; i + 1 < t.size() && i < static_cast<size_t>(r.min_tokens); ++i) EXPECT_NE(t[i], greedy[4]);
  EXPECT_GE(t.size(), static_cast<size_t>(r.min_tokens));
}

TEST(DecodeEngineTest, SeedsReproduce) {
  auto engine = MakeEngine("glm4_moe");
  auto run = [&](const std::string& id, uint64_t seed) {
    GenerationRequest r = Greedy(id, {10, 20, 30, 40}, 16);
    r.sampling.temperature = 1.0f;
    r.sampling.seed = seed;
    Collector c;
    EXPECT_TRUE(engine->Submit(r, c.Sink()).ok());
    c.Wait();
    return c.Tokens();
  };
  EXPECT_EQ(run("a", 7), run("b", 7));
  EXPECT_NE(run("c", 7), run("d", 8));
}

TEST(DecodeEngineTest, BadRequestsAreRejected) {
  auto engine = MakeEngine("qwen3_moe", 4, 1 << 16);
  Collector c;
  EXPECT_EQ(engine->Submit(Greedy("x", {}, 4), c.Sink()).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(engine->Submit(Greedy("x", {1, 100000}, 4), c.Sink()).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(engine->Submit(Greedy("", {1}, 4), c.Sink()).code(), absl::StatusCode::kInvalidArgument);
  GenerationRequest bad = Greedy("x", {1, 2}, 4);
  bad.sampling.top_p = 0.0f;
  EXPECT_EQ(engine->Submit(bad, c.Sink()).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(engine->Submit(Greedy("x", std::vector<int32_t>(256, 1), 4), c.Sink()).code(),
            absl::StatusCode::kInvalidArgument);  // >= the 256-token context
  EXPECT_EQ(engine->Submit(Greedy("x", std::vector<int32_t>(200, 1), 4), c.Sink()).code(),
            absl::StatusCode::kResourceExhausted);  // more than a 64 KiB cache holds
  Collector a, b;
  ASSERT_TRUE(engine->Submit(Greedy("dup", {1, 2, 3}, 50), a.Sink()).ok());
  EXPECT_EQ(engine->Submit(Greedy("dup", {1, 2, 3}, 5), b.Sink()).code(), absl::StatusCode::kAlreadyExists);
  a.Wait();
  EXPECT_TRUE(c.events.empty());
}

}  // namespace
}  // namespace krasis
