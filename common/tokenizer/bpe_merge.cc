// The BPE merge loop and the merge table (see bpe_model.h).
//
// A word starts as one symbol per character (byte-level words: one per byte)
// and the lowest-ranked adjacent pair is merged, leftmost first among equal
// ranks, until no pair has a merge. Short words use a linear scan over a
// small array; long ones (CJK runs, base64, long runs of one character) a
// binary heap of candidates over a linked list, O(n log n) as in Hugging Face.
#include <algorithm>
#include <array>
#include <limits>

#include "common/tokenizer/bpe_model.h"
#include "common/tokenizer/utf8.h"

namespace krasis::tokenizer {
namespace {

constexpr size_t kShortWord = 48;  // symbols; above this the heap is used
constexpr int32_t kNoRank = std::numeric_limits<int32_t>::max();

uint64_t PairKey(int32_t left, int32_t right) {
  return (static_cast<uint64_t>(static_cast<uint32_t>(left)) << 32) | static_cast<uint32_t>(right);
}

size_t HashKey(uint64_t key) {
  key *= 0x9E3779B97F4A7C15ull;
  return static_cast<size_t>(key ^ (key >> 29));
}

// A symbol of a long word: a token id in a doubly linked list by index.
struct Symbol {
  int32_t id;
  int32_t prev;
  int32_t next;
  bool alive;
};

// A candidate merge of the symbol at `pos` with its right neighbour.
struct Candidate {
  int32_t rank;
  int32_t pos;
  int32_t new_id;
  int32_t left_id;  // the pair this candidate was made for
  int32_t right_id;
  // std::push_heap builds a max-heap; invert so the lowest rank, then the
  // leftmost position, comes out first.
  bool operator<(const Candidate& o) const { return rank != o.rank ? rank > o.rank : pos > o.pos; }
};

}  // namespace

void BpeModel::MergeTable::Reserve(size_t n) {
  size_t capacity = 16;
  while (capacity < n + n / 2) capacity *= 2;  // load factor at most 2/3
  slots_.assign(capacity, Slot{});
  mask_ = capacity - 1;
  size_ = 0;
}

size_t BpeModel::MergeTable::SlotOf(uint64_t key) const {
  size_t i = HashKey(key) & mask_;
  while (slots_[i].key != key && slots_[i].key != kEmpty) i = (i + 1) & mask_;
  return i;
}

void BpeModel::MergeTable::Insert(int32_t left, int32_t right, Merge merge) {
  if ((size_ + 1) * 3 > slots_.size() * 2) {  // grow: rehash every entry
    std::vector<Slot> old = std::move(slots_);
    Reserve(std::max<size_t>(16, old.size()));
    for (const Slot& slot : old) {
      if (slot.key != kEmpty) {
        slots_[SlotOf(slot.key)] = slot;
        ++size_;
      }
    }
  }
  const uint64_t key = PairKey(left, right);
  Slot& slot = slots_[SlotOf(key)];
  if (slot.key == kEmpty) ++size_;
  slot.key = key;
  slot.merge = merge;
}

const BpeModel::Merge* BpeModel::MergeTable::Find(int32_t left, int32_t right) const {
  if (slots_.empty()) return nullptr;
  const Slot& slot = slots_[SlotOf(PairKey(left, right))];
  return slot.key == kEmpty ? nullptr : &slot.merge;
}

void BpeModel::MergeWord(std::string_view word, std::vector<int32_t>* out) const {
  thread_local std::vector<int32_t> ids;
  ids.clear();
  InitialSymbols(word, &ids);
  if (ids.size() <= kShortWord) {
    MergeShort(&ids);
  } else {
    MergeLong(&ids);
  }
  out->insert(out->end(), ids.begin(), ids.end());
}

void BpeModel::InitialSymbols(std::string_view word, std::vector<int32_t>* ids) const {
  thread_local std::string key;
  const bool decorate = !continuing_subword_prefix_.empty() || !end_of_word_suffix_.empty();
  size_t i = 0;
  while (i < word.size()) {
    const size_t len = std::min(Utf8SeqLen(static_cast<unsigned char>(word[i])), word.size() - i);
    const std::string_view raw = word.substr(i, len);
    const bool first = i == 0;
    i += len;
    if (!decorate && len <= 2) {  // the byte-level alphabet: a table lookup
      size_t unused = 0;
      const char32_t cp =
          len == 1 ? static_cast<unsigned char>(raw[0]) : DecodeUtf8(raw, 0, &unused);
      if (const int32_t id = char_ids_[cp]; id >= 0) {
        ids->push_back(id);
        continue;
      }
    } else {
      std::string_view ch = raw;
      if (decorate) {
        key.clear();
        if (!first) key += continuing_subword_prefix_;
        key.append(raw);
        if (i == word.size()) key += end_of_word_suffix_;
        ch = key;
      }
      if (auto id = Find(ch)) {
        ids->push_back(*id);
        continue;
      }
    }
    if (byte_fallback_ && std::all_of(raw.begin(), raw.end(), [&](char c) {
          return byte_ids_[static_cast<unsigned char>(c)] >= 0;
        })) {
      for (char c : raw) ids->push_back(byte_ids_[static_cast<unsigned char>(c)]);
      continue;
    }
    if (unk_id_ && !(fuse_unk_ && !ids->empty() && ids->back() == *unk_id_)) {
      ids->push_back(*unk_id_);
    }
    // Without unk_token an unknown character is dropped, as Hugging Face does.
  }
}

void BpeModel::MergeShort(std::vector<int32_t>* ids) const {
  size_t n = ids->size();
  if (n < 2) return;
  int32_t* id = ids->data();
  std::array<Merge, kShortWord> pair;  // pair[k]: merge of id[k] and id[k + 1]
  auto lookup = [&](size_t k) {
    const Merge* m = FindMerge(id[k], id[k + 1]);
    pair[k] = m != nullptr ? *m : Merge{kNoRank, -1};
  };
  for (size_t k = 0; k + 1 < n; ++k) lookup(k);
  while (true) {
    size_t best = 0;
    for (size_t k = 1; k + 1 < n; ++k) {
      if (pair[k].rank < pair[best].rank) best = k;
    }
    if (pair[best].rank == kNoRank) break;
    id[best] = pair[best].new_id;
    std::copy(id + best + 2, id + n, id + best + 1);
    std::copy(pair.begin() + best + 1, pair.begin() + n - 1, pair.begin() + best);
    --n;
    if (n < 2) break;
    if (best > 0) lookup(best - 1);
    if (best + 1 < n) lookup(best);
  }
  ids->resize(n);
}

void BpeModel::MergeLong(std::vector<int32_t>* ids) const {
  thread_local std::vector<Symbol> symbols;
  thread_local std::vector<Candidate> heap;
  symbols.clear();
  heap.clear();
  const auto n = static_cast<int32_t>(ids->size());
  for (int32_t k = 0; k < n; ++k) {
    symbols.push_back({(*ids)[static_cast<size_t>(k)], k - 1, k + 1 < n ? k + 1 : -1, true});
  }
  auto consider = [&](int32_t pos) {
    if (pos < 0) return;
    const Symbol& s = symbols[static_cast<size_t>(pos)];
    if (s.next < 0) return;
    const int32_t right_id = symbols[static_cast<size_t>(s.next)].id;
    if (const Merge* m = FindMerge(s.id, right_id)) {
      heap.push_back({m->rank, pos, m->new_id, s.id, right_id});
      std::push_heap(heap.begin(), heap.end());
    }
  };
  for (int32_t p = 0; p + 1 < n; ++p) consider(p);
  while (!heap.empty()) {
    std::pop_heap(heap.begin(), heap.end());
    const Candidate top = heap.back();
    heap.pop_back();
    Symbol& left = symbols[static_cast<size_t>(top.pos)];
    if (!left.alive || left.next < 0) continue;
    Symbol& right = symbols[static_cast<size_t>(left.next)];
    // A pair that changed since the candidate was made is stale (its merge
    // would produce a different, longer string).
    if (left.id != top.left_id || right.id != top.right_id) continue;
    left.id = top.new_id;
    right.alive = false;
    left.next = right.next;
    if (left.next >= 0) symbols[static_cast<size_t>(left.next)].prev = top.pos;
    consider(left.prev);
    consider(top.pos);
  }
  ids->clear();
  for (int32_t p = 0; p >= 0; p = symbols[static_cast<size_t>(p)].next) {
    ids->push_back(symbols[static_cast<size_t>(p)].id);
  }
}

}  // namespace krasis::tokenizer
