// Tests the tokenizer on two tiny hand-made tokenizer.json fixtures
// (tests/data/tokenizer/tiny/ and tiny_byte_fallback.json) whose ids can be
// worked out by hand: merges written both as "a b" and ["a", "b"], merge
// priority, added tokens with lstrip / rstrip / single_word / normalized,
// parse_special, the TemplateProcessing post-processor, tokenizer_config.json
// and chat_template.jinja, and the SentencePiece-style decoder chain
// (Replace, ByteFallback, Fuse, Strip) with byte fallback and unk fusing.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "common/tokenizer/streaming_detokenizer.h"
#include "tests/tokenizer/tokenizer_test_util.h"

namespace krasis {
namespace {

using Ids = std::vector<int32_t>;
using testing::ReadTextFile;
using testing::TokenizerDataDir;

// Ids of the tiny fixture: single bytes are their own id (byte-level alphabet),
// merged tokens and added tokens as below.
constexpr int32_t kHe = 256, kLl = 257, kHell = 258, kHello = 259, kSpaceWorld = 264, kSpaceH = 265,
                  kSpaceSpace = 269;
constexpr int32_t kBos = 300, kMask = 301, kSep = 302, kCat = 303, kTool = 304, kA = 305, kAB = 306,
                  kCafe = 307, kExtra = 308;
constexpr int32_t kSpace = 32;  // a lone space is byte 0x20, "Ġ"

std::unique_ptr<Tokenizer> LoadTiny() {
  auto tok = Tokenizer::Load((TokenizerDataDir() / "tiny").string());
  EXPECT_TRUE(tok.ok()) << tok.status();
  return tok.ok() ? std::move(tok).value() : nullptr;
}

TEST(TinyTokenizer, MergesInBothFormsAndRankOrder) {
  auto tok = LoadTiny();
  ASSERT_NE(tok, nullptr);
  EXPECT_EQ(tok->Encode("hello"), (Ids{kHello}));
  EXPECT_EQ(tok->Encode("hello world"), (Ids{kHello, kSpaceWorld}));
  // "h e" (rank 0) fires before "Ġ h" (rank 9), so the space stays alone.
  EXPECT_EQ(tok->Encode(" hello"), (Ids{kSpace, kHello}));
  EXPECT_EQ(tok->Encode(" h"), (Ids{kSpaceH}));
  EXPECT_EQ(tok->Encode("hell"), (Ids{kHell}));
  EXPECT_EQ(tok->Encode("help"), (Ids{kHe, 'l', 'p'}));
  EXPECT_EQ(tok->Encode("ll"), (Ids{kLl}));
  // "h e" (rank 0) beats "l l" (rank 1); "hel" has no merge to "hell".
  EXPECT_EQ(tok->Encode("hel"), (Ids{kHe, 'l'}));
  EXPECT_EQ(tok->Encode("x   y"), (Ids{'x', kSpaceSpace, kSpace, 'y'}));
  EXPECT_EQ(tok->Decode(tok->Encode("hello world, x   y!")), "hello world, x   y!");
  // Every byte is a token: any text survives.
  const std::string bytes = "\t\xC3\xA9\xF0\x9F\x98\x80 \x7F";
  EXPECT_EQ(tok->Decode(tok->Encode(bytes)), bytes);
  EXPECT_EQ(tok->Encode("\xC3\xA9"), (Ids{0xC3, 0xA9}));
}

TEST(TinyTokenizer, DigitsAreIsolatedBySplit) {
  auto tok = LoadTiny();
  ASSERT_NE(tok, nullptr);
  EXPECT_EQ(tok->Encode("a123"), (Ids{'a', '1', '2', '3'}));
}

TEST(TinyTokenizer, SpecialTokensAndParseSpecial) {
  auto tok = LoadTiny();
  ASSERT_NE(tok, nullptr);
  EXPECT_EQ(tok->Encode("<s>hello"), (Ids{kBos, kHello}));
  EXPECT_EQ(tok->Encode("<s>hello", /*parse_special=*/false), (Ids{'<', 's', '>', kHello}));
  // Non-special added tokens are matched either way.
  EXPECT_EQ(tok->Encode("<tool>", false), (Ids{kTool}));
  EXPECT_EQ(tok->Decode(tok->Encode("a<s>b<tool>c"), /*skip_special=*/true), "ab<tool>c");
  EXPECT_TRUE(tok->IsSpecial(kBos));
  EXPECT_FALSE(tok->IsSpecial(kTool));
  EXPECT_FALSE(tok->IsSpecial(kHello));
}

TEST(TinyTokenizer, LongestAddedTokenWins) {
  auto tok = LoadTiny();
  ASSERT_NE(tok, nullptr);
  EXPECT_EQ(tok->Encode("[A][B]"), (Ids{kAB}));
  EXPECT_EQ(tok->Encode("[A][C]"), (Ids{kA, '[', 'C', ']'}));
  EXPECT_EQ(tok->Encode("[A][A][B]"), (Ids{kA, kAB}));
}

TEST(TinyTokenizer, LstripAndRstripSwallowWhitespace) {
  auto tok = LoadTiny();
  ASSERT_NE(tok, nullptr);
  // <mask> has lstrip: the spaces before it belong to it.
  EXPECT_EQ(tok->Encode("hello   <mask> x"), (Ids{kHello, kMask, kSpace, 'x'}));
  // <sep> has rstrip: the spaces after it belong to it.
  EXPECT_EQ(tok->Encode("x <sep>  \n hello"), (Ids{'x', kSpace, kSep, kHello}));
  // A token does not strip into the previous added token.
  EXPECT_EQ(tok->Encode("<sep>  <mask>"), (Ids{kSep, kMask}));
}

TEST(TinyTokenizer, SingleWordOnlyMatchesWholeWords) {
  auto tok = LoadTiny();
  ASSERT_NE(tok, nullptr);
  EXPECT_EQ(tok->Encode("cat"), (Ids{kCat}));
  EXPECT_EQ(tok->Encode("a cat, "), (Ids{'a', kSpace, kCat, ',', kSpace}));
  EXPECT_EQ(tok->Encode("concat"), (Ids{'c', 'o', 'n', 'c', 'a', 't'}));
  EXPECT_EQ(tok->Encode("cats"), (Ids{'c', 'a', 't', 's'}));
  EXPECT_EQ(tok->Encode("_cat"), (Ids{'_', 'c', 'a', 't'}));
  EXPECT_EQ(tok->Encode("\xC3\xA9"
                        "cat"),
            (Ids{0xC3, 0xA9, 'c', 'a', 't'}));  // é is a letter
}

TEST(TinyTokenizer, NormalizedAddedTokensMatchNormalizedText) {
  auto tok = LoadTiny();
  ASSERT_NE(tok, nullptr);
  // The token is written decomposed (cafe + U+0301) and normalized=true, so
  // both spellings match after NFC.
  EXPECT_EQ(tok->Encode("cafe\xCC\x81"), (Ids{kCafe}));
  EXPECT_EQ(tok->Encode("caf\xC3\xA9!"), (Ids{kCafe, '!'}));
}

TEST(TinyTokenizer, PostProcessorAndConfig) {
  auto tok = LoadTiny();
  ASSERT_NE(tok, nullptr);
  EXPECT_EQ(tok->AddSpecialTokens(Ids{kHello}), (Ids{kBos, kHello}));
  EXPECT_EQ(tok->bos_token(), "<s>");
  EXPECT_EQ(tok->bos_token_id(), kBos);
  EXPECT_EQ(tok->eos_token(), "<sep>");  // written as an AddedToken object
  EXPECT_EQ(tok->eos_token_id(), kSep);
  EXPECT_EQ(tok->chat_template(), "{% for m in messages %}{{ m.content }}{% endfor %}");
  EXPECT_EQ(tok->config().at("add_bos_token"), false);
  // added_tokens_decoder of the config adds tokens tokenizer.json lacks.
  EXPECT_EQ(tok->TokenToId("<extra>"), kExtra);
  EXPECT_TRUE(tok->IsSpecial(kExtra));
  EXPECT_EQ(tok->Encode("x<extra>"), (Ids{'x', kExtra}));
  EXPECT_EQ(tok->vocab_size(), kExtra + 1);
  EXPECT_EQ(tok->IdToToken(kSpaceWorld), "\xC4\xA0world");  // "Ġworld"
  EXPECT_EQ(tok->TokenToId("nope"), std::nullopt);
}

TEST(TinyTokenizer, ChatTemplateFileOverridesConfig) {
  const auto dir = std::filesystem::temp_directory_path() /
                   ("krasis_tok_" + std::to_string(::getpid()) + "_jinja");
  std::filesystem::create_directories(dir);
  std::filesystem::copy_file(TokenizerDataDir() / "tiny" / "tokenizer.json", dir / "tokenizer.json",
                             std::filesystem::copy_options::overwrite_existing);
  std::ofstream(dir / "tokenizer_config.json")
      << R"({"chat_template": [{"name": "tool_use", "template": "T"},
                               {"name": "default", "template": "D"}]})";
  auto tok = Tokenizer::Load(dir.string());
  ASSERT_TRUE(tok.ok()) << tok.status();
  EXPECT_EQ((*tok)->chat_template(), "D");
  std::ofstream(dir / "chat_template.jinja") << "J{{ x }}";
  tok = Tokenizer::Load((dir / "tokenizer.json").string());
  ASSERT_TRUE(tok.ok()) << tok.status();
  EXPECT_EQ((*tok)->chat_template(), "J{{ x }}");
  std::filesystem::remove_all(dir);
}

TEST(TinyTokenizer, StreamingSplitsNothingAndHoldsPartialBytes) {
  auto tok = LoadTiny();
  ASSERT_NE(tok, nullptr);
  StreamingDetokenizer stream(*tok, /*skip_special=*/true);
  EXPECT_EQ(stream.Add(kBos), "");
  EXPECT_EQ(stream.Add(kHello), "hello");
  EXPECT_EQ(stream.Add(0xF0), "");  // 😀 = F0 9F 98 80, one byte per token
  EXPECT_EQ(stream.Add(0x9F), "");
  EXPECT_EQ(stream.Add(0x98), "");
  EXPECT_EQ(stream.Add(0x80), "\xF0\x9F\x98\x80");
  EXPECT_EQ(stream.Add(0xC3), "");
  EXPECT_EQ(stream.Flush(), "\xEF\xBF\xBD");
}

// --- tiny_byte_fallback.json: a SentencePiece-style BPE ------------------------

std::unique_ptr<Tokenizer> LoadByteFallback(bool byte_fallback = true) {
  auto j = nlohmann::json::parse(ReadTextFile(TokenizerDataDir() / "tiny_byte_fallback.json"));
  j["model"]["byte_fallback"] = byte_fallback;
  auto tok = Tokenizer::FromJsonText(j.dump(), "tiny_byte_fallback.json");
  EXPECT_TRUE(tok.ok()) << tok.status();
  return tok.ok() ? std::move(tok).value() : nullptr;
}

constexpr int32_t kUnk = 0, kMeta = 259, kSpH = 262, kSpHi = 263, kAb = 266;
constexpr int32_t ByteId(int b) { return 3 + b; }

TEST(TinyByteFallback, PrependReplaceAndMerges) {
  auto tok = LoadByteFallback();
  ASSERT_NE(tok, nullptr);
  EXPECT_EQ(tok->Encode("hi ab"), (Ids{kSpHi, kMeta, kAb}));
  EXPECT_EQ(tok->Decode(Ids{kSpHi, kMeta, kAb}), "hi ab");  // Strip drops the first space
  EXPECT_TRUE(tok->Encode("").empty());
}

TEST(TinyByteFallback, UnknownCharactersFallBackToBytes) {
  auto tok = LoadByteFallback();
  ASSERT_NE(tok, nullptr);
  const Ids ids = tok->Encode("h\xC3\xA9");
  EXPECT_EQ(ids, (Ids{kSpH, ByteId(0xC3), ByteId(0xA9)}));
  EXPECT_EQ(tok->Decode(ids), "h\xC3\xA9");
  StreamingDetokenizer stream(*tok, false);
  EXPECT_EQ(stream.Add(kSpH), "h");
  EXPECT_EQ(stream.Add(ByteId(0xC3)), "");
  EXPECT_EQ(stream.Add(ByteId(0xA9)), "\xC3\xA9");
  EXPECT_EQ(stream.Flush(), "");
}

TEST(TinyByteFallback, WithoutByteFallbackUnknownsFuseIntoOneUnk) {
  auto tok = LoadByteFallback(/*byte_fallback=*/false);
  ASSERT_NE(tok, nullptr);
  EXPECT_EQ(tok->Encode("h\xC3\xA9\xC3\xA9"), (Ids{kSpH, kUnk}));
}

}  // namespace
}  // namespace krasis
