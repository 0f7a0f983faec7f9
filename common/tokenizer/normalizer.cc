// tokenizer.json normalizers (see normalizer.h).
#include "common/tokenizer/normalizer.h"

#include <utf8proc.h>

#include <cstdlib>
#include <utility>
#include <vector>

#include "common/status.h"
#include "common/tokenizer/regex.h"
#include "common/tokenizer/utf8.h"

namespace krasis::tokenizer {
namespace {

// True when every byte is below `limit` (a cheap "nothing to do" test).
bool AllBytesBelow(std::string_view text, unsigned char limit) {
  for (unsigned char c : text) {
    if (c >= limit) return false;
  }
  return true;
}

// Runs utf8proc_map with `options` over `text`, appending the result.
void AppendMapped(std::string_view text, int options, std::string* out) {
  utf8proc_uint8_t* result = nullptr;
  const utf8proc_ssize_t n = utf8proc_map(reinterpret_cast<const utf8proc_uint8_t*>(text.data()),
                                          static_cast<utf8proc_ssize_t>(text.size()), &result,
                                          static_cast<utf8proc_option_t>(options));
  if (n < 0) {  // cannot happen for valid UTF-8; keep the text unchanged
    out->append(text);
  } else {
    out->append(reinterpret_cast<const char*>(result), static_cast<size_t>(n));
  }
  std::free(result);
}

// NFD, NFKC and NFKD (utf8proc over the whole text unless it is ASCII).
class UnicodeNormalizer : public Normalizer {
 public:
  explicit UnicodeNormalizer(int options) : options_(options) {}

  void Normalize(std::string_view text, std::string* out) const override {
    out->clear();
    if (AllBytesBelow(text, 0x80)) {
      out->assign(text);
    } else {
      AppendMapped(text, options_, out);
    }
  }

 private:
  int options_;
};

// Code points that NFC leaves alone whatever surrounds them: combining class 0,
// no decomposition that NFC applies, and never the second character of a
// canonical composition. Only common scripts are listed (a conservative
// subset); anything else goes through utf8proc.
bool NfcStable(char32_t cp) {
  if (cp < 0x300) return true;
  if (cp < 0x3000) {
    return (cp >= 0x400 && cp <= 0x482) || (cp >= 0x48A && cp <= 0x4FF) ||    // Cyrillic
           (cp >= 0x2010 && cp <= 0x2027) || (cp >= 0x2030 && cp <= 0x205E);  // punctuation
  }
  return (cp <= 0x3029) ||                  // CJK symbols and punctuation
         (cp >= 0x3041 && cp <= 0x3096) ||  // Hiragana (not the combining 3099/309A)
         (cp >= 0x309D && cp <= 0x30FF) ||  // Katakana
         (cp >= 0x3400 && cp <= 0x4DBF) ||  // CJK extension A
         (cp >= 0x4E00 && cp <= 0x9FFF) ||  // CJK unified ideographs
         (cp >= 0xAC00 && cp <= 0xD7A3) ||  // Hangul syllables
         (cp >= 0xFF01 && cp <= 0xFF9D) ||  // full- and half-width forms
         (cp >= 0x1F300 && cp <= 0x1FAFF);  // emoji
}

// NFC. Runs of stable code points are copied; utf8proc only sees the chunks
// around other code points, each starting at the stable starter before them
// (which they may compose with) and ending before the next stable code point
// (which nothing crosses). Text in common scripts thus never reaches utf8proc.
class NfcNormalizer : public Normalizer {
 public:
  void Normalize(std::string_view text, std::string* out) const override {
    out->clear();
    if (AllBytesBelow(text, 0xCC)) {  // below U+0300: already NFC
      out->assign(text);
      return;
    }
    out->reserve(text.size());
    size_t i = 0, copied = 0;  // text[copied, i) is stable and not yet appended
    size_t prev_start = 0;     // start of the code point before i
    while (i < text.size()) {
      size_t len = 0;
      const char32_t cp = DecodeUtf8(text, i, &len);
      if (NfcStable(cp)) {
        prev_start = i;
        i += len;
        continue;
      }
      // Chunk: the previous (stable) code point, if any, up to the next stable one.
      const size_t chunk_start = i > copied ? prev_start : i;
      out->append(text.substr(copied, chunk_start - copied));
      size_t end = i + len;
      while (end < text.size()) {
        size_t next_len = 0;
        if (NfcStable(DecodeUtf8(text, end, &next_len))) break;
        end += next_len;
      }
      AppendMapped(text.substr(chunk_start, end - chunk_start), UTF8PROC_STABLE | UTF8PROC_COMPOSE,
                   out);
      i = copied = end;
    }
    out->append(text.substr(copied));
  }
};

class LowercaseNormalizer : public Normalizer {
 public:
  void Normalize(std::string_view text, std::string* out) const override {
    out->clear();
    out->reserve(text.size());
    size_t i = 0;
    while (i < text.size()) {
      size_t len = 0;
      const char32_t cp = DecodeUtf8(text, i, &len);
      if (cp < 0x80) {
        out->push_back(static_cast<char>(cp >= 'A' && cp <= 'Z' ? cp + 32 : cp));
      } else {
        AppendUtf8(static_cast<char32_t>(utf8proc_tolower(static_cast<utf8proc_int32_t>(cp))), out);
      }
      i += len;
    }
  }
};

class ReplaceNormalizer : public Normalizer {
 public:
  ReplaceNormalizer(std::unique_ptr<Regex> pattern, std::string content)
      : pattern_(std::move(pattern)), content_(std::move(content)) {}

  void Normalize(std::string_view text, std::string* out) const override {
    std::vector<std::pair<size_t, size_t>> matches;
    pattern_->FindAll(text, &matches);
    out->clear();
    size_t prev = 0;
    for (const auto& [b, e] : matches) {
      out->append(text.substr(prev, b - prev));
      out->append(content_);
      prev = e;
    }
    out->append(text.substr(prev));
  }

 private:
  std::unique_ptr<Regex> pattern_;
  std::string content_;
};

class PrependNormalizer : public Normalizer {
 public:
  explicit PrependNormalizer(std::string prepend) : prepend_(std::move(prepend)) {}
  void Normalize(std::string_view text, std::string* out) const override {
    out->clear();
    if (!text.empty()) out->append(prepend_);
    out->append(text);
  }

 private:
  std::string prepend_;
};

class StripNormalizer : public Normalizer {
 public:
  StripNormalizer(bool left, bool right) : left_(left), right_(right) {}
  void Normalize(std::string_view text, std::string* out) const override {
    size_t b = 0, e = text.size();
    if (left_) {
      while (b < e) {
        size_t len = 0;
        if (!IsWhitespace(DecodeUtf8(text, b, &len))) break;
        b += len;
      }
    }
    if (right_) {
      while (e > b) {
        size_t start = e - 1;
        while (start > b && (static_cast<unsigned char>(text[start]) & 0xC0) == 0x80) --start;
        size_t len = 0;
        if (!IsWhitespace(DecodeUtf8(text, start, &len))) break;
        e = start;
      }
    }
    out->assign(text.substr(b, e - b));
  }

 private:
  bool left_, right_;
};

class SequenceNormalizer : public Normalizer {
 public:
  explicit SequenceNormalizer(std::vector<std::unique_ptr<Normalizer>> steps)
      : steps_(std::move(steps)) {}
  void Normalize(std::string_view text, std::string* out) const override {
    std::string current(text), next;
    for (const auto& step : steps_) {
      step->Normalize(current, &next);
      std::swap(current, next);
    }
    *out = std::move(current);
  }

 private:
  std::vector<std::unique_ptr<Normalizer>> steps_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<Normalizer>> NormalizerFromJson(const Json& j) {
  if (j.is_null()) return nullptr;
  ASSIGN_OR_RETURN(const std::string type, ComponentType(j, "normalizer"));
  const std::string what = StrCat("normalizer ", type);
  if (type == "NFC") return std::make_unique<NfcNormalizer>();
  if (type == "NFD")
    return std::make_unique<UnicodeNormalizer>(UTF8PROC_STABLE | UTF8PROC_DECOMPOSE);
  if (type == "NFKC") {
    return std::make_unique<UnicodeNormalizer>(UTF8PROC_STABLE | UTF8PROC_COMPOSE |
                                               UTF8PROC_COMPAT);
  }
  if (type == "NFKD") {
    return std::make_unique<UnicodeNormalizer>(UTF8PROC_STABLE | UTF8PROC_DECOMPOSE |
                                               UTF8PROC_COMPAT);
  }
  if (type == "Lowercase") return std::make_unique<LowercaseNormalizer>();
  if (type == "Replace") {
    auto it = j.find("pattern");
    if (it == j.end()) return InvalidArgumentError(what, ": missing field 'pattern'");
    ASSIGN_OR_RETURN(auto pattern, PatternFromJson(*it, what));
    ASSIGN_OR_RETURN(std::string content, StringField(j, "content", what));
    return std::make_unique<ReplaceNormalizer>(std::move(pattern), std::move(content));
  }
  if (type == "Prepend") {
    ASSIGN_OR_RETURN(std::string prepend, StringField(j, "prepend", what));
    return std::make_unique<PrependNormalizer>(std::move(prepend));
  }
  if (type == "Strip") {
    ASSIGN_OR_RETURN(bool left, BoolField(j, "strip_left", true, what));
    ASSIGN_OR_RETURN(bool right, BoolField(j, "strip_right", true, what));
    return std::make_unique<StripNormalizer>(left, right);
  }
  if (type == "Sequence") {
    auto it = j.find("normalizers");
    if (it == j.end() || !it->is_array()) {
      return InvalidArgumentError(what, ": field 'normalizers' must be an array");
    }
    std::vector<std::unique_ptr<Normalizer>> steps;
    for (const Json& step : *it) {
      ASSIGN_OR_RETURN(auto normalizer, NormalizerFromJson(step));
      if (normalizer != nullptr) steps.push_back(std::move(normalizer));
    }
    if (steps.empty()) return nullptr;
    if (steps.size() == 1) return std::move(steps.front());
    return std::make_unique<SequenceNormalizer>(std::move(steps));
  }
  return InvalidArgumentError("unsupported normalizer type '", type, "'");
}

std::string NfcNormalize(std::string_view text) {
  std::string out;
  NfcNormalizer().Normalize(text, &out);
  return out;
}

std::string NfcNormalizeReference(std::string_view text) {
  std::string out;
  AppendMapped(text, UTF8PROC_STABLE | UTF8PROC_COMPOSE, &out);
  return out;
}

}  // namespace krasis::tokenizer
