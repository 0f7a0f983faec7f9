// tokenizer.json pre-tokenizers (see pre_tokenizer.h). The delimiter
// behaviors follow Hugging Face's SplitDelimiterBehavior: the text is cut into
// alternating unmatched / matched parts, which are then kept, dropped or glued
// to a neighbour.
#include "common/tokenizer/pre_tokenizer.h"

#include <string>
#include <utility>
#include <vector>

#include "common/status.h"
#include "common/tokenizer/byte_level.h"
#include "common/tokenizer/regex.h"
#include "common/tokenizer/utf8.h"

namespace krasis::tokenizer {
namespace {

enum class Behavior { kRemoved, kIsolated, kMergedWithPrevious, kMergedWithNext, kContiguous };

struct Part {
  size_t begin, end;
  bool is_match;
};

// Applies `behavior` to `parts` (which cover `text` in order) and emits the
// non-empty results.
void EmitParts(std::string_view text, const std::vector<Part>& parts, Behavior behavior,
               PieceSink sink) {
  auto emit = [&](size_t b, size_t e) {
    if (e > b) sink(text.substr(b, e - b));
  };
  switch (behavior) {
    case Behavior::kRemoved:
      for (const Part& p : parts) {
        if (!p.is_match) emit(p.begin, p.end);
      }
      return;
    case Behavior::kIsolated:
      for (const Part& p : parts) emit(p.begin, p.end);
      return;
    case Behavior::kMergedWithPrevious:
    case Behavior::kContiguous: {
      // A match joins the part before it (MergedWithPrevious: only the first
      // of consecutive matches; Contiguous: any part of the same kind).
      std::vector<std::pair<size_t, size_t>> out;
      bool previous_match = false;
      for (const Part& p : parts) {
        const bool join = behavior == Behavior::kContiguous ? p.is_match == previous_match
                                                            : p.is_match && !previous_match;
        if (join && !out.empty()) {
          out.back().second = p.end;
        } else {
          out.emplace_back(p.begin, p.end);
        }
        previous_match = p.is_match;
      }
      for (const auto& [b, e] : out) emit(b, e);
      return;
    }
    case Behavior::kMergedWithNext: {
      std::vector<std::pair<size_t, size_t>> out;  // built right to left
      bool previous_match = false;
      for (auto it = parts.rbegin(); it != parts.rend(); ++it) {
        if (it->is_match && !previous_match && !out.empty()) {
          out.back().first = it->begin;
        } else {
          out.emplace_back(it->begin, it->end);
        }
        previous_match = it->is_match;
      }
      for (auto it = out.rbegin(); it != out.rend(); ++it) emit(it->first, it->second);
      return;
    }
  }
}

// Turns match offsets into parts covering all of `size` bytes.
void MatchesToParts(const std::vector<std::pair<size_t, size_t>>& matches, size_t size, bool invert,
                    std::vector<Part>* parts) {
  size_t prev = 0;
  for (const auto& [b, e] : matches) {
    if (b > prev) parts->push_back({prev, b, invert});
    parts->push_back({b, e, !invert});
    prev = e;
  }
  if (prev < size) parts->push_back({prev, size, invert});
}

class SplitPreTokenizer : public PreTokenizer {
 public:
  SplitPreTokenizer(std::unique_ptr<Regex> pattern, Behavior behavior, bool invert)
      : pattern_(std::move(pattern)), behavior_(behavior), invert_(invert) {}

  void Split(std::string_view piece, PieceSink sink) const override {
    std::vector<std::pair<size_t, size_t>> matches;
    pattern_->FindAll(piece, &matches);
    if (behavior_ == Behavior::kIsolated) {  // the common case, without a parts vector
      size_t prev = 0;
      for (const auto& [b, e] : matches) {
        if (b > prev) sink(piece.substr(prev, b - prev));
        if (e > b) sink(piece.substr(b, e - b));
        prev = e;
      }
      if (prev < piece.size()) sink(piece.substr(prev));
      return;
    }
    std::vector<Part> parts;
    MatchesToParts(matches, piece.size(), invert_, &parts);
    EmitParts(piece, parts, behavior_, sink);
  }

 private:
  std::unique_ptr<Regex> pattern_;
  Behavior behavior_;
  bool invert_;
};

class ByteLevelPreTokenizer : public PreTokenizer {
 public:
  ByteLevelPreTokenizer(bool add_prefix_space, std::unique_ptr<Regex> regex)
      : add_prefix_space_(add_prefix_space), regex_(std::move(regex)) {}

  void Split(std::string_view piece, PieceSink sink) const override {
    std::string prefixed;
    if (add_prefix_space_ && !piece.empty() && piece.front() != ' ') {
      prefixed.reserve(piece.size() + 1);
      prefixed += ' ';
      prefixed.append(piece);
      piece = prefixed;
    }
    const ByteLevelAlphabet& alphabet = ByteLevelAlphabet::Get();
    std::string mapped;
    auto map_and_emit = [&](std::string_view word) {
      mapped.clear();
      alphabet.EncodeAppend(word, &mapped);
      sink(mapped);
    };
    if (regex_ == nullptr) {
      if (!piece.empty()) map_and_emit(piece);
      return;
    }
    std::vector<std::pair<size_t, size_t>> matches;
    regex_->FindAll(piece, &matches);
    size_t prev = 0;
    for (const auto& [b, e] : matches) {
      if (b > prev) map_and_emit(piece.substr(prev, b - prev));
      if (e > b) map_and_emit(piece.substr(b, e - b));
      prev = e;
    }
    if (prev < piece.size()) map_and_emit(piece.substr(prev));
  }

 private:
  bool add_prefix_space_;
  std::unique_ptr<Regex> regex_;  // the GPT-2 regex when use_regex, else null
};

class DigitsPreTokenizer : public PreTokenizer {
 public:
  explicit DigitsPreTokenizer(bool individual) : individual_(individual) {}

  void Split(std::string_view piece, PieceSink sink) const override {
    std::vector<Part> parts;
    size_t i = 0, gap_start = 0;
    while (i < piece.size()) {
      size_t len = 0;
      const char32_t cp = DecodeUtf8(piece, i, &len);
      if (IsNumeric(cp)) {
        if (i > gap_start) parts.push_back({gap_start, i, false});
        parts.push_back({i, i + len, true});
        gap_start = i + len;
      }
      i += len;
    }
    if (gap_start < piece.size()) parts.push_back({gap_start, piece.size(), false});
    EmitParts(piece, parts, individual_ ? Behavior::kIsolated : Behavior::kContiguous, sink);
  }

 private:
  bool individual_;
};

class SequencePreTokenizer : public PreTokenizer {
 public:
  explicit SequencePreTokenizer(std::vector<std::unique_ptr<PreTokenizer>> steps)
      : steps_(std::move(steps)) {}

  void Split(std::string_view piece, PieceSink sink) const override { Run(0, piece, sink); }

 private:
  void Run(size_t i, std::string_view piece, PieceSink sink) const {
    if (i == steps_.size()) {
      sink(piece);
      return;
    }
    steps_[i]->Split(piece, [&](std::string_view p) { Run(i + 1, p, sink); });
  }

  std::vector<std::unique_ptr<PreTokenizer>> steps_;
};

// The GPT-2 pre-tokenization regex used by ByteLevel when use_regex is set.
constexpr std::string_view kGpt2Pattern =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

absl::StatusOr<Behavior> ParseBehavior(const Json& j, std::string_view what) {
  ASSIGN_OR_RETURN(const std::string name, StringField(j, "behavior", what));
  if (name == "Removed") return Behavior::kRemoved;
  if (name == "Isolated") return Behavior::kIsolated;
  if (name == "MergedWithPrevious") return Behavior::kMergedWithPrevious;
  if (name == "MergedWithNext") return Behavior::kMergedWithNext;
  if (name == "Contiguous") return Behavior::kContiguous;
  return InvalidArgumentError(what, ": unsupported behavior '", name, "'");
}

}  // namespace

absl::StatusOr<std::unique_ptr<PreTokenizer>> PreTokenizerFromJson(const Json& j) {
  if (j.is_null()) return nullptr;
  ASSIGN_OR_RETURN(const std::string type, ComponentType(j, "pre_tokenizer"));
  const std::string what = StrCat("pre_tokenizer ", type);
  if (type == "Split") {
    auto it = j.find("pattern");
    if (it == j.end()) return InvalidArgumentError(what, ": missing field 'pattern'");
    ASSIGN_OR_RETURN(auto pattern, PatternFromJson(*it, what));
    ASSIGN_OR_RETURN(const Behavior behavior, ParseBehavior(j, what));
    ASSIGN_OR_RETURN(const bool invert, BoolField(j, "invert", false, what));
    return std::make_unique<SplitPreTokenizer>(std::move(pattern), behavior, invert);
  }
  if (type == "ByteLevel") {
    ASSIGN_OR_RETURN(const bool prefix, BoolField(j, "add_prefix_space", true, what));
    ASSIGN_OR_RETURN(const bool use_regex, BoolField(j, "use_regex", true, what));
    std::unique_ptr<Regex> regex;
    if (use_regex) {
      ASSIGN_OR_RETURN(regex, Regex::Compile(kGpt2Pattern));
    }
    return std::make_unique<ByteLevelPreTokenizer>(prefix, std::move(regex));
  }
  if (type == "Digits") {
    ASSIGN_OR_RETURN(const bool individual, BoolField(j, "individual_digits", false, what));
    return std::make_unique<DigitsPreTokenizer>(individual);
  }
  if (type == "Sequence") {
    auto it = j.find("pretokenizers");
    if (it == j.end() || !it->is_array()) {
      return InvalidArgumentError(what, ": field 'pretokenizers' must be an array");
    }
    std::vector<std::unique_ptr<PreTokenizer>> steps;
    for (const Json& step : *it) {
      ASSIGN_OR_RETURN(auto pre, PreTokenizerFromJson(step));
      if (pre != nullptr) steps.push_back(std::move(pre));
    }
    return std::make_unique<SequencePreTokenizer>(std::move(steps));
  }
  return InvalidArgumentError("unsupported pre_tokenizer type '", type, "'");
}

}  // namespace krasis::tokenizer
