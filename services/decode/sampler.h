// Token sampler of the decode worker: turns one step's logits into the next token.
//
// Engine code with no gRPC in it. SamplingOptions is the plain C++ mirror of
// krasis.v1.SamplingParams (proto/krasis/v1/common.proto) and Sampler applies
// exactly the semantics and order that message documents:
//
//   logit_bias -> repetition penalty (prompt + output, HF/vLLM) ->
//   presence/frequency penalties (output only, OpenAI) -> temperature
//   (0 = greedy argmax, ties to the lowest id) -> top_k -> top_p -> min_p ->
//   one draw from the renormalised distribution.
//
// Reproducibility: the generator is std::mt19937_64 (its output is fixed by the
// C++ standard); each sampled (non-greedy) step consumes exactly one 64-bit draw,
// turned into a double in [0, 1) from its 53 high bits and used as an inverse-CDF
// position over the kept tokens in a deterministic order (ties broken by token
// id). The same seed, logits and options therefore give the same tokens on the
// same worker build. Greedy steps never touch the generator.
//
// Logprobs follow OpenAI/vLLM defaults: the log-softmax of the RAW model logits
// (before bias, penalties, temperature and filters).
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <optional>
#include <random>
#include <span>
#include <unordered_map>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace krasis {

// Mirror of krasis.v1.SamplingParams (the sampling fields only). Defaults are the
// neutral values, so a default-constructed SamplingOptions samples from
// softmax(logits) with a random seed.
struct SamplingOptions {
  // Softmax temperature, [0, 100]. 0 means greedy (argmax).
  float temperature = 1.0f;
  // Keep only the k most likely tokens. 0 or negative disables the filter (the
  // proto's semantics; -1 is the usual "off"). Values >= vocab_size keep all.
  int32_t top_k = 0;
  // Nucleus: keep the smallest most-likely prefix with mass >= top_p. (0, 1];
  // 1 disables the filter. At least one token is always kept.
  float top_p = 1.0f;
  // Drop tokens with probability < min_p * (max probability). [0, 1]; 0 = off.
  float min_p = 0.0f;
  // HF/vLLM: for each token id seen in the prompt or the output, a positive logit
  // is divided by it, a negative one multiplied. > 0; 1 disables it.
  float repetition_penalty = 1.0f;
  // OpenAI: logit -= presence_penalty * (count > 0) + frequency_penalty * count,
  // where count is the token's number of occurrences in the OUTPUT. [-2, 2] each.
  float presence_penalty = 0.0f;
  float frequency_penalty = 0.0f;
  // Added to the logit of the token id before anything else. Ids in
  // [0, vocab_size), values in [-100, 100].
  std::map<int32_t, float> logit_bias;
  // Seed of the per-sequence generator; unset means one from std::random_device.
  std::optional<uint64_t> seed;
  // Report the chosen token's logprob, and the `top_logprobs` (0..20) most likely
  // tokens of the raw distribution (only when `logprobs` is set).
  bool logprobs = false;
  int32_t top_logprobs = 0;

  // InvalidArgument naming the offending field (as spelled in SamplingParams) for
  // any value outside the ranges above, NaN included, or a non-positive vocab.
  absl::Status Validate(int64_t vocab_size) const;
};

// What one Sample() step produced.
struct SampleResult {
  // The chosen token id, in [0, vocab_size).
  int32_t token = 0;
  // log_softmax(raw logits)[token]; 0 unless options.logprobs.
  float logprob = 0.0f;
  // The options.top_logprobs most likely tokens of the raw distribution with
  // their logprobs, most likely first, ties by lower id; empty unless
  // options.logprobs and options.top_logprobs > 0.
  std::vector<std::pair<int32_t, float>> top_logprobs;
};

// Per-sequence sampler: one per generated sequence, used by one thread at a time
// (different Samplers may run concurrently on different threads).
//
// State kept between steps: the generator, and the penalty history, derived
// incrementally from the spans passed to Sample(): the sampler remembers how many
// prompt and output tokens it has already counted and only adds the new output
// tokens, so a step costs O(vocab + new tokens + distinct seen tokens), not
// O(length * vocab). If the prompt length changes, the output shrinks, or the last
// counted output token differs, the history is rebuilt from the spans (handles
// preemption / recomputation). History is only kept when a penalty is enabled.
//
// Per-step scratch (three vocab-sized arrays and a 32 KiB histogram) is
// thread-local and shared by all Samplers on a thread, so a Sampler itself stays
// small; with a repetition penalty it also holds a vocab-sized bitmap (vocab / 8
// bytes).
class Sampler {
 public:
  // Validates `options` against `vocab_size` and builds a Sampler.
  static absl::StatusOr<Sampler> Create(SamplingOptions options, int64_t vocab_size);

  // `options` must satisfy options.Validate(vocab_size) (see Create()).
  Sampler(SamplingOptions options, int64_t vocab_size);

  // Processes one step. `logits` holds at least vocab_size entries (entries past
  // vocab_size, e.g. a padded lm_head, are ignored; NaN counts as -inf).
  // `prompt_tokens` is the sequence's whole prompt (the same on every call) and
  // `output_tokens` everything generated so far, normally growing by the token
  // returned from the previous call. Token ids outside [0, vocab_size) in them
  // are ignored by the penalties. `banned_tokens` must not be chosen at this step
  // (e.g. EOS and stop ids before min_tokens); they are masked together with
  // logit_bias, so unlike masking `logits` yourself they keep their reported
  // logprobs (which describe the raw model distribution). Out-of-range ids are
  // ignored; if every token is banned, the result is arbitrary.
  SampleResult Sample(std::span<const float> logits, std::span<const int32_t> prompt_tokens,
                      std::span<const int32_t> output_tokens,
                      std::span<const int32_t> banned_tokens = {});

  const SamplingOptions& options() const { return options_; }
  int64_t vocab_size() const { return vocab_size_; }
  // The generator's seed: options.seed, or the one drawn from std::random_device.
  uint64_t seed() const { return seed_; }

 private:
  bool TracksSeen() const { return options_.repetition_penalty != 1.0f; }
  bool TracksCounts() const {
    return options_.presence_penalty != 0.0f || options_.frequency_penalty != 0.0f;
  }
  void UpdateHistory(std::span<const int32_t> prompt_tokens,
                     std::span<const int32_t> output_tokens);
  void ClearHistory();
  void MarkSeen(int32_t token);
  // Applies bias, bans and penalties to `logits` (a copy of the raw ones).
  void ProcessLogits(float* logits, size_t n, std::span<const int32_t> banned_tokens) const;
  // Temperature > 0 path: filters and draws from `logits` (processed).
  int32_t Draw(size_t n);
  // Uniform double in [0, 1) from the 53 high bits of one generator output.
  double NextUniform();
  void FillLogprobs(std::span<const float> raw, SampleResult& result) const;

  SamplingOptions options_;
  int64_t vocab_size_;
  uint64_t seed_;
  std::mt19937_64 rng_;

  // Penalty history (see the class comment).
  size_t prompt_len_ = 0;          // prompt tokens counted
  size_t output_len_ = 0;          // output tokens counted
  int32_t last_output_ = 0;        // output_tokens[output_len_ - 1] when output_len_ > 0
  std::vector<bool> seen_;         // [vocab_size] in prompt or output; repetition penalty only
  std::vector<int32_t> seen_ids_;  // the ids set in seen_
  std::unordered_map<int32_t, int32_t> out_counts_;  // output occurrences per id
};

}  // namespace krasis
