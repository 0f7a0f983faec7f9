// Rotary embeddings (see rope.h). Frequencies follow transformers'
// _compute_default_rope_parameters / _compute_yarn_parameters; cos and sin are
// computed in fp32 from fp32 position * inv_freq, as torch does.
#include "common/models/rope.h"

#include <algorithm>
#include <cmath>

#include "common/status.h"

namespace krasis {

double YarnMscale(double scale, double mscale) {
  if (scale <= 1.0) return 1.0;
  return 0.1 * mscale * std::log(scale) + 1.0;
}

absl::StatusOr<Rope> MakeRope(const ModelConfig& config, int64_t rot_dim, bool interleaved) {
  if (rot_dim <= 0 || rot_dim % 2 != 0) {
    return InvalidArgumentError(config.source, ": rotary dimension ", rot_dim, " must be even and positive");
  }
  Rope rope;
  rope.rot_dim = rot_dim;
  rope.interleaved = interleaved;
  const double base = config.rope_theta;
  const int64_t half = rot_dim / 2;
  rope.inv_freq.resize(static_cast<size_t>(half));
  std::vector<double> pos_freq(static_cast<size_t>(half));
  for (int64_t i = 0; i < half; ++i) {
    // torch: base ** (arange(0, dim, 2).float() / dim), then 1 / that, in fp32.
    float exponent = static_cast<float>(2 * i) / static_cast<float>(rot_dim);
    pos_freq[i] = std::pow(static_cast<float>(base), exponent);
    rope.inv_freq[i] = 1.0f / static_cast<float>(pos_freq[i]);
  }
  if (!config.rope_scaling.has_value() || config.rope_scaling->type.empty() ||
      config.rope_scaling->type == "default") {
    return rope;
  }
  const RopeScaling& s = *config.rope_scaling;
  if (s.type != "yarn") {
    return UnimplementedError(config.source, ": rope scaling type '", s.type,
                              "' is not supported (supported: yarn)");
  }
  const double factor = s.factor.value_or(1.0);
  const double original = static_cast<double>(
      s.original_max_position_embeddings.value_or(config.max_position_embeddings));
  const double beta_fast = s.beta_fast.value_or(32.0);
  const double beta_slow = s.beta_slow.value_or(1.0);
  if (s.attention_factor.has_value()) {
    rope.attention_factor = static_cast<float>(*s.attention_factor);
  } else if (s.mscale.value_or(0.0) != 0.0 && s.mscale_all_dim.value_or(0.0) != 0.0) {
    rope.attention_factor =
        static_cast<float>(YarnMscale(factor, *s.mscale) / YarnMscale(factor, *s.mscale_all_dim));
  } else {
    rope.attention_factor = static_cast<float>(YarnMscale(factor, 1.0));
  }
  auto correction_dim = [&](double rotations) {
    return (static_cast<double>(rot_dim) * std::log(original / (rotations * 2 * M_PI))) /
           (2 * std::log(base));
  };
  double low = correction_dim(beta_fast);
  double high = correction_dim(beta_slow);
  if (s.truncate.value_or(true)) {
    low = std::floor(low);
    high = std::ceil(high);
  }
  low = std::max(low, 0.0);
  high = std::min(high, static_cast<double>(rot_dim - 1));
  if (low == high) high += 0.001;  // avoid a division by zero in the ramp
  for (int64_t i = 0; i < half; ++i) {
    float ramp = static_cast<float>((static_cast<double>(i) - low) / (high - low));
    ramp = std::clamp(ramp, 0.0f, 1.0f);
    float extrapolation_factor = 1.0f - ramp;
    float extrapolation = 1.0f / static_cast<float>(pos_freq[i]);
    float interpolation = 1.0f / (static_cast<float>(factor) * static_cast<float>(pos_freq[i]));
    rope.inv_freq[i] = interpolation * (1.0f - extrapolation_factor) +
                       extrapolation * extrapolation_factor;
  }
  return rope;
}

namespace {
float RopeCos(const Rope& r, int64_t pos, int64_t i) {
  return std::cos(static_cast<float>(pos) * r.inv_freq[i]) * r.attention_factor;
}
float RopeSin(const Rope& r, int64_t pos, int64_t i) {
  return std::sin(static_cast<float>(pos) * r.inv_freq[i]) * r.attention_factor;
}

// Rows of Table for positions start_pos .. start_pos + n - 1 into out [n, rot_dim].
void FillTable(const Rope& r, int64_t start_pos, int64_t n, float* out) {
  const int64_t half = r.rot_dim / 2;
  for (int64_t p = 0; p < n; ++p) {
    for (int64_t i = 0; i < half; ++i) {
      out[p * r.rot_dim + i] = RopeCos(r, start_pos + p, i);
      out[p * r.rot_dim + half + i] = RopeSin(r, start_pos + p, i);
    }
  }
}
}  // namespace

std::vector<float> Rope::Table(int64_t start_pos, int64_t n) const {
  std::vector<float> t(static_cast<size_t>(n * rot_dim));
  FillTable(*this, start_pos, n, t.data());
  return t;
}

void Rope::Apply(float* x, int64_t heads, int64_t stride, int64_t pos) const {
  thread_local std::vector<float> cos_sin;
  cos_sin.resize(static_cast<size_t>(rot_dim));
  FillTable(*this, pos, 1, cos_sin.data());
  Apply(x, heads, stride, cos_sin.data());
}

void Rope::Apply(float* x, int64_t heads, int64_t stride, const float* cos_sin) const {
  const int64_t half = rot_dim / 2;
  for (int64_t i = 0; i < half; ++i) {
    const float c = cos_sin[i], s = cos_sin[half + i];
    for (int64_t h = 0; h < heads; ++h) {
      float* v = x + h * stride;
      const int64_t a = interleaved ? 2 * i : i;
      const int64_t b = interleaved ? 2 * i + 1 : i + half;
      const float x1 = v[a], x2 = v[b];
      v[a] = x1 * c - x2 * s;
      v[b] = x2 * c + x1 * s;
    }
  }
}

}  // namespace krasis
