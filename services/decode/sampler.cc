// Token sampler of the decode worker (see sampler.h for semantics and order).
//
// One step: copy the raw logits (NaN -> -inf), apply logit_bias and the penalties
// over the (small) set of affected ids, then either take the argmax (temperature
// 0) or compute the unnormalised softmax weights exp((l - max) / T) once and draw
// by inverse CDF. With top_k the k candidates are found with nth_element and
// sorted (O(vocab + k log k)); top_p is a prefix of that order. Without top_k
// nothing is sorted: a histogram of probability mass over log-weight buckets,
// filled in the softmax pass, locates the bucket holding the nucleus boundary and
// a weighted bisection with nth_element finds it inside that bucket; top_p and
// min_p become thresholds, and the draw walks the ids in order (O(vocab)). Every
// order used is a strict total order (likelier first, ties by lower id), so the
// results do not depend on how the library implements its algorithms.
#include "services/decode/sampler.h"

#include <algorithm>
#include <cassert>
#include <cmath>
#include <limits>
#include <numeric>

#include "common/kernels/cpu_ops.h"
#include "common/status.h"

namespace krasis {
namespace {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();
constexpr int32_t kMaxTopLogprobs = 20;

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
  std::vector<float> logits;      // [vocab] processed logits, by id
  std::vector<float> weights;     // [vocab] exp((l - max) / T), by id (candidates only)
  std::vector<int32_t> order;     // [vocab] candidate ids (or nucleus buckets)
  std::vector<double> histogram;  // [kBuckets] top_p mass per Bucket()
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

// top_p: returns the least likely token of the smallest most-likely set with
// weight mass >= target, i.e. the nucleus is {i : !more(cut, i)}. Weighted
// bisection with nth_element, O(count) expected; `order` (the candidate ids) is
// permuted. If rounding leaves the total below target, every candidate is kept.
int32_t NucleusCut(int32_t* order, size_t count, const float* weights, double target,
                   const MoreLikely& more) {
  constexpr size_t kSortBelow = 64;
  size_t lo = 0;      // order[0, lo): more likely than order[lo, hi), all kept
  size_t hi = count;  // order[hi, count): less likely than the cut, all dropped
  double mass = 0.0;  // mass of order[0, lo)
  while (hi - lo > kSortBelow) {
    const size_t mid = lo + (hi - lo) / 2;
    std::nth_element(order + lo, order + mid, order + hi, more);
    double half = 0.0;
    for (size_t j = lo; j < mid; ++j) half += weights[order[j]];
    if (mass + half >= target) {
      hi = mid;
    } else {
      mass += half;
      lo = mid;
    }
  }
  std::sort(order + lo, order + hi, more);
  for (size_t j = lo; j < hi; ++j) {
    mass += weights[order[j]];
    if (mass >= target) return order[j];
  }
  return order[hi - 1];
}

// Inverse CDF: the first of the ids id_at(0), ..., id_at(count - 1) (in that
// order) at which the running sum of weights exceeds u * (sum of weights). Zero
// weights are never chosen; at least one weight must be positive (the maximum's
// is 1).
template <typename IdAt>
int32_t InverseCdf(IdAt id_at, size_t count, const float* weights, double u) {
  double total = 0.0;
  for (size_t j = 0; j < count; ++j) total += weights[id_at(j)];
  const double target = u * total;
  double cdf = 0.0;
  int32_t last_positive = id_at(0);
  for (size_t j = 0; j < count; ++j) {
    const int32_t id = id_at(j);
    const float w = weights[id];
    if (w <= 0.0f) continue;
    cdf += w;
    last_positive = id;
    if (target < cdf) return id;
  }
  return last_positive;  // rounding: target landed at the very end
}

// Nucleus histogram: bucket of a token by its distance from the maximum in
// log-weight units, d = (max - l) / T >= 0, at kBucketsPerUnit per unit; all
// d >= kBuckets / kBucketsPerUnit share the last bucket. Monotone in the logit
// (IEEE subtraction and division are), so every token of a lower bucket is more
// likely than every token of a higher one.
constexpr int32_t kBucketsPerUnit = 64;
constexpr int32_t kBuckets = 64 * kBucketsPerUnit;
int32_t Bucket(float d) {
  return d < static_cast<float>(kBuckets / kBucketsPerUnit)
             ? static_cast<int32_t>(d * static_cast<float>(kBucketsPerUnit))
             : kBuckets - 1;
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
  const bool rebuild = prompt_tokens.size() != prompt_len_ || output_tokens.size() < output_len_ ||
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

void Sampler::ProcessLogits(float* logits, size_t n, std::span<const int32_t> banned_tokens) const {
  for (const auto& [id, bias] : options_.logit_bias) {
    if (id >= 0 && static_cast<size_t>(id) < n) logits[id] += bias;
  }
  // -inf stays -inf through the penalties below.
  for (int32_t id : banned_tokens) {
    if (id >= 0 && static_cast<size_t>(id) < n) logits[id] = kNegInf;
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
      logits[id] -=
          options_.presence_penalty + options_.frequency_penalty * static_cast<float>(count);
    }
  }
}

double Sampler::NextUniform() { return static_cast<double>(rng_() >> 11) * 0x1.0p-53; }

int32_t Sampler::Draw(size_t n) {
  Scratch& scratch = ThreadScratch(n);
  const float* logits = scratch.logits.data();
  float* weights = scratch.weights.data();
  int32_t* order = scratch.order.data();
  const MoreLikely more{logits};
  const float temperature = options_.temperature;
  const float min_p = options_.min_p;  // weights are relative to the maximum (1)
  // exp((l - max) / T); `l == max` gives the maximum weight 1 even for +inf logits
  // or an all -inf row, without NaN.
  auto weight = [temperature](float l, float max_logit) {
    return l == max_logit ? 1.0f : std::exp((l - max_logit) / temperature);
  };

  if (options_.top_k > 0 && static_cast<size_t>(options_.top_k) < n) {
    // top_k: the k most likely, sorted (O(vocab + k log k)); top_p is then a
    // prefix of that order and the draw walks it.
    size_t count = static_cast<size_t>(options_.top_k);
    std::iota(order, order + n, 0);
    std::nth_element(order, order + count, order + n, more);
    std::sort(order, order + count, more);
    const float max_logit = logits[order[0]];
    double total = 0.0;
    for (size_t j = 0; j < count; ++j) {
      total += weights[order[j]] = weight(logits[order[j]], max_logit);
    }
    if (options_.top_p < 1.0f) {
      const double target = static_cast<double>(options_.top_p) * total;
      double mass = 0.0;
      for (size_t j = 0; j < count; ++j) {
        mass += weights[order[j]];
        if (mass >= target) {
          count = j + 1;
          break;
        }
      }
    }
    for (size_t j = 0; j < count; ++j) {
      if (weights[order[j]] < min_p) weights[order[j]] = 0.0f;
    }
    return InverseCdf([order](size_t j) { return order[j]; }, count, weights, NextUniform());
  }

  // Whole vocabulary: weights by id, top_p and min_p as thresholds, draw in id
  // order. For top_p, a histogram of mass by Bucket() (filled in the same pass)
  // finds the bucket holding the nucleus boundary, and only that bucket's tokens
  // go through NucleusCut.
  const float max_logit = *std::max_element(logits, logits + n);
  const bool nucleus = options_.top_p < 1.0f;
  if (nucleus) scratch.histogram.assign(kBuckets, 0.0);
  double* histogram = scratch.histogram.data();
  double total = 0.0;
  for (size_t i = 0; i < n; ++i) {
    const float l = logits[i];
    const float d = l == max_logit ? 0.0f : (max_logit - l) / temperature;
    const float w = l == max_logit ? 1.0f : std::exp(-d);
    weights[i] = w;
    total += w;
    if (nucleus) {
      const int32_t bucket = Bucket(d);
      histogram[bucket] += w;
      order[i] = bucket;
    }
  }
  int32_t cut = -1;  // least likely token of the nucleus; -1: no top_p cut
  if (nucleus) {
    const double target = static_cast<double>(options_.top_p) * total;
    int32_t boundary = 0;
    double above = 0.0;  // mass of the buckets before `boundary`
    while (boundary < kBuckets - 1 && above + histogram[boundary] < target) {
      above += histogram[boundary++];
    }
    size_t count = 0;  // compact the boundary bucket's ids to order[0, count)
    for (size_t i = 0; i < n; ++i) {
      if (order[i] == boundary) order[count++] = static_cast<int32_t>(i);
    }
    if (count > 0) cut = NucleusCut(order, count, weights, target - above, more);
  }
  for (size_t i = 0; i < n; ++i) {
    if ((cut >= 0 && more(cut, static_cast<int32_t>(i))) || weights[i] < min_p) {
      weights[i] = 0.0f;
    }
  }
  return InverseCdf([](size_t j) { return static_cast<int32_t>(j); }, n, weights, NextUniform());
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

SampleResult Sampler::Sample(std::span<const float> logits, std::span<const int32_t> prompt_tokens,
                             std::span<const int32_t> output_tokens,
                             std::span<const int32_t> banned_tokens) {
  assert(logits.size() >= static_cast<size_t>(vocab_size_));
  const size_t n = std::min(logits.size(), static_cast<size_t>(vocab_size_));
  SampleResult result;
  if (n == 0) return result;
  UpdateHistory(prompt_tokens, output_tokens);

  Scratch& scratch = ThreadScratch(n);
  float* work = scratch.logits.data();
  for (size_t i = 0; i < n; ++i) work[i] = Clean(logits[i]);
  ProcessLogits(work, n, banned_tokens);

  if (options_.temperature == 0.0f) {
    // Greedy: first maximum, i.e. ties go to the lowest id (work holds no NaN).
    result.token = static_cast<int32_t>(cpu::ArgMax(work, static_cast<int64_t>(n)));
  } else {
    result.token = Draw(n);
  }
  if (options_.logprobs) FillLogprobs(logits.first(n), result);
  return result;
}

}  // namespace krasis
