// Gated DeltaNet delta-rule test data and reference, shared by the CPU
// emulation of the chunked kernels (tests/models) and the GPU kernel tests
// (tests/gpu): random inputs shaped as LaunchGdnPrepare leaves them, and the
// chunked reference (ref::GatedDeltaChunked, double) over every value head.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

#include "common/kernels/reference.h"

namespace krasis {

struct GdnTestShape {
  int64_t nk, nv, dk, dv;
  int64_t conv_dim() const { return 2 * nk * dk + nv * dv; }
};

// mixed [n, conv_dim]: q (scaled by dk^-1/2) and k unit vectors per key head, v
// normal; gates [n, 2 nv]: beta uniform in [0, 1), decays uniform in [0.5, 1)
// with some near 1 and some exactly 0.
inline void MakeGdnInputs(std::mt19937& rng, const GdnTestShape& s, int64_t n, std::vector<float>& mixed,
                          std::vector<float>& gates) {
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::uniform_real_distribution<float> unit(0.0f, 1.0f);
  const int64_t conv_dim = s.conv_dim();
  mixed.resize(static_cast<size_t>(n * conv_dim));
  gates.resize(static_cast<size_t>(n * 2 * s.nv));
  for (float& x : mixed) x = normal(rng);
  for (int64_t t = 0; t < n; ++t) {
    for (int64_t h = 0; h < 2 * s.nk; ++h) {
      float* x = &mixed[static_cast<size_t>(t * conv_dim + h * s.dk)];
      ref::L2Normalize(x, s.dk, 1e-6f);
      for (int64_t i = 0; h < s.nk && i < s.dk; ++i) x[i] /= std::sqrt(static_cast<float>(s.dk));
    }
    for (int64_t h = 0; h < s.nv; ++h) {
      const float pick = unit(rng);
      float decay = 0.5f + 0.5f * unit(rng);
      if (pick < 0.2f) decay = 0.999f + 0.001f * unit(rng);
      if (pick > 0.97f) decay = 0.0f;
      gates[static_cast<size_t>(t * 2 * s.nv + h)] = unit(rng);
      gates[static_cast<size_t>(t * 2 * s.nv + s.nv + h)] = decay;
    }
  }
}

// The delta rule over n tokens for every value head (value head h reads key
// head h / (nv / nk)), chunk by chunk in double: core [n, nv dv]; state
// [nv, dk, dv] updated in place.
inline std::vector<float> GdnReference(const GdnTestShape& s, int64_t n, const std::vector<float>& mixed,
                                       const std::vector<float>& gates, std::vector<float>& state) {
  const int64_t conv_dim = s.conv_dim();
  std::vector<float> core(static_cast<size_t>(n * s.nv * s.dv));
  for (int64_t h = 0; h < s.nv; ++h) {
    const int64_t kh = h / (s.nv / s.nk);
    std::vector<float> q(static_cast<size_t>(n * s.dk)), k(q.size()), v(static_cast<size_t>(n * s.dv));
    std::vector<float> beta(static_cast<size_t>(n)), decay(beta.size()), o(v.size());
    for (int64_t t = 0; t < n; ++t) {
      const float* row = &mixed[static_cast<size_t>(t * conv_dim)];
      std::copy_n(row + kh * s.dk, s.dk, &q[static_cast<size_t>(t * s.dk)]);
      std::copy_n(row + (s.nk + kh) * s.dk, s.dk, &k[static_cast<size_t>(t * s.dk)]);
      std::copy_n(row + 2 * s.nk * s.dk + h * s.dv, s.dv, &v[static_cast<size_t>(t * s.dv)]);
      beta[static_cast<size_t>(t)] = gates[static_cast<size_t>(t * 2 * s.nv + h)];
      decay[static_cast<size_t>(t)] = gates[static_cast<size_t>(t * 2 * s.nv + s.nv + h)];
    }
    ref::GatedDeltaChunked(q.data(), k.data(), v.data(), beta.data(), decay.data(), n, s.dk, s.dv, 64,
                           &state[static_cast<size_t>(h * s.dk * s.dv)], o.data());
    for (int64_t t = 0; t < n; ++t) {
      std::copy_n(&o[static_cast<size_t>(t * s.dv)], s.dv, &core[static_cast<size_t>((t * s.nv + h) * s.dv)]);
    }
  }
  return core;
}

}  // namespace krasis
