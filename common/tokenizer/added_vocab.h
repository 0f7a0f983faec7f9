// Added tokens (special tokens like <|im_start|> and extra tokens like
// <tool_call>) and the matcher that finds them in text before any
// normalization or pre-tokenization, as Hugging Face's AddedVocabulary does:
//
//  * matching is leftmost-longest over all added tokens (a byte trie);
//  * tokens with normalized=false match the raw text, tokens with
//    normalized=true match the normalized text (their content normalized too);
//  * single_word rejects a match glued to a word character on either side;
//    lstrip / rstrip make the match swallow adjacent whitespace;
//  * with parse_special off, special tokens are not matched (their text is
//    encoded as ordinary text), while non-special added tokens still are.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace krasis::tokenizer {

class Normalizer;

struct AddedToken {
  int32_t id = -1;
  std::string content;
  bool single_word = false;
  bool lstrip = false;
  bool rstrip = false;
  bool normalized = false;
  bool special = false;
};

// A piece of text after splitting out added tokens: either the id of an added
// token (covering [begin, end), stripped whitespace included) or plain text
// (id == -1).
struct Segment {
  size_t begin;
  size_t end;
  int32_t id;
};

// Finds one class of added tokens (raw or normalized) in text.
class AddedTokenMatcher {
 public:
  AddedTokenMatcher() = default;
  // `tokens` are the tokens to find, `contents` the strings to match for them.
  void Build(const std::vector<const AddedToken*>& tokens,
             const std::vector<std::string>& contents);
  bool empty() const { return patterns_.empty(); }

  // Splits `text` into segments covering it in order.
  void Split(std::string_view text, bool parse_special, std::vector<Segment>* out) const;

 private:
  struct Node {
    std::vector<std::pair<unsigned char, int32_t>> children;
    int32_t pattern = -1;  // index into patterns_ when a token ends here
  };
  // Longest pattern starting at text[pos]: (pattern index, length) or (-1, 0).
  std::pair<int32_t, size_t> LongestAt(std::string_view text, size_t pos) const;

  std::vector<Node> nodes_;               // nodes_[0] is the root
  std::array<int32_t, 256> root_next_{};  // root's children by first byte, -1 if none
  std::vector<const AddedToken*> patterns_;
};

}  // namespace krasis::tokenizer
