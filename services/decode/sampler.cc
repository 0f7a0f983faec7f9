// Token sampler of the decode worker (see sampler.h for semantics and order).
//
// One step: copy the raw logits (NaN -> -inf), apply logit_bias and the penalties
// over the (small) set of affected ids, then either take the argmax (temperature
// 0) or compute the unnormalised softmax weights exp((l - max) / T) once (only
// over the top_k candidates when top_k is set, found with nth_element), cut the
// nucleus from a most-likely-first order (partial sorts of growing prefixes, so a
// small nucleus never pays for a full sort of the vocabulary), apply min_p as
// weight >= min_p (the kept maximum has weight 1), and draw by inverse CDF.
#include "services/decode/sampler.h"

#include <algorithm>
#include <cassert>
#include <cmath>
#include <limits>
#include <numeric>

#include "common/status.h"

namespace krasis {
namespace {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();
constexpr int32_t kMaxTopLogprobs = 20;
// First prefix length tried when sorting for top_p; grows 8x while the nucleus is
// not complete.
constexpr size_t kFirstNucleusPrefix = 1024;

float Clean(float x) { return std::isnan(x) ? kNegInf : x; }

// Strict total order "more likely first": larger logit, then smaller id. Makes
// every selection and sort below independent of the library's algorithm.
struct MoreLikely {
  const float* logits;
  bool operator()(int32_t a, int32_t b) const {
    return logits[a] > logits[b] || (logits[a] == logits[b] && a < b);
  }
};

// Per-thread scratch shared by all Samplers on the thread.
struct Scratch {
  std::vector<float> logits;   // [vocab] processed logits, by id
  std::vector<float> weights;  // [vocab] exp((l - max) / T), by id (candidates only)
  std::vector<int32_t> order;  // [vocab] candidate ids
};

Scratch& ThreadScratch(size_t n) {
  thread_local Scratch scratch;
  if (scratch.logits.size() < n) {
    scratch.logits.resize(n);
    scratch.weights.resize(n);
    scratch.order.resize(n);
  }
  return scratch;
}

// "field must be in [lo, hi], got v"; also rejects NaN.
absl::Status CheckRange(const char* field, double value, double lo, double hi) {
  if (value >= lo && value <= hi) return absl::OkStatus();
  return InvalidArgumentError(field, " must be in [", lo, ", ", hi, "], got ", value);
}

}  // namespace

absl::Status SamplingOptions::Validate(int64_t vocab_size) const {
  if (vocab_size <= 0 || vocab_size > std::numeric_limits<int32_t>::max()) {
    return InvalidArgumentError("vocab_size must be in [1, 2^31), got ", vocab_size);
  }
  RETURN_IF_ERROR(CheckRange("temperature", temperature, 0.0, 100.0));
  // top_k: any value is meaningful (<= 0 disables, >= vocab keeps all).
  if (!(top_p > 0.0f && top_p <= 1.0f)) {
    return InvalidArgumentError("top_p must be in (0, 1], got ", top_p);
  }
  RETURN_IF_ERROR(CheckRange("min_p", min_p, 0.0, 1.0));
  if (!(repetition_penalty > 0.0f && std::isfinite(repetition_penalty))) {
    return InvalidArgumentError("repetition_penalty must be a finite number > 0, got ",
                                repetition_penalty);
  }
  RETURN_IF_ERROR(CheckRange("presence_penalty", presence_penalty, -2.0, 2.0));
  RETURN_IF_ERROR(CheckRange("frequency_penalty", frequency_penalty, -2.0, 2.0));
  for (const auto& [id, bias] : logit_bias) {
    if (id < 0 || id >= vocab_size) {
      return InvalidArgumentError("logit_bias token id ", id, " is outside the vocabulary [0, ",
                                  vocab_size, ")");
    }
    if (!(bias >= -100.0f && bias <= 100.0f)) {
      return InvalidArgumentError("logit_bias value for token ", id,
                                  " must be in [-100, 100], got ", bias);
    }
  }
  if (top_logprobs < 0 || top_logprobs > kMaxTopLogprobs) {
    return InvalidArgumentError("top_logprobs must be in [0, ", kMaxTopLogprobs, "], got ",
                                top_logprobs);
  }
  return absl::OkStatus();
}

absl::StatusOr<Sampler> Sampler::Create(SamplingOptions options, int64_t vocab_size) {
  RETURN_IF_ERROR(options.Validate(vocab_size));
  return Sampler(std::move(options), vocab_size);
}

Sampler::Sampler(SamplingOptions options, int64_t vocab_size)
    : options_(std::move(options)), vocab_size_(vocab_size) {
  if (options_.seed.has_value()) {
    seed_ = *options_.seed;
  } else {
    std::random_device device;
    seed_ = (static_cast<uint64_t>(device()) << 32) ^ static_cast<uint64_t>(device());
  }
  rng_.seed(seed_);
  if (TracksSeen()) seen_.assign(static_cast<size_t>(vocab_size_), false);
}

void Sampler::ClearHistory() {
  for (int32_t id : seen_ids_) seen_[static_cast<size_t>(id)] = false;
  seen_ids_.clear();
  out_counts_.clear();
  prompt_len_ = 0;
  output_len_ = 0;
}

void Sampler::MarkSeen(int32_t token) {
  if (token < 0 || token >= vocab_size_) return;
  const size_t index = static_cast<size_t>(token);
  if (seen_[index]) return;
  seen_[index] = true;
  seen_ids_.push_back(token);
}

void Sampler::UpdateHistory(std::span<const int32_t> prompt_tokens,
                            std::span<const int32_t> output_tokens) {
  const bool seen = TracksSeen();
  const bool counts = TracksCounts();
  if (!seen && !counts) return;
  const bool rebuild = prompt_tokens.size() != prompt_len_ ||
                       output_tokens.size() < output_len_ ||
                       (output_len_ > 0 && output_tokens[output_len_ - 1] != last_output_);
  if (rebuild) {
    ClearHistory();
    if (seen) {
      for (int32_t token : prompt_tokens) MarkSeen(token);
    }
    prompt_len_ = prompt_tokens.size();
  }
  for (size_t i = output_len_; i < output_tokens.size(); ++i) {
    const int32_t token = output_tokens[i];
    if (seen) MarkSeen(token);
    if (counts && token >= 0 && token < vocab_size_) ++out_counts_[token];
  }
  output_len_ = output_tokens.size();
  if (output_len_ > 0) last_output_ = output_tokens.back();
}

void Sampler::ProcessLogits(float* logits, size_t n) const {
  for (const auto& [id, bias] : options_.logit_bias) {
    if (id >= 0 && static_cast<size_t>(id) < n) logits[id] += bias;
  }
  if (TracksSeen()) {
    const float penalty = options_.repetition_penalty;
    for (int32_t id : seen_ids_) {
      if (static_cast<size_t>(id) >= n) continue;
      float& l = logits[id];
      l = l > 0.0f ? l / penalty : l * penalty;
    }
  }
  if (TracksCounts()) {
    for (const auto& [id, count] : out_counts_) {
      if (static_cast<size_t>(id) >= n) continue;
      logits[id] -= options_.presence_penalty +
                    options_.frequency_penalty * static_cast<float>(count);
    }
  }
}

double Sampler::NextUniform() {
  return static_cast<double>(rng_() >> 11) * 0x1.0p-53;
}

int32_t Sampler::Draw(size_t n) {
  Scratch& scratch = ThreadScratch(n);
  const float* logits = scratch.logits.data();
  float* weights = scratch.weights.data();
  int32_t* order = scratch.order.data();
  const MoreLikely more{logits};
  std::iota(order, order + n, 0);
  size_t count = n;
  bool sorted = false;  // order[0, count) most likely first

  // top_k: the k most likely, sorted (O(vocab + k log k)).
  if (options_.top_k > 0 && static_cast<size_t>(options_.top_k) < n) {
    count = static_cast<size_t>(options_.top_k);
    std::nth_element(order, order + count, order + n, more);
    std::sort(order, order + count, more);
    sorted = true;
  }

  // Softmax weights, computed once: exp((l - max) / T), the maximum has weight 1.
  // (l == max handles +inf logits and an all -inf row without NaN.)
  const float max_logit = sorted ? logits[order[0]] : *std::max_element(logits, logits + n);
  const float temperature = options_.temperature;
  double total = 0.0;
  for (size_t j = 0; j < count; ++j) {
    const int32_t id = order[j];
    const float l = logits[id];
    const float w = l == max_logit ? 1.0f : std::exp((l - max_logit) / temperature);
    weights[id] = w;
    total += w;
  }

  // top_p: the smallest most-likely prefix with mass >= top_p (at least one token).
  if (options_.top_p < 1.0f) {
    const double target = static_cast<double>(options_.top_p) * total;
    size_t kept = count;
    size_t done = 0;  // order[0, done) is sorted and summed into `mass`
    double mass = 0.0;
    while (done < count) {
      size_t end = count;
      if (!sorted) {
        end = std::min(count, std::max(done * 8, kFirstNucleusPrefix));
        std::partial_sort(order + done, order + end, order + count, more);
      }
      for (size_t j = done; j < end; ++j) {
        mass += weights[order[j]];
        if (mass >= target) {
          kept = j + 1;
          break;
        }
      }
      if (kept != count) break;
      done = end;
    }
    count = kept;
  }

  // min_p: keep weight >= min_p * max weight (= 1). The maximum always survives.
  if (options_.min_p > 0.0f) {
    size_t out = 0;
    for (size_t j = 0; j < count; ++j) {
      if (weights[order[j]] >= options_.min_p) order[out++] = order[j];
    }
    count = std::max<size_t>(out, 1);
  }

  // Inverse CDF over the kept tokens, in `order`.
  double kept_mass = 0.0;
  for (size_t j = 0; j < count; ++j) kept_mass += weights[order[j]];
  const double u = NextUniform() * kept_mass;
  double cdf = 0.0;
  int32_t last_positive = order[0];
  for (size_t j = 0; j < count; ++j) {
    const float w = weights[order[j]];
    if (w <= 0.0f) continue;
    cdf += w;
    last_positive = order[j];
    if (u < cdf) return order[j];
  }
  return last_positive;  // rounding: u landed at the very end
}

void Sampler::FillLogprobs(std::span<const float> raw, SampleResult& result) const {
  const size_t n = raw.size();
  float max_logit = kNegInf;
  for (float x : raw) max_logit = std::max(max_logit, Clean(x));
  double sum = 0.0;
  if (std::isfinite(max_logit)) {
    for (float x : raw) sum += std::exp(Clean(x) - max_logit);
  }
  const double log_sum = std::isfinite(max_logit) ? std::log(sum) : 0.0;
  // Degenerate rows (an infinite maximum): the maximal tokens get 0, others -inf.
  auto logprob = [&](float x) -> float {
    x = Clean(x);
    if (!std::isfinite(max_logit)) return x == max_logit ? 0.0f : kNegInf;
    return static_cast<float>(static_cast<double>(x - max_logit) - log_sum);
  };
  result.logprob = logprob(raw[static_cast<size_t>(result.token)]);

  const size_t top_n = std::min(static_cast<size_t>(std::max(options_.top_logprobs, 0)), n);
  if (top_n == 0) return;
  // One pass keeping the top_n most likely ids sorted (top_n <= 20).
  auto better = [&](size_t a, size_t b) {
    const float la = Clean(raw[a]);
    const float lb = Clean(raw[b]);
    return la > lb || (la == lb && a < b);
  };
  std::vector<size_t> best;
  best.reserve(top_n + 1);
  for (size_t i = 0; i < n; ++i) {
    if (best.size() == top_n && !better(i, best.back())) continue;
    auto pos = best.end();
    while (pos != best.begin() && better(i, *(pos - 1))) --pos;
    best.insert(pos, i);
    if (best.size() > top_n) best.pop_back();
  }
  result.top_logprobs.reserve(top_n);
  for (size_t id : best) {
    result.top_logprobs.emplace_back(static_cast<int32_t>(id), logprob(raw[id]));
  }
}

SampleResult Sampler::Sample(std::span<const float> logits,
                             std::span<const int32_t> prompt_tokens,
                             std::span<const int32_t> output_tokens) {
  assert(logits.size() >= static_cast<size_t>(vocab_size_));
  const size_t n = std::min(logits.size(), static_cast<size_t>(vocab_size_));
  SampleResult result;
  if (n == 0) return result;
  UpdateHistory(prompt_tokens, output_tokens);

  Scratch& scratch = ThreadScratch(n);
  float* work = scratch.logits.data();
  for (size_t i = 0; i < n; ++i) work[i] = Clean(logits[i]);
  ProcessLogits(work, n);

  if (options_.temperature == 0.0f) {
    // Greedy: first maximum, i.e. ties go to the lowest id.
    result.token = static_cast<int32_t>(std::max_element(work, work + n) - work);
  } else {
    result.token = Draw(n);
  }
  if (options_.logprobs) FillLogprobs(logits.first(n), result);
  return result;
}

}  // namespace krasis
