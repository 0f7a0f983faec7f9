// Rotary position embeddings as the checkpoints define them: plain RoPE, partial
// RoPE (only the first rot_dim dims of a head rotate), and YaRN (DeepSeek), in
// two pairings: "half" (rotate_half / GPT-NeoX: dim i pairs with i + rot_dim/2)
// and "interleaved" (dim 2i pairs with 2i+1; DeepSeek's complex form).
#pragma once

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "common/model_config.h"

namespace krasis {

struct Rope {
  int64_t rot_dim = 0;            // rotated dims per head (even)
  bool interleaved = false;
  float attention_factor = 1.0f;  // YaRN's scale on cos/sin
  std::vector<float> inv_freq;    // [rot_dim / 2]

  // Rotates the first rot_dim dims of each of `heads` vectors (stride `stride`
  // floats apart) for position `pos`.
  void Apply(float* x, int64_t heads, int64_t stride, int64_t pos) const;
  // The same with the position's row of Table (rot_dim / 2 cosines, then the
  // sines), so vectors rotated for one position share its cosines and sines.
  void Apply(float* x, int64_t heads, int64_t stride, const float* cos_sin) const;
  // For positions start_pos .. start_pos + n - 1: per position rot_dim / 2
  // cosines then rot_dim / 2 sines, the very values Apply uses (the GPU
  // kernel's table, cuda::LaunchRope).
  std::vector<float> Table(int64_t start_pos, int64_t n) const;
};

// Builds the rope of `config` over `rot_dim` dims (its rope_theta, and YaRN when
// rope_scaling says so; linear/dynamic scaling are rejected as unsupported).
absl::StatusOr<Rope> MakeRope(const ModelConfig& config, int64_t rot_dim, bool interleaved);

// YaRN's magnitude correction 0.1 * mscale * ln(scale) + 1 (1 for scale <= 1).
double YarnMscale(double scale, double mscale);

}  // namespace krasis
