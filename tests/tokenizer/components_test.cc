// Unit tests of the tokenizer's building blocks: UTF-8 repair (maximal
// subparts, streaming holds), the Oniguruma-compatible \s rewrite, the Split
// delimiter behaviors (Hugging Face's documented "the-final--countdown"
// examples), Digits, ByteLevel, the normalizers and the decoders.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "common/tokenizer/byte_level.h"
#include "common/tokenizer/decoder.h"
#include "common/tokenizer/normalizer.h"
#include "common/tokenizer/pre_tokenizer.h"
#include "common/tokenizer/regex.h"
#include "common/tokenizer/utf8.h"

namespace krasis::tokenizer {
namespace {

using Pieces = std::vector<std::string>;

TEST(Utf8, RepairsWithOneReplacementPerMaximalSubpart) {
  EXPECT_EQ(ToValidUtf8("ok \xC3\xA9"), "ok \xC3\xA9");
  EXPECT_EQ(ToValidUtf8("\xFF"), "\uFFFD");
  EXPECT_EQ(ToValidUtf8("\xE2\x82"), "\uFFFD");  // truncated 3-byte sequence
  EXPECT_EQ(ToValidUtf8("\xE2\x82x"), "\uFFFDx");
  EXPECT_EQ(ToValidUtf8("\xC0\xAF"), "\uFFFD\uFFFD");            // overlong: C0 never valid
  EXPECT_EQ(ToValidUtf8("\xED\xA0\x80"), "\uFFFD\uFFFD\uFFFD");  // surrogate
  EXPECT_EQ(ToValidUtf8("\xF4\x90\x80\x80"), "\uFFFD\uFFFD\uFFFD\uFFFD");  // > U+10FFFF
  EXPECT_EQ(ToValidUtf8("\xF0\x9F\x98"), "\uFFFD");
  EXPECT_TRUE(IsValidUtf8("\xF0\x9F\x98\x80"));
  EXPECT_FALSE(IsValidUtf8("\xF0\x9F\x98"));
}

TEST(Utf8, StreamingHoldsAnIncompleteTail) {
  std::string out;
  EXPECT_EQ(AppendValidUtf8("ab\xF0\x9F", /*final=*/false, &out), 2u);
  EXPECT_EQ(out, "ab");
  out.clear();
  EXPECT_EQ(AppendValidUtf8("\xF0\x9Fx", false, &out), 3u);  // broken: replaced at once
  EXPECT_EQ(out, "\uFFFDx");
}

TEST(Utf8, CharacterClasses) {
  EXPECT_TRUE(IsWhitespace(0x85));
  EXPECT_TRUE(IsWhitespace(0x3000));
  EXPECT_FALSE(IsWhitespace(0x200B));
  EXPECT_TRUE(IsWordChar(U'é'));
  EXPECT_TRUE(IsWordChar(U'_'));
  EXPECT_FALSE(IsWordChar(U'-'));
  EXPECT_TRUE(IsNumeric(U'٣'));
  EXPECT_TRUE(IsNumeric(U'½'));
  EXPECT_FALSE(IsNumeric(U'x'));
}

TEST(Regex, WhitespaceMatchesLikeOniguruma) {
  EXPECT_EQ(TranslatePattern(R"(\s+(?!\S)|[^\s\p{L}])"),
            R"([\s\x{85}]+(?![^\s\x{85}])|[^\s\x{85}\p{L}])");
  EXPECT_EQ(TranslatePattern(R"([\]\s]\\s)"), R"([\]\s\x{85}]\\s)");
  EXPECT_EQ(TranslatePattern(R"(\w+\h[\w])"),
            R"([\p{L}\p{M}\p{N}\p{Pc}]+[0-9a-fA-F][\p{L}\p{M}\p{N}\p{Pc}])");
  auto re = Regex::Compile(R"(\s+)");
  ASSERT_TRUE(re.ok());
  std::vector<std::pair<size_t, size_t>> m;
  (*re)->FindAll("a \xC2\x85 b", &m);  // U+0085 (NEL) is whitespace for Oniguruma
  ASSERT_EQ(m.size(), 1u);
  EXPECT_EQ(m[0], (std::pair<size_t, size_t>{1, 5}));
}

TEST(Regex, EmptyMatchesAdvanceByCharacter) {
  auto re = Regex::Compile("x*");
  ASSERT_TRUE(re.ok());
  std::vector<std::pair<size_t, size_t>> m;
  (*re)->FindAll("\xC3\xA9xx", &m);
  EXPECT_EQ(m, (std::vector<std::pair<size_t, size_t>>{{0, 0}, {2, 4}, {4, 4}}));
}

Pieces PreTokenize(const Json& config, std::string_view text) {
  auto pre = PreTokenizerFromJson(config);
  EXPECT_TRUE(pre.ok()) << pre.status();
  Pieces out;
  if (pre.ok()) (*pre)->Split(text, [&](std::string_view p) { out.emplace_back(p); });
  return out;
}

Pieces SplitDash(const char* behavior, bool invert = false) {
  return PreTokenize({{"type", "Split"},
                      {"pattern", {{"String", "-"}}},
                      {"behavior", behavior},
                      {"invert", invert}},
                     "the-final--countdown");
}

TEST(PreTokenizer, SplitBehaviors) {
  EXPECT_EQ(SplitDash("Removed"), (Pieces{"the", "final", "countdown"}));
  EXPECT_EQ(SplitDash("Isolated"), (Pieces{"the", "-", "final", "-", "-", "countdown"}));
  EXPECT_EQ(SplitDash("MergedWithPrevious"), (Pieces{"the-", "final-", "-", "countdown"}));
  EXPECT_EQ(SplitDash("MergedWithNext"), (Pieces{"the", "-final", "-", "-countdown"}));
  EXPECT_EQ(SplitDash("Contiguous"), (Pieces{"the", "-", "final", "--", "countdown"}));
  EXPECT_EQ(SplitDash("Removed", /*invert=*/true), (Pieces{"-", "-", "-"}));
}

TEST(PreTokenizer, DigitsAndByteLevel) {
  EXPECT_EQ(PreTokenize({{"type", "Digits"}, {"individual_digits", false}}, "ab123c45"),
            (Pieces{"ab", "123", "c", "45"}));
  EXPECT_EQ(PreTokenize({{"type", "Digits"}, {"individual_digits", true}}, "ab12c"),
            (Pieces{"ab", "1", "2", "c"}));
  EXPECT_EQ(PreTokenize({{"type", "ByteLevel"}, {"add_prefix_space", true}, {"use_regex", true}},
                        "hello world's\n"),
            (Pieces{"\xC4\xA0hello", "\xC4\xA0world", "'s", "\xC4\x8A"}));
  EXPECT_EQ(
      PreTokenize({{"type", "Sequence"},
                   {"pretokenizers",
                    {{{"type", "Digits"}, {"individual_digits", true}},
                     {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", false}}}}},
                  "a 12"),
      (Pieces{"a\xC4\xA0", "1", "2"}));
}

// The pre-tokenizer chains of the other supported families, without their
// final ByteLevel step: GLM-4.x (one llama3-style Split) and DeepSeek-V2
// (several Splits, then Digits), with a shortened Latin class.
TEST(PreTokenizer, Glm4AndDeepSeekV2Chains) {
  const Json glm4 = {
      {"type", "Split"},
      {"pattern",
       {{"Regex", R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|)"
                  R"( ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)"}}},
      {"behavior", "Isolated"},
      {"invert", false}};
  EXPECT_EQ(PreTokenize(glm4, "I'M 12345 ok\n\n  x"),
            (Pieces{"I", "'M", " ", "123", "45", " ok", "\n\n", " ", " x"}));

  auto split = [](const char* re) {
    return Json{{"type", "Split"},
                {"pattern", {{"Regex", re}}},
                {"behavior", "Isolated"},
                {"invert", false}};
  };
  const Json deepseek_v2 = {
      {"type", "Sequence"},
      {"pretokenizers",
       {split("[\r\n]"),
        split("\\s?[A-Za-z\u00b5\u00c0-\u00d6\u00d8-\u00f6\u00f8-\u01ba]+"),
        split("\\s?[!-/:-~\uff01-\uff0f\uff1a-\uff5e\u2018-\u201f\u3000-\u3002]+"),
        split("\\s+$"),
        split("[\u4e00-\u9fa5\u0800-\u4e00\uac00-\ud7ff]+"),
        {{"type", "Digits"}, {"individual_digits", true}}}}};
  EXPECT_EQ(PreTokenize(deepseek_v2, "Hello \u4e16\u754c 123\nok!"),
            (Pieces{"Hello", " ", "\u4e16\u754c", " ", "1", "2", "3", "\n", "ok", "!"}));
}

std::string Normalize(const Json& config, std::string_view text) {
  auto n = NormalizerFromJson(config);
  EXPECT_TRUE(n.ok()) << n.status();
  std::string out;
  if (n.ok() && *n != nullptr) (*n)->Normalize(text, &out);
  return out;
}

TEST(Normalizer, Forms) {
  EXPECT_EQ(Normalize({{"type", "NFC"}}, "e\xCC\x81"), "\xC3\xA9");
  EXPECT_EQ(Normalize({{"type", "NFD"}}, "\xC3\xA9"), "e\xCC\x81");
  EXPECT_EQ(Normalize({{"type", "NFKC"}}, "\xEF\xAC\x81\xE2\x91\xA0"), "fi1");  // ﬁ①
  EXPECT_EQ(Normalize({{"type", "NFKD"}}, "\xC2\xBD"),
            "1\xE2\x81\x84"
            "2");  // ½
  EXPECT_EQ(Normalize({{"type", "Lowercase"}}, "HeLLo \xC3\x80\xC3\x89"), "hello \xC3\xA0\xC3\xA9");
  EXPECT_EQ(Normalize({{"type", "Strip"}, {"strip_left", true}, {"strip_right", true}},
                      " \t\xE3\x80\x80 x y \n"),
            "x y");
  EXPECT_EQ(Normalize({{"type", "Prepend"}, {"prepend", "\xE2\x96\x81"}}, "a"),
            "\xE2\x96\x81"
            "a");
  EXPECT_EQ(Normalize({{"type", "Prepend"}, {"prepend", "_"}}, ""), "");
  EXPECT_EQ(Normalize({{"type", "Replace"}, {"pattern", {{"Regex", " {2,}"}}}, {"content", " "}},
                      "a   b  c d"),
            "a b c d");
  EXPECT_EQ(Normalize({{"type", "Sequence"},
                       {"normalizers",
                        {{{"type", "Lowercase"}},
                         {{"type", "Replace"}, {"pattern", {{"String", "."}}}, {"content", "!"}}}}},
                      "A.B."),
            "a!b!");
  auto empty = NormalizerFromJson({{"type", "Sequence"}, {"normalizers", Json::array()}});
  ASSERT_TRUE(empty.ok());
  EXPECT_EQ(*empty, nullptr);
}

TEST(Normalizer, FastNfcMatchesUtf8procOnRandomMixes) {
  // Characters around the fast path's edges: stable ones next to marks, jamo,
  // singletons and composition exclusions.
  const std::vector<char32_t> pool = {
      'a',    'e',    'A',     ' ',     '\n',    0xE9,   0x300,  0x301,  0x308,  0x323,  0x340,
      0x344,  0x0915, 0x093C,  0x0958,  0x09BE,  0x09C7, 0x0B47, 0x0B3E, 0x0E38, 0x0E48, 0x1100,
      0x1161, 0x11A8, 0xAC00,  0xAC01,  0x3099,  0x309A, 0x304B, 0x30AB, 0x30FD, 0x3000, 0x302A,
      0x4E2D, 0x2000, 0x2001,  0x2126,  0x212B,  0x1E9B, 0x0415, 0x0306, 0x0374, 0x037E, 0x0387,
      0xFB01, 0xF900, 0x2F800, 0x1F600, 0x1F3FB, 0x200D, 0xFE0F, 0x05B4, 0x0651, 0x064E, 0x0CC6,
      0x0CC2, 0x0CD5, 0x1B05,  0x1B35,  0x110B9, 0x110BA};
  uint32_t seed = 12345;
  auto next = [&] { return seed = seed * 1664525u + 1013904223u; };
  for (int round = 0; round < 3000; ++round) {
    std::string text;
    const int len = 1 + static_cast<int>(next() % 12);
    for (int k = 0; k < len; ++k) AppendUtf8(pool[next() % pool.size()], &text);
    ASSERT_EQ(NfcNormalize(text), NfcNormalizeReference(text)) << "round " << round;
  }
}

std::string DecodeAll(const Json& config, const std::vector<std::string>& tokens) {
  auto d = DecoderFromJson(config);
  EXPECT_TRUE(d.ok()) << d.status();
  std::string out;
  for (size_t i = 0; d.ok() && i < tokens.size(); ++i) {
    std::string t = tokens[i];
    (*d)->DecodeToken(&t, i, false);
    out += t;
  }
  return out;
}

TEST(Decoder, ByteLevelAndSentencePieceChains) {
  EXPECT_EQ(
      DecodeAll({{"type", "ByteLevel"}}, {"Hello", "\xC4\xA0w\xC3\x83\xC2\xB6rld", "\xC4\x8A"}),
      "Hello w\xC3\xB6rld\n");
  const Json sp = {
      {"type", "Sequence"},
      {"decoders",
       {{{"type", "Replace"}, {"pattern", {{"String", "\xE2\x96\x81"}}}, {"content", " "}},
        {{"type", "ByteFallback"}},
        {{"type", "Fuse"}},
        {{"type", "Strip"}, {"content", " "}, {"start", 1}, {"stop", 0}}}}};
  EXPECT_EQ(DecodeAll(sp, {"\xE2\x96\x81Hi", "\xE2\x96\x81", "<0xC3>", "<0xA9>", "\xE2\x96\x81x"}),
            "Hi \xC3\xA9 x");
  const Json strip_after_fuse = {
      {"type", "Sequence"},
      {"decoders",
       {{{"type", "Fuse"}}, {{"type", "Strip"}, {"content", " "}, {"start", 0}, {"stop", 1}}}}};
  EXPECT_FALSE(DecoderFromJson(strip_after_fuse).ok());
}

TEST(ByteLevel, AlphabetRoundTrips) {
  const auto& a = ByteLevelAlphabet::Get();
  std::string all;
  for (int b = 0; b < 256; ++b) all.push_back(static_cast<char>(b));
  std::string encoded, decoded;
  a.EncodeAppend(all, &encoded);
  EXPECT_TRUE(IsValidUtf8(encoded));
  a.DecodeAppend(encoded, &decoded);
  EXPECT_EQ(decoded, all);
  EXPECT_EQ(a.Encode(' '), "\xC4\xA0");   // Ġ
  EXPECT_EQ(a.Encode('\n'), "\xC4\x8A");  // Ċ
  EXPECT_EQ(a.Encode('A'), "A");
}

}  // namespace
}  // namespace krasis::tokenizer
