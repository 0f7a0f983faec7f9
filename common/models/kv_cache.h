// Paged KV cache for the reference engine (and the shape of the decode worker's).
//
// Memory is a pool of fixed-size blocks; a block holds `block_size` token slots
// for every attention layer at once. A sequence owns a block table (block ids in
// position order), so token t of a sequence lives in block table[t / block_size],
// slot t % block_size. What a slot stores per layer depends on the layer:
//   GQA:  k [kv_heads, head_dim] then v [kv_heads, v_dim]
//   MLA:  the compressed latent [kv_lora_rank] then the rope key [qk_rope_head_dim]
//   linear attention (Gated DeltaNet): nothing; its recurrent and conv state live
//   in the sequence (fixed size, independent of length).
// Elements are stored as F32, BF16 or F16 (the cache's dtype; the workers use
// BF16 by default, the reference tests F32). Everything outside the cache sees
// floats: StoreRow/ReadRows/WriteRows convert (round to nearest even), and the
// attention kernels widen the stored elements as they read them.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "common/dtype.h"

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace krasis {

class PagedKvCache {
 public:
  // floats_per_token[l]: per-token elements of layer l (0 for linear-attention
  // layers). dtype: kF32, kBF16 or kF16 (anything else is treated as kF32).
  PagedKvCache(int64_t num_blocks, int64_t block_size, std::vector<int64_t> floats_per_token,
               DType dtype = DType::kF32);

  int64_t block_size() const { return block_size_; }
  int64_t num_blocks() const { return num_blocks_; }
  int64_t free_blocks() const { return static_cast<int64_t>(free_.size()); }

  // Takes a free block; kResourceExhausted when none is left.
  absl::StatusOr<int32_t> Allocate();
  void Release(int32_t block);

  DType dtype() const { return dtype_; }
  // Bytes of one stored element.
  size_t ElementBytes() const { return DTypeSize(dtype_); }
  // The slot of layer `layer` for `slot` (0..block_size-1) in `block`: the
  // first of LayerFloats(layer) elements of dtype().
  std::byte* Slot(int32_t block, int layer, int64_t slot);
  // Elements between consecutive slots of a block (every layer's row of a token).
  int64_t SlotStride() const { return floats_per_slot_; }
  // Elements per token that layer `layer` keeps.
  int64_t LayerFloats(int layer) const { return layer_floats_[layer]; }
  int num_layers() const { return static_cast<int>(layer_floats_.size()); }

  // Converts `count` floats into the elements at `dst` / `count` elements at
  // `src` into floats.
  void Store(const float* src, int64_t count, std::byte* dst) const;
  void Load(const std::byte* src, int64_t count, float* dst) const;

 private:
  int64_t num_blocks_;
  int64_t block_size_;
  std::vector<int64_t> layer_floats_;
  std::vector<int64_t> layer_offset_;  // floats into a token's row
  int64_t floats_per_slot_ = 0;
  DType dtype_;
  std::vector<std::byte> storage_;
  std::vector<int32_t> free_;
};

// The --kv-cache-dtype flag's values: "bf16", "f16" or "f32" (also "bfloat16",
// "float16", "fp16", "float32", "fp32"); kInvalidArgument naming the flag otherwise.
absl::StatusOr<DType> ParseKvCacheDtype(const std::string& name);

// Per-layer recurrent state of a linear-attention layer.
struct LinearState {
  std::vector<float> conv;       // [conv_dim, kernel - 1]: the last inputs, oldest first
  std::vector<float> recurrent;  // [value_heads, key_dim, value_dim]
};

// One sequence in the cache.
struct SequenceState {
  int64_t num_tokens = 0;              // tokens already in the cache
  std::vector<int32_t> block_table;    // block ids in position order
  std::vector<LinearState> linear;     // indexed by layer (empty for other layers)

  // Makes room for `total_tokens`, taking blocks from `cache`.
  absl::Status Reserve(PagedKvCache& cache, int64_t total_tokens);
  // Returns every block to `cache` and forgets the sequence.
  void Release(PagedKvCache& cache);
  // The slot of token `pos` in layer `layer`.
  std::byte* Slot(PagedKvCache& cache, int layer, int64_t pos) const {
    return cache.Slot(block_table[pos / cache.block_size()], layer, pos % cache.block_size());
  }
  // Stores `count` floats at element `offset` of token `pos`'s row in layer `layer`.
  void StoreRow(PagedKvCache& cache, int layer, int64_t pos, int64_t offset, const float* src,
                int64_t count) const {
    cache.Store(src, count, Slot(cache, layer, pos) + offset * static_cast<int64_t>(cache.ElementBytes()));
  }
  // Copies layer `layer`'s rows of tokens [first, first + count) out of / into
  // the cache (count * cache.LayerFloats(layer) floats), for moving KV between
  // workers.
  void ReadRows(PagedKvCache& cache, int layer, int64_t first, int64_t count, float* out) const;
  void WriteRows(PagedKvCache& cache, int layer, int64_t first, int64_t count, const float* in) const;
  // The same from elements already in the cache's dtype (count * LayerFloats(layer)
  // of them), copied without conversion.
  void WriteRawRows(PagedKvCache& cache, int layer, int64_t first, int64_t count, const std::byte* in) const;
};

}  // namespace krasis
