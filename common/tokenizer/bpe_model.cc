// The BPE model: loading vocabulary and merges, and the merge loop (see
// bpe_model.h).
#include "common/tokenizer/bpe_model.h"

#include <algorithm>
#include <cstdio>

#include "absl/hash/hash.h"
#include "common/status.h"
#include "common/tokenizer/utf8.h"

namespace krasis::tokenizer {
namespace {

absl::string_view AbslView(std::string_view s) { return absl::string_view(s.data(), s.size()); }

}  // namespace

size_t BpeModel::WordCache::Hash(std::string_view word) {
  return absl::Hash<absl::string_view>()(AbslView(word));
}

bool BpeModel::WordCache::Lookup(std::string_view word, size_t hash,
                                 std::vector<int32_t>* out) const {
  const Shard& shard = shards_[(hash >> 52) % kShards];
  std::lock_guard<std::mutex> lock(shard.mu);
  auto it = shard.map.find(AbslView(word));
  if (it == shard.map.end()) return false;
  out->insert(out->end(), it->second.begin(), it->second.end());
  return true;
}

void BpeModel::WordCache::Insert(std::string_view word, size_t hash, const int32_t* ids, size_t n) {
  Shard& shard = shards_[(hash >> 52) % kShards];
  std::lock_guard<std::mutex> lock(shard.mu);
  if (shard.map.size() >= kMaxEntriesPerShard) shard.map.clear();  // crude bound on memory
  shard.map.try_emplace(std::string(word), ids, ids + n);
}

void BpeModel::WordCache::Clear() {
  for (Shard& shard : shards_) {
    std::lock_guard<std::mutex> lock(shard.mu);
    shard.map.clear();
  }
}

void BpeModel::ClearCache() const { cache_.Clear(); }

absl::StatusOr<std::unique_ptr<BpeModel>> BpeModel::FromJson(const Json& j) {
  constexpr std::string_view what = "model BPE";
  std::unique_ptr<BpeModel> m(new BpeModel());
  if (auto it = j.find("dropout"); it != j.end() && !it->is_null()) {
    if (!it->is_number() || it->get<double>() != 0.0) {
      return InvalidArgumentError(what, ": dropout is a training option and is not supported");
    }
  }
  ASSIGN_OR_RETURN(m->byte_fallback_, BoolField(j, "byte_fallback", false, what));
  ASSIGN_OR_RETURN(m->ignore_merges_, BoolField(j, "ignore_merges", false, what));
  ASSIGN_OR_RETURN(m->fuse_unk_, BoolField(j, "fuse_unk", false, what));
  ASSIGN_OR_RETURN(m->continuing_subword_prefix_,
                   OptStringField(j, "continuing_subword_prefix", "", what));
  ASSIGN_OR_RETURN(m->end_of_word_suffix_, OptStringField(j, "end_of_word_suffix", "", what));
  ASSIGN_OR_RETURN(const std::string unk, OptStringField(j, "unk_token", "", what));

  // Vocabulary.
  auto vocab_it = j.find("vocab");
  if (vocab_it == j.end() || !vocab_it->is_object()) {
    return InvalidArgumentError(what, ": field 'vocab' must be an object");
  }
  m->vocab_.reserve(vocab_it->size());
  int64_t max_id = -1;
  for (const auto& [token, id] : vocab_it->items()) {
    if (!id.is_number_integer() || id.get<int64_t>() < 0 || id.get<int64_t>() >= (1 << 30)) {
      return InvalidArgumentError(what, ": vocab entry '", token, "' has an invalid id");
    }
    m->vocab_[token] = static_cast<int32_t>(id.get<int64_t>());
    max_id = std::max(max_id, id.get<int64_t>());
  }
  m->id_to_token_.resize(static_cast<size_t>(max_id + 1));
  for (const auto& [token, id] : m->vocab_) m->id_to_token_[static_cast<size_t>(id)] = token;

  if (!unk.empty()) {
    m->unk_id_ = m->Find(unk);
    if (!m->unk_id_) return InvalidArgumentError(what, ": unk_token '", unk, "' is not in vocab");
  }
  // Single characters of up to two UTF-8 bytes (the whole byte-level
  // alphabet) get a table instead of a hash lookup.
  m->char_ids_.assign(0x800, -1);
  for (char32_t cp = 0; cp < 0x800; ++cp) {
    std::string utf8;
    AppendUtf8(cp, &utf8);
    m->char_ids_[cp] = m->Find(utf8).value_or(-1);
  }
  for (int b = 0; b < 256; ++b) {
    char name[8];
    std::snprintf(name, sizeof(name), "<0x%02X>", b);
    m->byte_ids_[b] = m->Find(name).value_or(-1);
  }

  // Merges, in rank order.
  auto merges_it = j.find("merges");
  if (merges_it == j.end() || !merges_it->is_array()) {
    return InvalidArgumentError(what, ": field 'merges' must be an array");
  }
  m->merges_.Reserve(merges_it->size());
  const std::string& prefix = m->continuing_subword_prefix_;
  int32_t rank = 0;
  for (const Json& merge : *merges_it) {
    std::string a, b;
    if (merge.is_string()) {  // "a b"
      const std::string& s = merge.get_ref<const std::string&>();
      const size_t space = s.find(' ');
      if (space == std::string::npos || s.find(' ', space + 1) != std::string::npos) {
        return InvalidArgumentError(what, ": merge ", rank, " '", s,
                                    "' is not two tokens separated by one space");
      }
      a = s.substr(0, space);
      b = s.substr(space + 1);
    } else if (merge.is_array() && merge.size() == 2 && merge[0].is_string() &&
               merge[1].is_string()) {  // ["a", "b"]
      a = merge[0].get<std::string>();
      b = merge[1].get<std::string>();
    } else {
      return InvalidArgumentError(what, ": merge ", rank,
                                  " must be a string \"a b\" or a pair [\"a\", \"b\"]");
    }
    const auto a_id = m->Find(a), b_id = m->Find(b);
    if (!a_id || !b_id) {
      return InvalidArgumentError(what, ": merge ", rank, " uses token '", !a_id ? a : b,
                                  "' that is not in vocab");
    }
    std::string merged = a;
    merged += (!prefix.empty() && b.starts_with(prefix)) ? b.substr(prefix.size()) : b;
    const auto new_id = m->Find(merged);
    if (!new_id) {
      return InvalidArgumentError(what, ": merge ", rank, " produces '", merged,
                                  "' that is not in vocab");
    }
    m->merges_.Insert(*a_id, *b_id, Merge{rank, *new_id});
    ++rank;
  }
  return m;
}

std::optional<int32_t> BpeModel::Find(std::string_view token) const {
  auto it = vocab_.find(AbslView(token));
  if (it == vocab_.end()) return std::nullopt;
  return it->second;
}

std::optional<int32_t> BpeModel::TokenToId(std::string_view token) const { return Find(token); }

const std::string* BpeModel::IdToToken(int32_t id) const {
  if (id < 0 || id >= id_end()) return nullptr;
  const std::string& token = id_to_token_[static_cast<size_t>(id)];
  if (token.empty()) return nullptr;
  return &token;
}

const BpeModel::Merge* BpeModel::FindMerge(int32_t left, int32_t right) const {
  return merges_.Find(left, right);
}

void BpeModel::Tokenize(std::string_view word, std::vector<int32_t>* out) const {
  if (word.empty()) return;
  if (ignore_merges_) {
    if (auto id = Find(word)) {
      out->push_back(*id);
      return;
    }
  }
  const bool cacheable = word.size() <= kMaxCachedWordBytes;
  const size_t hash = cacheable ? WordCache::Hash(word) : 0;
  if (cacheable && cache_.Lookup(word, hash, out)) return;
  const size_t start = out->size();
  MergeWord(word, out);
  if (cacheable) cache_.Insert(word, hash, out->data() + start, out->size() - start);
}

}  // namespace krasis::tokenizer
