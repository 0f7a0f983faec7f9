// tokenizer.json decoders (see decoder.h).
#include "common/tokenizer/decoder.h"

#include <utility>
#include <vector>

#include "common/status.h"
#include "common/tokenizer/byte_level.h"
#include "common/tokenizer/regex.h"
#include "common/tokenizer/utf8.h"

namespace krasis::tokenizer {
namespace {

class ByteLevelDecoder : public Decoder {
 public:
  void DecodeToken(std::string* token, size_t, bool) const override {
    std::string bytes;
    bytes.reserve(token->size());
    ByteLevelAlphabet::Get().DecodeAppend(*token, &bytes);
    *token = std::move(bytes);
  }
  bool Fuses() const override { return true; }
};

// "<0x41>" -> the byte 0x41.
class ByteFallbackDecoder : public Decoder {
 public:
  void DecodeToken(std::string* token, size_t, bool) const override {
    const std::string& t = *token;
    if (t.size() != 6 || !t.starts_with("<0x") || t[5] != '>') return;
    int value = 0;
    for (size_t i = 3; i < 5; ++i) {
      const char c = t[i];
      int digit;
      if (c >= '0' && c <= '9')
        digit = c - '0';
      else if (c >= 'A' && c <= 'F')
        digit = c - 'A' + 10;
      else if (c >= 'a' && c <= 'f')
        digit = c - 'a' + 10;
      else
        return;
      value = value * 16 + digit;
    }
    token->assign(1, static_cast<char>(value));
  }
};

class FuseDecoder : public Decoder {
 public:
  void DecodeToken(std::string*, size_t, bool) const override {}
  bool Fuses() const override { return true; }
};

class ReplaceDecoder : public Decoder {
 public:
  // A literal pattern is replaced bytewise; a regex only in valid UTF-8.
  ReplaceDecoder(std::string literal, std::unique_ptr<Regex> regex, std::string content)
      : literal_(std::move(literal)), regex_(std::move(regex)), content_(std::move(content)) {}

  void DecodeToken(std::string* token, size_t, bool) const override {
    std::vector<std::pair<size_t, size_t>> matches;
    if (regex_ == nullptr) {
      if (literal_.empty()) return;
      for (size_t p = token->find(literal_); p != std::string::npos;
           p = token->find(literal_, p + literal_.size())) {
        matches.emplace_back(p, p + literal_.size());
      }
    } else if (IsValidUtf8(*token)) {
      regex_->FindAll(*token, &matches);
    }
    if (matches.empty()) return;
    std::string out;
    size_t prev = 0;
    for (const auto& [b, e] : matches) {
      out.append(*token, prev, b - prev);
      out += content_;
      prev = e;
    }
    out.append(*token, prev);
    *token = std::move(out);
  }

 private:
  std::string literal_;
  std::unique_ptr<Regex> regex_;
  std::string content_;
};

class StripDecoder : public Decoder {
 public:
  StripDecoder(char32_t content, size_t start, size_t stop)
      : content_(content), start_(start), stop_(stop) {}

  void DecodeToken(std::string* token, size_t index, bool fused) const override {
    if (!IsValidUtf8(*token)) return;
    const std::string& t = *token;
    size_t b = 0;
    const size_t start = fused && index > 0 ? 0 : start_;
    for (size_t n = 0; n < start && b < t.size(); ++n) {
      size_t len = 0;
      if (DecodeUtf8(t, b, &len) != content_) break;
      b += len;
    }
    size_t e = t.size();
    for (size_t n = 0; n < stop_ && e > b; ++n) {  // stop_ is 0 when fused (checked at load)
      size_t s = e - 1;
      while (s > b && (static_cast<unsigned char>(t[s]) & 0xC0) == 0x80) --s;
      size_t len = 0;
      if (DecodeUtf8(t, s, &len) != content_) break;
      e = s;
    }
    *token = t.substr(b, e - b);
  }

 private:
  char32_t content_;
  size_t start_, stop_;
};

class SequenceDecoder : public Decoder {
 public:
  explicit SequenceDecoder(std::vector<std::unique_ptr<Decoder>> steps)
      : steps_(std::move(steps)) {}

  void DecodeToken(std::string* token, size_t index, bool fused) const override {
    for (const auto& step : steps_) {
      step->DecodeToken(token, index, fused);
      fused = fused || step->Fuses();
    }
  }
  bool Fuses() const override {
    for (const auto& step : steps_) {
      if (step->Fuses()) return true;
    }
    return false;
  }

 private:
  std::vector<std::unique_ptr<Decoder>> steps_;
};

absl::StatusOr<std::unique_ptr<Decoder>> Build(const Json& j, bool fused) {
  ASSIGN_OR_RETURN(const std::string type, ComponentType(j, "decoder"));
  const std::string what = StrCat("decoder ", type);
  if (type == "ByteLevel") return std::make_unique<ByteLevelDecoder>();
  if (type == "ByteFallback") return std::make_unique<ByteFallbackDecoder>();
  if (type == "Fuse") return std::make_unique<FuseDecoder>();
  if (type == "Replace") {
    auto it = j.find("pattern");
    if (it == j.end()) return InvalidArgumentError(what, ": missing field 'pattern'");
    ASSIGN_OR_RETURN(std::string content, StringField(j, "content", what));
    if (auto s = it->find("String"); it->is_object() && s != it->end() && s->is_string()) {
      return std::make_unique<ReplaceDecoder>(s->get<std::string>(), nullptr, std::move(content));
    }
    ASSIGN_OR_RETURN(auto regex, PatternFromJson(*it, what));
    return std::make_unique<ReplaceDecoder>("", std::move(regex), std::move(content));
  }
  if (type == "Strip") {
    ASSIGN_OR_RETURN(const std::string content, StringField(j, "content", what));
    ASSIGN_OR_RETURN(const int64_t start, IntField(j, "start", 0, what));
    ASSIGN_OR_RETURN(const int64_t stop, IntField(j, "stop", 0, what));
    size_t len = 0;
    const char32_t ch = content.empty() || !IsValidUtf8(content) ? 0 : DecodeUtf8(content, 0, &len);
    if (len == 0 || len != content.size()) {
      return InvalidArgumentError(what, ": field 'content' must be one character");
    }
    if (fused && stop > 0) {
      return InvalidArgumentError(what,
                                  ": stripping trailing characters after a fusing decoder "
                                  "is not supported");
    }
    return std::make_unique<StripDecoder>(ch, static_cast<size_t>(start),
                                          static_cast<size_t>(stop));
  }
  if (type == "Sequence") {
    auto it = j.find("decoders");
    if (it == j.end() || !it->is_array()) {
      return InvalidArgumentError(what, ": field 'decoders' must be an array");
    }
    std::vector<std::unique_ptr<Decoder>> steps;
    for (const Json& step : *it) {
      if (step.is_null()) continue;
      ASSIGN_OR_RETURN(auto decoder, Build(step, fused));
      fused = fused || decoder->Fuses();
      steps.push_back(std::move(decoder));
    }
    return std::make_unique<SequenceDecoder>(std::move(steps));
  }
  return InvalidArgumentError("unsupported decoder type '", type, "'");
}

}  // namespace

absl::StatusOr<std::unique_ptr<Decoder>> DecoderFromJson(const Json& j) {
  if (j.is_null()) return nullptr;
  return Build(j, /*fused=*/false);
}

}  // namespace krasis::tokenizer
