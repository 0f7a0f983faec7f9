// Prefix-cached paged KV memory (see kv_manager.h).
#include "services/decode/kv_manager.h"

#include <algorithm>

#include "common/status.h"

namespace krasis {

KvManager::KvManager(const DecoderModel& model, const KvManagerOptions& options)
    : options_(options) {
  int64_t floats_per_token = 0;
  for (const auto& layer : model.layers) {
    floats_per_token += layer.mixer->KvFloatsPerToken();
    if (layer.mixer->KvFloatsPerToken() == 0) hybrid_ = true;
  }
  bytes_per_block_ =
      std::max<int64_t>(1, floats_per_token * static_cast<int64_t>(DTypeSize(options.kv_dtype)) * options.block_size);
  // A model whose layers all keep their state in the sequence (linear
  // attention only) stores nothing per block: cap the count, which only sizes
  // the bookkeeping (4M tokens of blocks).
  constexpr int64_t kMaxBlocks = int64_t{1} << 18;
  int64_t blocks = std::clamp<int64_t>(options.budget_bytes / bytes_per_block_, 1, kMaxBlocks);
  cache_ = model.MakeCache(blocks, options.block_size, options.kv_dtype);
  meta_.resize(static_cast<size_t>(blocks));
  // The manager owns allocation: take every block out of the cache's own pool.
  for (int64_t i = 0; i < blocks; ++i) free_.push_back(*cache_->Allocate());
  std::reverse(free_.begin(), free_.end());
}

int64_t KvManager::MatchBlocks(std::span<const BlockHash> hashes) const {
  int64_t best = 0;
  for (size_t i = 0; i < hashes.size(); ++i) {
    if (!by_hash_.contains(hashes[i])) break;
    if (!hybrid_ || snapshots_.contains(hashes[i])) best = static_cast<int64_t>(i) + 1;
  }
  return best;
}

void KvManager::Attach(SequenceState& seq, std::span<const BlockHash> hashes, int64_t blocks) {
  for (int64_t i = 0; i < blocks; ++i) {
    int32_t b = by_hash_.at(hashes[i]);
    Ref(b);
    seq.block_table.push_back(b);
  }
  seq.num_tokens = blocks * options_.block_size;
  if (hybrid_ && blocks > 0) {
    const BlockHash& h = hashes[blocks - 1];
    seq.linear = snapshots_.at(h);
    snapshot_lru_.remove(h);
    snapshot_lru_.push_back(h);
  }
}

std::optional<int32_t> KvManager::TakeBlock() {
  if (!free_.empty()) {
    int32_t b = free_.back();
    free_.pop_back();
    return b;
  }
  if (lru_.empty()) return std::nullopt;
  int32_t b = lru_.front();
  lru_.pop_front();
  BlockMeta& m = meta_[b];
  m.in_lru = false;
  by_hash_.erase(m.hash);
  snapshots_.erase(m.hash);
  snapshot_lru_.remove(m.hash);
  m.hash.clear();
  ++evictions_;
  return b;
}

int64_t KvManager::AvailableBlocks() const {
  return static_cast<int64_t>(free_.size() + lru_.size());
}

absl::Status KvManager::Reserve(SequenceState& seq, int64_t total_tokens) {
  int64_t needed = (total_tokens + options_.block_size - 1) / options_.block_size -
                   static_cast<int64_t>(seq.block_table.size());
  if (needed > AvailableBlocks()) {
    return absl::ResourceExhaustedError(
        StrCat("KV cache full: need ", needed, " more blocks of ", options_.block_size,
               " tokens, ", AvailableBlocks(), " available of ", meta_.size()));
  }
  for (int64_t i = 0; i < needed; ++i) {
    int32_t b = *TakeBlock();
    Ref(b);
    seq.block_table.push_back(b);
  }
  return absl::OkStatus();
}

void KvManager::Ref(int32_t block) {
  BlockMeta& m = meta_[block];
  if (m.in_lru) {
    lru_.erase(m.lru);
    m.in_lru = false;
  }
  ++m.refs;
}

void KvManager::Unref(int32_t block) {
  BlockMeta& m = meta_[block];
  if (--m.refs > 0) return;
  if (m.hash.empty()) {
    free_.push_back(block);
  } else {
    lru_.push_back(block);
    m.lru = std::prev(lru_.end());
    m.in_lru = true;
  }
}

void KvManager::Publish(const SequenceState& seq, int64_t index, const BlockHash& hash) {
  int32_t b = seq.block_table[index];
  if (by_hash_.contains(hash) || !meta_[b].hash.empty()) return;  // already named
  meta_[b].hash = hash;
  by_hash_[hash] = b;
}

void KvManager::Snapshot(const SequenceState& seq, const BlockHash& hash) {
  if (!hybrid_ || options_.max_snapshots <= 0 || !by_hash_.contains(hash)) return;
  if (!snapshots_.contains(hash)) {
    while (static_cast<int64_t>(snapshots_.size()) >= options_.max_snapshots) {
      snapshots_.erase(snapshot_lru_.front());
      snapshot_lru_.pop_front();
    }
    snapshot_lru_.push_back(hash);
  }
  snapshots_[hash] = seq.linear;
}

void KvManager::Release(SequenceState& seq) {
  // Release the tail first so that, among cached blocks, a prefix's first
  // blocks are the last to be evicted.
  for (auto it = seq.block_table.rbegin(); it != seq.block_table.rend(); ++it) Unref(*it);
  seq.block_table.clear();
  seq.num_tokens = 0;
}

KvStats KvManager::Stats() const {
  KvStats s;
  s.blocks_total = static_cast<int64_t>(meta_.size());
  s.blocks_cached = static_cast<int64_t>(lru_.size());
  s.blocks_used = s.blocks_total - s.blocks_cached - static_cast<int64_t>(free_.size());
  s.bytes_per_block = bytes_per_block_;
  s.evictions = evictions_;
  return s;
}

}  // namespace krasis
