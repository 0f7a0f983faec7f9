// The BPE model of tokenizer.json: vocabulary, ranked merges, and the merge
// loop that turns one pre-tokenized word into token ids.
//
// Merging (bpe_merge.cc) scans a small array for short words and uses a binary
// heap of candidate pairs for long ones (O(n log n), so CJK runs or base64
// blobs stay fast); merges are looked up in an open-addressing table keyed by
// the pair of ids. Results for words up to kMaxCachedWordBytes are kept in a
// sharded, mutex-protected cache (at most 16 x 8192 words; a full shard is
// emptied), so Tokenize() is safe to call from many threads at once.
//
// Supports merges as "a b" strings and as ["a", "b"] pairs, byte_fallback,
// ignore_merges, unk_token with fuse_unk, continuing_subword_prefix and
// end_of_word_suffix. BPE dropout (a training-time option) is rejected.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "common/tokenizer/json_util.h"

namespace krasis::tokenizer {

class BpeModel {
 public:
  static constexpr size_t kMaxCachedWordBytes = 256;  // as Hugging Face

  // Builds the model from the "model" object of tokenizer.json.
  static absl::StatusOr<std::unique_ptr<BpeModel>> FromJson(const Json& j);

  // Appends the ids of `word` (a pre-tokenized piece) to `out`.
  void Tokenize(std::string_view word, std::vector<int32_t>* out) const;

  // Drops every cached word (benchmarks measure cold encoding with it).
  void ClearCache() const;

  std::optional<int32_t> TokenToId(std::string_view token) const;
  // The token string of `id`, or nullptr when the vocabulary has no such id.
  const std::string* IdToToken(int32_t id) const;
  // One past the largest id in the vocabulary.
  int32_t id_end() const { return static_cast<int32_t>(id_to_token_.size()); }
  size_t vocab_size() const { return vocab_.size(); }
  size_t merges_size() const { return merges_.size(); }

 private:
  struct Merge {
    int32_t rank;
    int32_t new_id;
  };

  // (left id, right id) -> merge: open addressing with linear probing, one
  // 16-byte slot per entry, so a lookup usually costs a single cache miss.
  class MergeTable {
   public:
    void Reserve(size_t n);
    void Insert(int32_t left, int32_t right, Merge merge);  // later inserts win
    const Merge* Find(int32_t left, int32_t right) const;
    size_t size() const { return size_; }

   private:
    static constexpr uint64_t kEmpty = ~uint64_t{0};
    struct Slot {
      uint64_t key = kEmpty;
      Merge merge{};
    };
    size_t SlotOf(uint64_t key) const;
    std::vector<Slot> slots_;
    size_t mask_ = 0;
    size_t size_ = 0;
  };

  // Word -> ids cache, split into shards so threads rarely share a lock.
  class WordCache {
   public:
    static size_t Hash(std::string_view word);
    bool Lookup(std::string_view word, size_t hash, std::vector<int32_t>* out) const;
    void Insert(std::string_view word, size_t hash, const int32_t* ids, size_t n);
    void Clear();

   private:
    static constexpr size_t kShards = 16;
    static constexpr size_t kMaxEntriesPerShard = 8192;
    struct Shard {
      mutable std::mutex mu;
      absl::flat_hash_map<std::string, std::vector<int32_t>> map;
    };
    std::array<Shard, kShards> shards_;
  };

  BpeModel() = default;
  // bpe_merge.cc: the initial symbols of a word, and the two merge loops
  // (a linear scan for short words, a heap for long ones). Both apply the
  // lowest-ranked merge first, the leftmost one among equals.
  void MergeWord(std::string_view word, std::vector<int32_t>* out) const;
  void InitialSymbols(std::string_view word, std::vector<int32_t>* ids) const;
  void MergeShort(std::vector<int32_t>* ids) const;
  void MergeLong(std::vector<int32_t>* ids) const;
  std::optional<int32_t> Find(std::string_view token) const;
  const Merge* FindMerge(int32_t left, int32_t right) const;

  absl::flat_hash_map<std::string, int32_t> vocab_;
  std::vector<std::string> id_to_token_;
  MergeTable merges_;
  std::array<int32_t, 256> byte_ids_{};  // ids of <0xXX> tokens, -1 if absent
  std::vector<int32_t> char_ids_;        // id of each code point below U+0800 (-1 if none)
  std::optional<int32_t> unk_id_;
  std::string continuing_subword_prefix_;
  std::string end_of_word_suffix_;
  bool byte_fallback_ = false;
  bool ignore_merges_ = false;
  bool fuse_unk_ = false;
  mutable WordCache cache_;
};

}  // namespace krasis::tokenizer
