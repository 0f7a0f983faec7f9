// Tests for the decode worker's token sampler (services/decode/sampler.h).
//
// Behavioural checks on fresh random logits (from seeded generators, so the tests
// are deterministic): greedy picks the argmax, seeds reproduce, empirical
// frequencies of many draws match the softmax they should come from, each filter
// keeps exactly the support SamplingParams documents, penalties are checked
// against a plain O(length * vocab) reference, logprobs against a double-precision
// log-softmax, and Validate names each bad field.
#include "services/decode/sampler.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>
#include <random>
#include <set>
#include <string>
#include <vector>

namespace krasis {
namespace {

constexpr float kInf = std::numeric_limits<float>::infinity();

std::vector<float> RandomLogits(size_t n, uint64_t seed, float scale = 1.0f) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal(0.0f, scale);
  std::vector<float> logits(n);
  for (float& x : logits) x = normal(rng);
  return logits;
}

// softmax(logits / temperature) in double.
std::vector<double> Softmax(const std::vector<float>& logits, double temperature = 1.0) {
  double max = *std::max_element(logits.begin(), logits.end());
  std::vector<double> p(logits.size());
  double sum = 0.0;
  for (size_t i = 0; i < logits.size(); ++i)
    sum += p[i] = std::exp((logits[i] - max) / temperature);
  for (double& x : p) x /= sum;
  return p;
}

// Logits whose softmax is exactly `probs` (up to rounding).
std::vector<float> LogitsFor(const std::vector<double>& probs) {
  std::vector<float> logits;
  for (double p : probs) logits.push_back(p > 0 ? static_cast<float>(std::log(p)) : -kInf);
  return logits;
}

Sampler MakeSampler(SamplingOptions options, int64_t vocab) {
  auto sampler = Sampler::Create(std::move(options), vocab);
  EXPECT_TRUE(sampler.ok()) << sampler.status();
  return std::move(sampler).value();
}

// Empirical token frequencies of `draws` samples (no history).
std::vector<double> Frequencies(Sampler& sampler, const std::vector<float>& logits, int draws) {
  std::vector<double> freq(logits.size(), 0.0);
  for (int i = 0; i < draws; ++i) freq[sampler.Sample(logits, {}, {}).token] += 1.0;
  for (double& f : freq) f /= draws;
  return freq;
}

// Max |a - b| and Pearson's chi-square of observed frequencies against `expected`.
void ExpectMatches(const std::vector<double>& freq, const std::vector<double>& expected, int draws,
                   double max_abs = 0.01) {
  ASSERT_EQ(freq.size(), expected.size());
  double chi2 = 0.0;
  int dof = -1;
  for (size_t i = 0; i < freq.size(); ++i) {
    EXPECT_NEAR(freq[i], expected[i], max_abs) << "token " << i;
    if (expected[i] == 0.0) {
      EXPECT_EQ(freq[i], 0.0) << "token " << i << " is outside the support";
      continue;
    }
    const double diff = (freq[i] - expected[i]) * draws;
    chi2 += diff * diff / (expected[i] * draws);
    ++dof;
  }
  // Generous bound: far above the 0.999 quantile for the few degrees of freedom used.
  EXPECT_LT(chi2, 3.0 * dof + 25.0) << "dof " << dof;
}

TEST(SamplerTest, GreedyIsArgmax) {
  for (uint64_t seed = 1; seed <= 5; ++seed) {
    const auto logits = RandomLogits(5000, seed, 3.0f);
    SamplingOptions options;
    options.temperature = 0.0f;
    Sampler sampler = MakeSampler(options, 5000);
    const int32_t expected =
        static_cast<int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin());
    EXPECT_EQ(sampler.Sample(logits, {}, {}).token, expected);
  }
}

TEST(SamplerTest, GreedyTiesGoToLowestId) {
  std::vector<float> logits = {0.5f, 2.0f, -1.0f, 2.0f, 2.0f};
  SamplingOptions options;
  options.temperature = 0.0f;
  EXPECT_EQ(MakeSampler(options, 5).Sample(logits, {}, {}).token, 1);
}

TEST(SamplerTest, TemperatureZeroIgnoresSeed) {
  const auto logits = RandomLogits(1000, 7);
  std::vector<int32_t> first;
  for (std::optional<uint64_t> seed :
       {std::optional<uint64_t>(1), std::optional<uint64_t>(2), std::optional<uint64_t>()}) {
    SamplingOptions options;
    options.temperature = 0.0f;
    options.seed = seed;
    Sampler sampler = MakeSampler(options, 1000);
    std::vector<int32_t> tokens;
    for (int i = 0; i < 10; ++i) tokens.push_back(sampler.Sample(logits, {}, {}).token);
    if (first.empty()) first = tokens;
    EXPECT_EQ(tokens, first);
  }
}

std::vector<int32_t> DrawSequence(std::optional<uint64_t> seed, int steps, uint64_t* used_seed) {
  SamplingOptions options;
  options.seed = seed;
  options.top_p = 0.95f;
  Sampler sampler = MakeSampler(options, 1000);
  if (used_seed != nullptr) *used_seed = sampler.seed();
  std::vector<int32_t> tokens;
  for (int i = 0; i < steps; ++i) {
    tokens.push_back(sampler.Sample(RandomLogits(1000, 100 + i), {}, {}).token);
  }
  return tokens;
}

TEST(SamplerTest, SameSeedSameSequenceDifferentSeedsDiffer) {
  uint64_t used = 0;
  const auto a = DrawSequence(42, 32, &used);
  EXPECT_EQ(used, 42u);
  EXPECT_EQ(DrawSequence(42, 32, nullptr), a);
  EXPECT_NE(DrawSequence(43, 32, nullptr), a);
  // No seed: a fresh random one per sampler.
  uint64_t s1 = 0, s2 = 0;
  const auto r1 = DrawSequence(std::nullopt, 32, &s1);
  const auto r2 = DrawSequence(std::nullopt, 32, &s2);
  EXPECT_NE(s1, s2);
  EXPECT_NE(r1, r2);
  EXPECT_EQ(DrawSequence(s1, 32, nullptr), r1);  // the reported seed reproduces it
}

TEST(SamplerTest, FrequenciesMatchSoftmaxWithTemperature) {
  constexpr int kDraws = 40000;
  for (float temperature : {1.0f, 0.6f, 1.7f}) {
    SCOPED_TRACE(temperature);
    const auto logits = RandomLogits(8, 11, 1.0f);
    SamplingOptions options;
    options.temperature = temperature;
    options.seed = 5;
    Sampler sampler = MakeSampler(options, 8);
    ExpectMatches(Frequencies(sampler, logits, kDraws), Softmax(logits, temperature), kDraws);
  }
}

TEST(SamplerTest, TopKOneIsGreedy) {
  const auto logits = RandomLogits(2000, 3);
  SamplingOptions options;
  options.top_k = 1;
  options.temperature = 2.0f;
  options.seed = 1;
  Sampler sampler = MakeSampler(options, 2000);
  const int32_t argmax =
      static_cast<int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin());
  for (int i = 0; i < 200; ++i) EXPECT_EQ(sampler.Sample(logits, {}, {}).token, argmax);
}

TEST(SamplerTest, TopKRestrictsToKLargestAndRenormalises) {
  constexpr int kDraws = 40000;
  const auto logits = RandomLogits(100, 9, 0.5f);
  std::vector<int32_t> ids(100);
  for (int i = 0; i < 100; ++i) ids[i] = i;
  std::sort(ids.begin(), ids.end(), [&](int a, int b) { return logits[a] > logits[b]; });
  std::vector<float> masked(100, -kInf);
  for (int i = 0; i < 5; ++i) masked[ids[i]] = logits[ids[i]];

  SamplingOptions options;
  options.top_k = 5;
  options.seed = 3;
  Sampler sampler = MakeSampler(options, 100);
  ExpectMatches(Frequencies(sampler, logits, kDraws), Softmax(masked), kDraws);
  // top_k >= vocab and negative top_k keep everything.
  for (int32_t k : {100, 1000, -1}) {
    options.top_k = k;
    Sampler all = MakeSampler(options, 100);
    auto freq = Frequencies(all, logits, 4000);
    EXPECT_GT(std::count_if(freq.begin(), freq.end(), [](double f) { return f > 0; }), 50) << k;
  }
}

TEST(SamplerTest, TopPKeepsSmallestPrefixWithMass) {
  constexpr int kDraws = 40000;
  // Shuffled ids so the order is not the id order: probs 0.5, 0.3, 0.15, 0.05.
  const std::vector<double> probs = {0.15, 0.5, 0.05, 0.3};
  const auto logits = LogitsFor(probs);
  struct Case {
    float top_p;
    std::vector<double> expected;
  };
  for (const Case& c : {Case{0.75f, {0.0, 0.5 / 0.8, 0.0, 0.3 / 0.8}},
                        Case{0.85f, {0.15 / 0.95, 0.5 / 0.95, 0.0, 0.3 / 0.95}},
                        Case{0.3f, {0.0, 1.0, 0.0, 0.0}},  // always at least one token
                        Case{1e-6f, {0.0, 1.0, 0.0, 0.0}}, Case{1.0f, probs}}) {
    SCOPED_TRACE(c.top_p);
    SamplingOptions options;
    options.top_p = c.top_p;
    options.seed = 17;
    Sampler sampler = MakeSampler(options, 4);
    ExpectMatches(Frequencies(sampler, logits, kDraws), c.expected, kDraws);
  }
}

TEST(SamplerTest, TopPOnLargeVocabStaysInNucleus) {
  // Large vocab without top_k exercises the growing partial sorts: the nucleus is
  // computed here by a full sort and every draw must fall inside it.
  constexpr size_t kVocab = 50000;
  const auto logits = RandomLogits(kVocab, 21, 2.0f);
  const auto p = Softmax(logits);
  for (float top_p : {0.5f, 0.9f, 0.999f}) {
    std::vector<int32_t> ids(kVocab);
    for (size_t i = 0; i < kVocab; ++i) ids[i] = static_cast<int32_t>(i);
    std::sort(ids.begin(), ids.end(), [&](int a, int b) { return p[a] > p[b]; });
    std::set<int32_t> nucleus;
    double mass = 0.0;
    for (int32_t id : ids) {
      nucleus.insert(id);
      mass += p[id];
      if (mass >= top_p) break;
    }
    SamplingOptions options;
    options.top_p = top_p;
    options.seed = 2;
    Sampler sampler = MakeSampler(options, kVocab);
    std::set<int32_t> drawn;
    for (int i = 0; i < 300; ++i) drawn.insert(sampler.Sample(logits, {}, {}).token);
    for (int32_t id : drawn) EXPECT_TRUE(nucleus.count(id)) << "top_p " << top_p << " id " << id;
    EXPECT_GT(drawn.size(), std::min<size_t>(nucleus.size() / 4, 50)) << top_p;
  }
}

TEST(SamplerTest, TiesAtTheBoundaryGoToLowerIds) {
  // 100 equally likely tokens: top_p = 0.5 keeps exactly ids 0..49 (mass 0.5),
  // top_k = 10 keeps ids 0..9; each uniformly.
  constexpr int kDraws = 20000;
  const std::vector<float> flat(100, 0.25f);
  SamplingOptions options;
  options.seed = 12;
  options.top_p = 0.5f;
  std::vector<double> half(100, 0.0);
  std::fill(half.begin(), half.begin() + 50, 1.0 / 50);
  Sampler nucleus = MakeSampler(options, 100);
  ExpectMatches(Frequencies(nucleus, flat, kDraws), half, kDraws);
  options.top_p = 1.0f;
  options.top_k = 10;
  std::vector<double> ten(100, 0.0);
  std::fill(ten.begin(), ten.begin() + 10, 1.0 / 10);
  Sampler top_k = MakeSampler(options, 100);
  ExpectMatches(Frequencies(top_k, flat, kDraws), ten, kDraws);
}

TEST(SamplerTest, MinPDropsUnlikelyTokens) {
  constexpr int kDraws = 40000;
  const std::vector<double> probs = {0.05, 0.3, 0.5, 0.15};
  const auto logits = LogitsFor(probs);
  struct Case {
    float min_p;
    std::vector<double> expected;
  };
  for (const Case& c :
       {Case{0.2f, {0.0, 0.3 / 0.95, 0.5 / 0.95, 0.15 / 0.95}},
        Case{0.5f, {0.0, 0.3 / 0.8, 0.5 / 0.8, 0.0}}, Case{1.0f, {0.0, 0.0, 1.0, 0.0}}}) {
    SCOPED_TRACE(c.min_p);
    SamplingOptions options;
    options.min_p = c.min_p;
    options.seed = 23;
    Sampler sampler = MakeSampler(options, 4);
    ExpectMatches(Frequencies(sampler, logits, kDraws), c.expected, kDraws);
  }
}

TEST(SamplerTest, FiltersCombineInOrder) {
  // top_k=3 keeps {0.4, 0.3, 0.2}; renormalised 4/9, 3/9, 2/9; top_p=0.7 keeps
  // the first two (7/9); min_p=0.8 then drops 0.3 (< 0.8 * 0.4).
  constexpr int kDraws = 20000;
  const auto logits = LogitsFor({0.1, 0.2, 0.4, 0.3});
  SamplingOptions options;
  options.top_k = 3;
  options.top_p = 0.7f;
  options.seed = 8;
  Sampler sampler = MakeSampler(options, 4);
  ExpectMatches(Frequencies(sampler, logits, kDraws), {0.0, 0.0, 4.0 / 7, 3.0 / 7}, kDraws);
  options.min_p = 0.8f;
  Sampler strict = MakeSampler(options, 4);
  ExpectMatches(Frequencies(strict, logits, kDraws), {0.0, 0.0, 1.0, 0.0}, kDraws);
}

TEST(SamplerTest, LogitBiasBansAndForces) {
  const auto logits = RandomLogits(50, 31);
  const int32_t argmax =
      static_cast<int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin());
  SamplingOptions greedy;
  greedy.temperature = 0.0f;
  greedy.logit_bias[argmax] = -100.0f;
  EXPECT_NE(MakeSampler(greedy, 50).Sample(logits, {}, {}).token, argmax);

  SamplingOptions ban;
  ban.seed = 4;
  ban.temperature = 1.5f;
  ban.logit_bias[argmax] = -100.0f;
  Sampler banned = MakeSampler(ban, 50);
  EXPECT_EQ(Frequencies(banned, logits, 5000)[argmax], 0.0);

  SamplingOptions force;
  force.seed = 4;
  force.logit_bias[13] = 100.0f;
  Sampler forced = MakeSampler(force, 50);
  EXPECT_EQ(Frequencies(forced, logits, 2000)[13], 1.0);
}

TEST(SamplerTest, BannedTokensAreNeverChosenButKeepRawLogprobs) {
  const auto logits = RandomLogits(30, 41);
  const int32_t argmax =
      static_cast<int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin());
  const std::vector<int32_t> banned = {argmax, 3, 7, 12345 /* out of range: ignored */};
  SamplingOptions options;
  options.temperature = 0.0f;
  options.logprobs = true;
  options.top_logprobs = 1;
  Sampler greedy = MakeSampler(options, 30);
  const SampleResult r = greedy.Sample(logits, {}, {}, banned);
  EXPECT_NE(r.token, argmax);
  ASSERT_EQ(r.top_logprobs.size(), 1u);
  EXPECT_EQ(r.top_logprobs[0].first, argmax);  // still the raw distribution's top token
  EXPECT_TRUE(std::isfinite(r.top_logprobs[0].second));

  options.temperature = 3.0f;
  options.seed = 9;
  Sampler sampler = MakeSampler(options, 30);
  for (int i = 0; i < 3000; ++i) {
    const int32_t t = sampler.Sample(logits, {}, {}, banned).token;
    ASSERT_TRUE(t != argmax && t != 3 && t != 7) << t;
  }
}

TEST(SamplerTest, RepetitionPenaltyDividesPositiveMultipliesNegative) {
  SamplingOptions options;
  options.temperature = 0.0f;
  options.repetition_penalty = 2.0f;
  const std::vector<int32_t> prompt = {0, 0, 0, 5};
  // Positive: 2.0 / 2 = 1.0 < 1.5, so token 1 wins (and the penalty applies once,
  // not once per occurrence: 1.0 > 0.9 keeps token 0 ahead of token 2 below).
  EXPECT_EQ(MakeSampler(options, 6)
                .Sample(std::vector<float>{2.0f, 1.5f, 0.f, 0.f, 0.f, 0.f}, prompt, {})
                .token,
            1);
  EXPECT_EQ(MakeSampler(options, 6)
                .Sample(std::vector<float>{2.0f, -5.f, 0.9f, 0.f, 0.f, 0.f}, prompt, {})
                .token,
            0);
  // Negative: -1.0 * 2 = -2.0 < -1.5, so token 1 wins.
  const std::vector<float> negative = {-1.0f, -1.5f, -3.0f, -3.0f, -3.0f, -3.0f};
  EXPECT_EQ(MakeSampler(options, 6).Sample(negative, {}, std::vector<int32_t>{0}).token, 1);
  // Off: token 0.
  options.repetition_penalty = 1.0f;
  EXPECT_EQ(MakeSampler(options, 6).Sample(negative, {}, std::vector<int32_t>{0}).token, 0);
}

TEST(SamplerTest, PresenceAndFrequencyCountOutputOnly) {
  SamplingOptions options;
  options.temperature = 0.0f;
  options.presence_penalty = 0.5f;
  const std::vector<float> logits = {1.0f, 0.8f, 0.0f};
  const std::vector<int32_t> lots = {0, 0, 0, 0, 0, 0};
  EXPECT_EQ(MakeSampler(options, 3).Sample(logits, lots, {}).token, 0);  // prompt: no effect
  EXPECT_EQ(MakeSampler(options, 3).Sample(logits, {}, std::vector<int32_t>{0}).token, 1);

  options.presence_penalty = 0.0f;
  options.frequency_penalty = 0.15f;  // 1 - 0.15 = 0.85 > 0.8; 1 - 0.3 = 0.7 < 0.8
  EXPECT_EQ(MakeSampler(options, 3).Sample(logits, lots, std::vector<int32_t>{0}).token, 0);
  EXPECT_EQ(MakeSampler(options, 3).Sample(logits, {}, std::vector<int32_t>{0, 2, 0}).token, 1);
  // Negative penalties encourage repetition.
  options.frequency_penalty = -0.5f;
  EXPECT_EQ(MakeSampler(options, 3).Sample(logits, {}, std::vector<int32_t>{2, 2, 2}).token, 2);
}

// Plain O(length * vocab) reference of bias + penalties, then argmax.
int32_t ReferenceGreedy(const SamplingOptions& o, std::vector<float> l,
                        const std::vector<int32_t>& prompt, const std::vector<int32_t>& output) {
  for (const auto& [id, b] : o.logit_bias) l[id] += b;
  for (int32_t id = 0; id < static_cast<int32_t>(l.size()); ++id) {
    const bool seen = std::count(prompt.begin(), prompt.end(), id) > 0 ||
                      std::count(output.begin(), output.end(), id) > 0;
    if (seen) l[id] = l[id] > 0 ? l[id] / o.repetition_penalty : l[id] * o.repetition_penalty;
    const auto count = std::count(output.begin(), output.end(), id);
    l[id] -= o.presence_penalty * (count > 0 ? 1.0f : 0.0f) +
             o.frequency_penalty * static_cast<float>(count);
  }
  return static_cast<int32_t>(std::max_element(l.begin(), l.end()) - l.begin());
}

TEST(SamplerTest, IncrementalHistoryMatchesReference) {
  constexpr int kVocab = 64;
  std::mt19937_64 rng(99);
  SamplingOptions options;
  options.temperature = 0.0f;
  options.repetition_penalty = 1.3f;
  options.presence_penalty = 0.4f;
  options.frequency_penalty = 0.3f;
  options.logit_bias[5] = 2.0f;
  std::vector<int32_t> prompt(40);
  for (int32_t& t : prompt) t = static_cast<int32_t>(rng() % 16);  // a repetitive prompt
  Sampler sampler = MakeSampler(options, kVocab);
  std::vector<int32_t> output;
  for (int step = 0; step < 60; ++step) {
    const auto logits = RandomLogits(kVocab, 1000 + step, 0.7f);
    const int32_t expected = ReferenceGreedy(options, logits, prompt, output);
    ASSERT_EQ(sampler.Sample(logits, prompt, output).token, expected) << "step " << step;
    // Feed back a random token sometimes, to get repeated outputs.
    output.push_back(step % 3 == 0 ? static_cast<int32_t>(rng() % 8) : expected);
  }
  // Rewound output (preemption/recompute) and a changed prompt rebuild the history.
  output.resize(10);
  output.back() = 63;
  auto logits = RandomLogits(kVocab, 5);
  EXPECT_EQ(sampler.Sample(logits, prompt, output).token,
            ReferenceGreedy(options, logits, prompt, output));
  output[9] = 62;  // same length, different last token
  EXPECT_EQ(sampler.Sample(logits, prompt, output).token,
            ReferenceGreedy(options, logits, prompt, output));
  prompt.resize(3);
  EXPECT_EQ(sampler.Sample(logits, prompt, output).token,
            ReferenceGreedy(options, logits, prompt, output));
}

TEST(SamplerTest, LogprobsAreLogSoftmaxOfRawLogits) {
  constexpr size_t kVocab = 3000;
  auto logits = RandomLogits(kVocab, 77, 2.0f);
  logits[10] = logits[11] = 9.0f;  // a tie at the top: lower id first
  SamplingOptions options;
  options.logprobs = true;
  options.top_logprobs = 5;
  options.temperature = 0.5f;  // processing must not change the reported logprobs
  options.logit_bias[42] = 100.0f;
  options.repetition_penalty = 1.5f;
  options.seed = 1;
  Sampler sampler = MakeSampler(options, kVocab);
  const std::vector<int32_t> prompt = {10, 11};
  const SampleResult result = sampler.Sample(logits, prompt, {});
  EXPECT_EQ(result.token, 42);

  double max = *std::max_element(logits.begin(), logits.end());
  double sum = 0.0;
  for (float x : logits) sum += std::exp(x - max);
  auto ref = [&](int32_t id) { return logits[id] - max - std::log(sum); };
  EXPECT_NEAR(result.logprob, ref(42), 1e-4);

  std::vector<int32_t> ids(kVocab);
  for (size_t i = 0; i < kVocab; ++i) ids[i] = static_cast<int32_t>(i);
  std::stable_sort(ids.begin(), ids.end(), [&](int a, int b) { return logits[a] > logits[b]; });
  ASSERT_EQ(result.top_logprobs.size(), 5u);
  EXPECT_EQ(result.top_logprobs[0].first, 10);
  EXPECT_EQ(result.top_logprobs[1].first, 11);
  for (size_t i = 0; i < 5; ++i) {
    EXPECT_EQ(result.top_logprobs[i].first, ids[i]);
    EXPECT_NEAR(result.top_logprobs[i].second, ref(ids[i]), 1e-4);
    if (i > 0) {
      EXPECT_LE(result.top_logprobs[i].second, result.top_logprobs[i - 1].second);
    }
  }

  // Off by default; top_logprobs = 0 gives just the chosen token's logprob.
  SamplingOptions plain;
  plain.seed = 1;
  const SampleResult none = MakeSampler(plain, kVocab).Sample(logits, {}, {});
  EXPECT_EQ(none.logprob, 0.0f);
  EXPECT_TRUE(none.top_logprobs.empty());
  plain.logprobs = true;
  const SampleResult only = MakeSampler(plain, kVocab).Sample(logits, {}, {});
  EXPECT_NEAR(only.logprob, ref(only.token), 1e-4);
  EXPECT_TRUE(only.top_logprobs.empty());
}

TEST(SamplerTest, MaskedNanAndPaddedLogits) {
  // -inf and NaN logits are never drawn; entries past vocab_size are ignored.
  auto logits = RandomLogits(20, 8);
  logits[3] = -kInf;
  logits[4] = std::numeric_limits<float>::quiet_NaN();
  logits.resize(30, 1000.0f);  // padded lm_head rows
  SamplingOptions options;
  options.seed = 6;
  options.temperature = 2.0f;
  options.logprobs = true;
  options.top_logprobs = 20;
  Sampler sampler = MakeSampler(options, 20);
  for (int i = 0; i < 2000; ++i) {
    const SampleResult r = sampler.Sample(logits, {}, {});
    ASSERT_LT(r.token, 20);
    ASSERT_NE(r.token, 3);
    ASSERT_NE(r.token, 4);
    ASSERT_TRUE(std::isfinite(r.logprob));
  }
  options.temperature = 0.0f;
  std::vector<float> nan_first = {std::numeric_limits<float>::quiet_NaN(), -1.0f, 0.5f};
  EXPECT_EQ(MakeSampler(options, 3).Sample(nan_first, {}, {}).token, 2);
}

void ExpectInvalid(const SamplingOptions& options, const std::string& field, int64_t vocab = 100) {
  const absl::Status status = options.Validate(vocab);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << field;
  EXPECT_NE(std::string(status.message()).find(field), std::string::npos)
      << "message '" << status.message() << "' does not name " << field;
  EXPECT_FALSE(Sampler::Create(options, vocab).ok()) << field;
}

TEST(SamplerTest, ValidateNamesTheBadField) {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  SamplingOptions good;
  good.temperature = 100.0f;
  good.top_k = -1;
  good.top_p = 1.0f;
  good.min_p = 1.0f;
  good.repetition_penalty = 0.5f;
  good.presence_penalty = -2.0f;
  good.frequency_penalty = 2.0f;
  good.logit_bias = {{0, -100.0f}, {99, 100.0f}};
  good.top_logprobs = 20;
  EXPECT_TRUE(good.Validate(100).ok()) << good.Validate(100);
  EXPECT_TRUE(SamplingOptions().Validate(100).ok());

  auto with = [&](auto edit) {
    SamplingOptions o;
    edit(o);
    return o;
  };
  for (float t : {-0.1f, 100.5f, nan, kInf}) {
    ExpectInvalid(with([&](SamplingOptions& o) { o.temperature = t; }), "temperature");
  }
  for (float p : {0.0f, -0.5f, 1.01f, nan}) {
    ExpectInvalid(with([&](SamplingOptions& o) { o.top_p = p; }), "top_p");
  }
  for (float p : {-0.01f, 1.5f, nan}) {
    ExpectInvalid(with([&](SamplingOptions& o) { o.min_p = p; }), "min_p");
  }
  for (float p : {0.0f, -1.0f, nan, kInf}) {
    ExpectInvalid(with([&](SamplingOptions& o) { o.repetition_penalty = p; }),
                  "repetition_penalty");
  }
  for (float p : {-2.5f, 2.01f, nan}) {
    ExpectInvalid(with([&](SamplingOptions& o) { o.presence_penalty = p; }), "presence_penalty");
    ExpectInvalid(with([&](SamplingOptions& o) { o.frequency_penalty = p; }), "frequency_penalty");
  }
  for (int32_t id : {-1, 100}) {
    ExpectInvalid(with([&](SamplingOptions& o) { o.logit_bias[id] = 1.0f; }), "logit_bias");
  }
  for (float b : {-100.5f, 101.0f, nan}) {
    ExpectInvalid(with([&](SamplingOptions& o) { o.logit_bias[7] = b; }), "logit_bias");
  }
  for (int32_t n : {-1, 21}) {
    ExpectInvalid(with([&](SamplingOptions& o) { o.top_logprobs = n; }), "top_logprobs");
  }
  ExpectInvalid(SamplingOptions(), "vocab_size", 0);
}

}  // namespace
}  // namespace krasis
