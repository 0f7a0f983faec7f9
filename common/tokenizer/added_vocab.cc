// Added-token matching (see added_vocab.h).
#include "common/tokenizer/added_vocab.h"

#include <algorithm>

#include "common/tokenizer/utf8.h"

namespace krasis::tokenizer {
namespace {

// The code point that ends just before `pos` (which is > 0) and its start.
char32_t CodePointBefore(std::string_view text, size_t pos, size_t* start) {
  size_t b = pos - 1;
  while (b > 0 && (static_cast<unsigned char>(text[b]) & 0xC0) == 0x80) --b;
  size_t len = 0;
  *start = b;
  return DecodeUtf8(text, b, &len);
}

}  // namespace

void AddedTokenMatcher::Build(const std::vector<const AddedToken*>& tokens,
                              const std::vector<std::string>& contents) {
  nodes_.assign(1, Node{});
  root_next_.fill(-1);
  patterns_.clear();
  for (size_t t = 0; t < tokens.size(); ++t) {
    const std::string& content = contents[t];
    if (content.empty()) continue;
    int32_t node = 0;
    for (unsigned char c : content) {
      auto& children = nodes_[static_cast<size_t>(node)].children;
      auto it = std::find_if(children.begin(), children.end(),
                             [c](const auto& child) { return child.first == c; });
      if (it != children.end()) {
        node = it->second;
        continue;
      }
      const auto next = static_cast<int32_t>(nodes_.size());
      children.emplace_back(c, next);
      nodes_.emplace_back();  // invalidates `children`, which is not used again
      if (node == 0) root_next_[c] = next;
      node = next;
    }
    Node& end = nodes_[static_cast<size_t>(node)];
    if (end.pattern < 0) {  // the first token with this content wins
      end.pattern = static_cast<int32_t>(patterns_.size());
      patterns_.push_back(tokens[t]);
    }
  }
}

std::pair<int32_t, size_t> AddedTokenMatcher::LongestAt(std::string_view text, size_t pos) const {
  int32_t node = root_next_[static_cast<unsigned char>(text[pos])];
  std::pair<int32_t, size_t> best{-1, 0};
  size_t i = pos + 1;
  while (node >= 0) {
    const Node& n = nodes_[static_cast<size_t>(node)];
    if (n.pattern >= 0) best = {n.pattern, i - pos};
    if (i == text.size()) break;
    const auto c = static_cast<unsigned char>(text[i]);
    node = -1;
    for (const auto& [byte, child] : n.children) {
      if (byte == c) {
        node = child;
        break;
      }
    }
    ++i;
  }
  return best;
}

void AddedTokenMatcher::Split(std::string_view text, bool parse_special,
                              std::vector<Segment>* out) const {
  size_t emitted = 0;  // end of the last segment pushed
  size_t pos = 0;
  while (pos < text.size()) {
    if (root_next_[static_cast<unsigned char>(text[pos])] < 0) {
      ++pos;
      continue;
    }
    const auto [pattern, len] = LongestAt(text, pos);
    if (pattern < 0) {
      ++pos;
      continue;
    }
    const AddedToken& token = *patterns_[static_cast<size_t>(pattern)];
    size_t start = pos, stop = pos + len;
    pos = stop;  // matches never overlap, even rejected ones
    if (token.special && !parse_special) continue;
    if (token.single_word) {
      size_t unused = 0, len_after = 0;
      const bool word_before = start > 0 && IsWordChar(CodePointBefore(text, start, &unused));
      const bool word_after = stop < text.size() && IsWordChar(DecodeUtf8(text, stop, &len_after));
      if (word_before || word_after) continue;
    }
    if (token.lstrip) {
      while (start > emitted) {
        size_t prev = 0;
        if (!IsWhitespace(CodePointBefore(text, start, &prev))) break;
        start = prev;
      }
    }
    if (token.rstrip) {
      while (stop < text.size()) {
        size_t cp_len = 0;
        if (!IsWhitespace(DecodeUtf8(text, stop, &cp_len))) break;
        stop += cp_len;
      }
      pos = stop;
    }
    if (start > emitted) out->push_back({emitted, start, -1});
    out->push_back({start, stop, token.id});
    emitted = stop;
  }
  if (emitted < text.size()) out->push_back({emitted, text.size(), -1});
}

}  // namespace krasis::tokenizer
