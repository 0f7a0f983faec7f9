// Quantized routed experts against the BF16 reference, for every fixture
// architecture and the trained demo model: the BF16 model writes a 64-token
// greedy continuation; the INT8 and INT4 models read the same sequence and the
// test counts the positions where their argmax is the BF16 model's next token
// (teacher-forced agreement). Targets: INT8 >= 95% everywhere; INT4 >= 85% on
// the demo model, which is trained. The fixtures are random-weight models whose
// top logits are nearly tied (INT8's 0.65% weight error already flips 2-5% of
// them), so INT4's ~10% error flips a quarter or more of their tokens whatever
// the 4-bit scheme; there INT4 must stay >= 50%, which a broken kernel cannot.
// Switching back to bf16 restores the exact reference.
#include <gtest/gtest.h>

#include <fstream>

#include <nlohmann/json.hpp>

#include "common/models/model.h"

namespace krasis {
namespace {

std::string ModelDir(const std::string& name) {
  if (name == "demo") return std::string(KRASIS_SOURCE_DIR) + "/models/demo";
  return std::string(KRASIS_TEST_DATA_DIR) + "/models/" + name;
}

std::vector<int32_t> Prompt(const std::string& name) {
  std::ifstream in(ModelDir(name) + "/reference.json");
  auto j = nlohmann::json::parse(in);
  return j["prompt_ids"].get<std::vector<int32_t>>();
}

int Argmax(const float* v, int64_t n) { return static_cast<int>(std::max_element(v, v + n) - v); }

// Greedy continuation of `prompt` by `model`, one token per Forward.
std::vector<int32_t> Greedy(const DecoderModel& model, const std::vector<int32_t>& prompt, int n) {
  auto cache = model.MakeCache(512, 16);
  SequenceState seq;
  model.InitSequence(seq);
  std::vector<int32_t> out, next = prompt;
  const int64_t vocab = model.config().vocab_size;
  for (int i = 0; i < n; ++i) {
    std::vector<std::vector<float>> logits;
    BatchItem item{&seq, next, false};
    EXPECT_TRUE(model.Forward(std::span(&item, 1), *cache, &logits).ok());
    out.push_back(Argmax(logits[0].data(), vocab));
    next = {out.back()};
  }
  return out;
}

// Argmax at every position of `tokens`.
std::vector<int32_t> Argmaxes(const DecoderModel& model, const std::vector<int32_t>& tokens) {
  auto cache = model.MakeCache(512, 16);
  SequenceState seq;
  model.InitSequence(seq);
  std::vector<std::vector<float>> logits;
  BatchItem item{&seq, tokens, true};
  EXPECT_TRUE(model.Forward(std::span(&item, 1), *cache, &logits).ok());
  const int64_t vocab = model.config().vocab_size;
  std::vector<int32_t> out;
  for (size_t p = 0; p < tokens.size(); ++p) out.push_back(Argmax(logits[0].data() + p * vocab, vocab));
  return out;
}

class QuantizedExpertsTest : public ::testing::TestWithParam<std::string> {
 protected:
  static constexpr int kTokens = 64;
  // Loads the model and its BF16 reference: the greedy continuation, the
  // sequence prompt + continuation, and the BF16 argmaxes over it.
  void SetUp() override {
    auto model = LoadModel(ModelDir(GetParam()));
    ASSERT_TRUE(model.ok()) << model.status();
    model_ = std::move(*model);
    prompt_ = Prompt(GetParam());
    reference_ = Greedy(*model_, prompt_, kTokens);
    sequence_ = prompt_;
    sequence_.insert(sequence_.end(), reference_.begin(), reference_.end() - 1);
    bf16_ = Argmaxes(*model_, sequence_);
  }
  // Positions where the current model's argmax is the BF16 next token.
  int Agreement() {
    const std::vector<int32_t> q = Argmaxes(*model_, sequence_);
    int agree = 0;
    for (int i = 0; i < kTokens; ++i) {
      agree += q[prompt_.size() - 1 + static_cast<size_t>(i)] == reference_[static_cast<size_t>(i)];
    }
    return agree;
  }
  std::unique_ptr<DecoderModel> model_;
  std::vector<int32_t> prompt_, reference_, sequence_, bf16_;
};

TEST_P(QuantizedExpertsTest, AgreesWithBf16) {
  const double int4_target = GetParam() == "demo" ? 0.85 : 0.50;
  for (auto [format, target] : {std::pair{ExpertFormat::kInt8, 0.95}, std::pair{ExpertFormat::kInt4, int4_target}}) {
    ExpertOptions options;
    options.format = format;
    ASSERT_TRUE(SetExpertFormat(*model_, options).ok());
    const int agree = Agreement();
    const std::vector<int32_t> free_run = Greedy(*model_, prompt_, kTokens);
    int prefix = 0;
    while (prefix < kTokens && free_run[static_cast<size_t>(prefix)] == reference_[static_cast<size_t>(prefix)]) ++prefix;
    const double rate = static_cast<double>(agree) / kTokens;
    std::printf("%-12s %s: %d/%d next tokens agree with bf16 (%.1f%%); free-running greedy equal for %d tokens\n",
                GetParam().c_str(), std::string(ExpertFormatName(format)).c_str(), agree, kTokens, 100 * rate,
                prefix);
    EXPECT_GE(rate, target) << ExpertFormatName(format);
  }
  // Back to the reference: exactly the BF16 argmaxes again.
  ASSERT_TRUE(SetExpertFormat(*model_, ExpertOptions{}).ok());
  EXPECT_EQ(Argmaxes(*model_, sequence_), bf16_);
}

// GQA projections, lm_head, dense MLPs and shared experts in INT8 (per
// component), on top of INT8 experts: still close to BF16 (teacher-forced
// agreement >= 95% on the trained demo model, >= 80% on the random fixtures);
// back to bf16 restores the exact reference.
TEST_P(QuantizedExpertsTest, NonExpertWeightsInInt8) {
  ExpertOptions experts;
  experts.format = ExpertFormat::kInt8;
  ASSERT_TRUE(SetExpertFormat(*model_, experts).ok());
  auto weights = ParseWeightFormats("int8", "int8", "int8", "int8");
  ASSERT_TRUE(weights.ok());
  ASSERT_TRUE(SetWeightFormats(*model_, *weights).ok());
  ASSERT_NE(model_->lm_head.quantized, nullptr);
  const int agree = Agreement();
  std::printf("%-12s int8 experts + int8 attention/lm_head/dense/shared: %d/%d next tokens agree with bf16\n",
              GetParam().c_str(), agree, kTokens);
  EXPECT_GE(agree, GetParam() == "demo" ? 61 : 52);
  ASSERT_TRUE(SetExpertFormat(*model_, ExpertOptions{}).ok());
  ASSERT_TRUE(SetWeightFormats(*model_, WeightFormats{}).ok());
  EXPECT_EQ(Argmaxes(*model_, sequence_), bf16_);
  EXPECT_FALSE(ParseWeightFormats("int3", "bf16", "bf16", "bf16").ok());
}

INSTANTIATE_TEST_SUITE_P(Models, QuantizedExpertsTest,
                         ::testing::Values("qwen3_moe", "qwen3_next", "deepseek_v2", "deepseek_v3", "glm4_moe",
                                           "demo"));

}  // namespace
}  // namespace krasis
