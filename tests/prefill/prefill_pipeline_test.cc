// The prefill -> decode KV hand-off without the network: a PrefillEngine
// computes a prompt and its per-layer KV rows and linear-attention states go
// into a DecodeEngine's import, whose generation must equal the decode engine
// prefilling the prompt itself; and a follow-up turn whose cached prefix is
// exported from the decode worker, extended by the prefill engine and imported
// back, must equal a cold run.
#include <gtest/gtest.h>

#include <condition_variable>
#include <fstream>
#include <mutex>

#include <nlohmann/json.hpp>

#include "services/decode/decode_engine.h"
#include "services/prefill/prefill_engine.h"

namespace krasis {
namespace {

std::string Fixture(const std::string& arch) {
  return std::string(KRASIS_TEST_DATA_DIR) + "/models/" + arch;
}

std::vector<int32_t> Generate(DecodeEngine& engine, GenerationRequest r) {
  std::mutex mu;
  std::condition_variable cv;
  std::vector<int32_t> out;
  bool done = false;
  absl::Status s = engine.Submit(std::move(r), [&](const GenerationEvent& e) {
    std::lock_guard<std::mutex> lock(mu);
    if (!e.final) out.push_back(e.token);
    done |= e.final;
    cv.notify_all();
  });
  EXPECT_TRUE(s.ok()) << s;
  if (!s.ok()) return {};
  std::unique_lock<std::mutex> lock(mu);
  cv.wait_for(lock, std::chrono::seconds(60), [&] { return done; });
  return out;
}

GenerationRequest Greedy(const std::string& id, std::vector<int32_t> prompt, int n) {
  GenerationRequest r;
  r.id = id;
  r.prompt = std::move(prompt);
  r.sampling.temperature = 0.0f;
  r.max_tokens = n;
  r.ignore_eos = true;
  return r;
}

std::unique_ptr<DecodeEngine> Decode(const std::string& arch) {
  EngineOptions o;
  o.kv.block_size = 4;
  o.kv.budget_bytes = 32 << 20;
  return std::make_unique<DecodeEngine>(*LoadModel(Fixture(arch)), o, std::vector<int32_t>{});
}

// Output that sends the prefill engine's rows straight into `decode`'s import.
KvOutput IntoImport(DecodeEngine& decode, const std::string& id) {
  return KvOutput{
      [&decode, id](int layer, int64_t first, int64_t count, std::span<const float> rows) {
        return decode.ImportRows(id, layer, first, count, rows);
      },
      [&decode, id](int layer, const LinearState& state) { return decode.ImportLinearState(id, layer, state); }};
}

class PrefillPipelineTest : public ::testing::TestWithParam<std::string> {};

TEST_P(PrefillPipelineTest, ImportedPrefillEqualsLocalPrefill) {
  std::ifstream in(Fixture(GetParam()) + "/reference.json");
  auto ref = nlohmann::json::parse(in);
  auto prompt = ref["long_prompt_ids"].get<std::vector<int32_t>>();
  prompt.resize(45);
  auto local = Decode(GetParam());
  std::vector<int32_t> want = Generate(*local, Greedy("local", prompt, 10));

  PrefillEngine prefill(*LoadModel(Fixture(GetParam())));
  auto decode = Decode(GetParam());
  ASSERT_TRUE(decode->BeginImport("r1", prompt, 0).ok());
  auto result = prefill.Run(prompt, prefill.EmptyPrefix(), IntoImport(*decode, "r1"), 8, 4);
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->computed_tokens, 45);
  GenerationRequest early = Greedy("too-early", prompt, 10);
  early.kv_import_id = "r1";
  EXPECT_EQ(decode->Submit(early, [](const GenerationEvent&) {}).code(), absl::StatusCode::kFailedPrecondition);
  ASSERT_TRUE(decode->FinishImport("r1", result->last_logits).ok());
  GenerationRequest r = Greedy("gen", prompt, 10);
  r.kv_import_id = "r1";
  EXPECT_EQ(Generate(*decode, r), want);
  EXPECT_EQ(decode->Stats().imports, 1);
}

TEST_P(PrefillPipelineTest, FollowUpExtendsAnExportedPrefix) {
  std::ifstream in(Fixture(GetParam()) + "/reference.json");
  auto ref = nlohmann::json::parse(in);
  auto prompt = ref["long_prompt_ids"].get<std::vector<int32_t>>();
  std::vector<int32_t> first(prompt.begin(), prompt.begin() + 26);
  auto decode = Decode(GetParam());
  std::vector<int32_t> answer = Generate(*decode, Greedy("turn1", first, 6));
  std::vector<int32_t> follow = first;
  follow.insert(follow.end(), answer.begin(), answer.end());
  follow.insert(follow.end(), prompt.begin() + 26, prompt.begin() + 60);
  int64_t cached = decode->LookupPrefix(follow);
  ASSERT_GE(cached, 24);

  PrefillEngine prefill(*LoadModel(Fixture(GetParam())));
  PrefixKv prefix = prefill.EmptyPrefix();
  prefix.num_tokens = cached;
  ExportSink sink{
      [&](int layer, int64_t f, int64_t count, std::span<const float> rows) {
        EXPECT_EQ(f * prefill.LayerFloats(layer), static_cast<int64_t>(prefix.rows[layer].size()));
        prefix.rows[layer].insert(prefix.rows[layer].end(), rows.begin(), rows.begin() + count * prefill.LayerFloats(layer));
        return absl::OkStatus();
      },
      [&](int layer, const LinearState& state) {
        prefix.linear[layer] = state;
        return absl::OkStatus();
      }};
  ASSERT_TRUE(decode->ExportPrefix(follow, cached, sink).ok());
  ASSERT_TRUE(decode->BeginImport("turn2", follow, cached).ok());
  auto result = prefill.Run(follow, prefix, IntoImport(*decode, "turn2"), 8, 4);
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->computed_tokens, static_cast<int64_t>(follow.size()) - cached);
  ASSERT_TRUE(decode->FinishImport("turn2", result->last_logits).ok());
  GenerationRequest r = Greedy("gen2", follow, 8);
  r.kv_import_id = "turn2";
  std::vector<int32_t> got = Generate(*decode, r);
  auto cold = Decode(GetParam());
  EXPECT_EQ(got, Generate(*cold, Greedy("cold", follow, 8)));
}

TEST_P(PrefillPipelineTest, BadImportsAreRejected) {
  auto decode = Decode(GetParam());
  std::vector<int32_t> prompt = {5, 6, 7, 8, 9, 10};
  EXPECT_EQ(decode->BeginImport("x", prompt, 4).code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(decode->BeginImport("x", prompt, 3).code(), absl::StatusCode::kInvalidArgument);
  ASSERT_TRUE(decode->BeginImport("x", prompt, 0).ok());
  EXPECT_EQ(decode->BeginImport("x", prompt, 0).code(), absl::StatusCode::kAlreadyExists);
  int kv_layer = 0;
  while (decode->LayerFloats(kv_layer) == 0) ++kv_layer;
  std::vector<float> rows(static_cast<size_t>(2 * decode->LayerFloats(kv_layer)), 0.5f);
  EXPECT_EQ(decode->ImportRows("x", kv_layer, 5, 2, rows).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(decode->ImportRows("x", kv_layer, 0, 1, rows).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(decode->ImportRows("nope", kv_layer, 0, 2, rows).code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(decode->ImportRows("x", kv_layer, 0, 2, rows).ok());
  EXPECT_EQ(decode->FinishImport("x", {1.0f, 2.0f}).code(), absl::StatusCode::kInvalidArgument);
  decode->DropImport("x");
  EXPECT_EQ(decode->FinishImport("x", {}).code(), absl::StatusCode::kNotFound);
}

INSTANTIATE_TEST_SUITE_P(Fixtures, PrefillPipelineTest,
                         ::testing::Values("qwen3_moe", "qwen3_next", "deepseek_v3"),
                         [](const ::testing::TestParamInfo<std::string>& info) { return info.param; });

}  // namespace
}  // namespace krasis
