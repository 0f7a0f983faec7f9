// The decode worker's KV memory: a paged cache sized by a RAM budget, whose full
// blocks are named by chained token hashes (block_hash.h) and shared between
// sequences with the same prefix (vLLM's automatic prefix caching).
//
// A block is in one of three states: referenced by running sequences; cached
// (unreferenced, named by its hash, kept in LRU order for reuse); or free. A new
// block comes from the free list, else by evicting the least recently used
// cached block. For hybrid models (linear-attention layers), a prefix can only be
// resumed where the linear state after it is known, so the manager also keeps
// state snapshots at chosen block boundaries (LRU-bounded) and only matches
// prefixes that end at one.
#pragma once

#include <cstdint>
#include <list>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <unordered_map>
#include <vector>

#include "absl/status/status.h"
#include "common/models/model.h"
#include "services/decode/block_hash.h"

namespace krasis {

struct KvManagerOptions {
  int64_t block_size = 16;
  int64_t budget_bytes = 1ll << 30;  // KV RAM budget
  int64_t max_snapshots = 64;        // linear-state snapshots kept (hybrid models)
  DType kv_dtype = DType::kBF16;     // what the cache stores: BF16, F16 or F32
};

struct KvStats {
  int64_t blocks_total = 0;
  int64_t blocks_used = 0;     // referenced by sequences
  int64_t blocks_cached = 0;   // unreferenced, reusable by hash
  int64_t bytes_per_block = 0;
  int64_t evictions = 0;
};

class KvManager {
 public:
  KvManager(const DecoderModel& model, const KvManagerOptions& options);

  PagedKvCache& cache() { return *cache_; }
  const PagedKvCache& cache() const { return *cache_; }
  int64_t block_size() const { return options_.block_size; }
  bool hybrid() const { return hybrid_; }

  // How many leading blocks of `hashes` can be resumed (cached, and for hybrid
  // models ending at a snapshot).
  int64_t MatchBlocks(std::span<const BlockHash> hashes) const;

  // Starts `seq` (already InitSequence'd) on the first `blocks` blocks of
  // `hashes` (a MatchBlocks result): references them and restores the snapshot.
  void Attach(SequenceState& seq, std::span<const BlockHash> hashes, int64_t blocks);

  // Gives `seq` blocks for `total_tokens`, evicting cached blocks as needed;
  // kResourceExhausted when even eviction cannot make room.
  absl::Status Reserve(SequenceState& seq, int64_t total_tokens);
  // Blocks that Reserve could still provide (free + evictable).
  int64_t AvailableBlocks() const;

  // Names block `index` of `seq` (now full) by `hash`, so later requests can share it.
  void Publish(const SequenceState& seq, int64_t index, const BlockHash& hash);
  // Keeps the linear state of `seq` (at a block boundary) under `hash`.
  void Snapshot(const SequenceState& seq, const BlockHash& hash);

  // Drops the sequence's references; named blocks stay cached.
  void Release(SequenceState& seq);

  KvStats Stats() const;

 private:
  struct BlockMeta {
    int refs = 0;
    BlockHash hash;                           // empty: unnamed
    std::list<int32_t>::iterator lru;         // valid while cached
    bool in_lru = false;
  };
  std::optional<int32_t> TakeBlock();
  void Ref(int32_t block);
  void Unref(int32_t block);

  KvManagerOptions options_;
  bool hybrid_ = false;
  std::unique_ptr<PagedKvCache> cache_;
  std::vector<BlockMeta> meta_;
  std::vector<int32_t> free_;
  std::list<int32_t> lru_;  // cached blocks, least recently used first
  std::unordered_map<BlockHash, int32_t> by_hash_;
  std::unordered_map<BlockHash, std::vector<LinearState>> snapshots_;
  std::list<BlockHash> snapshot_lru_;
  int64_t bytes_per_block_ = 0;
  int64_t evictions_ = 0;
};

}  // namespace krasis
