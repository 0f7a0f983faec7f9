// The arguments of Ops::Attention, in a header of their own so that the
// reference kernels and the Ops interface can both name them.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>

#include "common/dtype.h"

namespace krasis {

// Causal attention of one sequence's new tokens over its cached keys and values
// (MHA / GQA / MQA; absorbed MLA is MQA over the latent). Token t of the n new
// ones sits at position start_pos + t and sees positions 0 .. start_pos + t.
// The cache is paged: positions [b * block_size, (b + 1) * block_size) are rows
// `slot_stride` elements of `kv_dtype` (F32, BF16 or F16) apart starting at
// block_row(b); a row holds the keys (kv_heads x head_dim elements at k_offset)
// and values (kv_heads x v_dim at v_offset). Query head h uses kv head
// h / (heads / kv_heads). Kernels widen the stored elements to float as they read.
struct AttentionArgs {
  const float* q = nullptr;  // [n, heads, head_dim]
  int64_t n = 0, start_pos = 0;
  int64_t heads = 0, kv_heads = 0, head_dim = 0, v_dim = 0;
  float scale = 1.0f;
  int64_t block_size = 0, slot_stride = 0, k_offset = 0, v_offset = 0;
  DType kv_dtype = DType::kF32;
  std::function<const std::byte*(int64_t block)> block_row;
  float* out = nullptr;  // [n, heads, v_dim]
};

}  // namespace krasis
