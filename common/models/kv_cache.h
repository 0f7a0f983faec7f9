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
// Values are fp32 here; the decode worker's cache stores BF16/FP16.
#pragma once

#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace krasis {

class PagedKvCache {
 public:
  // floats_per_token[l]: per-token floats of layer l (0 for linear-attention layers).
  PagedKvCache(int64_t num_blocks, int64_t block_size, std::vector<int64_t> floats_per_token);

  int64_t block_size() const { return block_size_; }
  int64_t num_blocks() const { return num_blocks_; }
  int64_t free_blocks() const { return static_cast<int64_t>(free_.size()); }

  // Takes a free block; kResourceExhausted when none is left.
  absl::StatusOr<int32_t> Allocate();
  void Release(int32_t block);

  // The slot of layer `layer` for `slot` (0..block_size-1) in `block`.
  float* Slot(int32_t block, int layer, int64_t slot);
  // Floats between consecutive slots of a block (every layer's row of a token).
  int64_t SlotStride() const { return floats_per_slot_; }
  // Floats per token that layer `layer` keeps.
  int64_t LayerFloats(int layer) const { return layer_floats_[layer]; }
  int num_layers() const { return static_cast<int>(layer_floats_.size()); }

 private:
  int64_t num_blocks_;
  int64_t block_size_;
  std::vector<int64_t> layer_floats_;
  std::vector<int64_t> layer_offset_;  // floats into a token's row
  int64_t floats_per_slot_ = 0;
  std::vector<float> storage_;
  std::vector<int32_t> free_;
};

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
  float* Slot(PagedKvCache& cache, int layer, int64_t pos) const {
    return cache.Slot(block_table[pos / cache.block_size()], layer, pos % cache.block_size());
  }
  // Copies layer `layer`'s rows of tokens [first, first + count) out of / into
  // the cache (count * cache.LayerFloats(layer) floats), for moving KV between
  // workers.
  void ReadRows(PagedKvCache& cache, int layer, int64_t first, int64_t count, float* out) const;
  void WriteRows(PagedKvCache& cache, int layer, int64_t first, int64_t count, const float* in) const;
};

}  // namespace krasis
