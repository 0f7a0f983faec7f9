// Tests Krasis' tokenizer on the real Qwen3 and DeepSeek-V3 tokenizers (fetched
// by scripts/fetch_tokenizers) against ids from an independent implementation
// (transformers.js; tools/gen_tokenizer_refs.mjs) for every corpus file, plus
// round trips, streaming detokenization, special-token handling and the
// tokenizer_config.json fields.
#include <gtest/gtest.h>

#include <string>
#include <thread>
#include <vector>

#include "common/tokenizer/byte_level.h"
#include "common/tokenizer/normalizer.h"
#include "common/tokenizer/streaming_detokenizer.h"
#include "common/tokenizer/utf8.h"
#include "tests/tokenizer/tokenizer_test_util.h"

namespace krasis {
namespace {

using testing::Corpus;
using testing::ExpectedIds;
using testing::RealTokenizer;

class RealTokenizerTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    tok_ = RealTokenizer(GetParam());
    ASSERT_NE(tok_, nullptr);  // the reason was reported by RealTokenizer()
  }
  // What decode(encode(x)) must give: Qwen3 normalizes to NFC, DeepSeek-V3
  // has no normalizer.
  std::string Normalized(const std::string& text) const {
    return GetParam() == "qwen3" ? tokenizer::NfcNormalizeReference(text) : text;
  }
  // Describes the first difference between two id lists.
  std::string FirstDifference(const std::vector<int32_t>& got,
                              const std::vector<int32_t>& want) const {
    size_t i = 0;
    while (i < got.size() && i < want.size() && got[i] == want[i]) ++i;
    std::string out = StrCat("first difference at index ", i, " (got ", got.size(), " ids, want ",
                             want.size(), "): got");
    for (size_t k = i; k < got.size() && k < i + 6; ++k) {
      out += StrCat(" ", got[k], "'", tok_->IdToToken(got[k]), "'");
    }
    out += " want";
    for (size_t k = i; k < want.size() && k < i + 6; ++k) {
      out += StrCat(" ", want[k], "'", tok_->IdToToken(want[k]), "'");
    }
    return out;
  }
  const Tokenizer* tok_ = nullptr;
};

TEST_P(RealTokenizerTest, MatchesReferenceIdsOnEveryCorpusItem) {
  const auto expected = ExpectedIds(GetParam());
  const auto corpus = Corpus();
  ASSERT_GE(corpus.size(), 30u);
  for (const auto& item : corpus) {
    SCOPED_TRACE(item.name);
    auto it = expected.find(item.name);
    ASSERT_NE(it, expected.end()) << "no reference ids: rerun tools/gen_tokenizer_refs.mjs";
    const std::vector<int32_t> ids = tok_->Encode(item.text);
    EXPECT_EQ(ids, it->second) << FirstDifference(ids, it->second);
  }
}

TEST_P(RealTokenizerTest, DecodeOfEncodeGivesNormalizedText) {
  for (const auto& item : Corpus()) {
    SCOPED_TRACE(item.name);
    EXPECT_EQ(tok_->Decode(tok_->Encode(item.text)), Normalized(item.text));
  }
}

TEST_P(RealTokenizerTest, StreamingMatchesDecodeAndNeverSplitsUtf8) {
  for (const bool skip_special : {false, true}) {
    for (const auto& item : Corpus()) {
      SCOPED_TRACE(item.name + (skip_special ? " (skip_special)" : ""));
      const std::vector<int32_t> ids = tok_->Encode(item.text);
      StreamingDetokenizer stream(*tok_, skip_special);
      std::string streamed;
      for (int32_t id : ids) {
        const std::string chunk = stream.Add(id);
        ASSERT_TRUE(tokenizer::IsValidUtf8(chunk)) << "invalid UTF-8 chunk after id " << id;
        streamed += chunk;
      }
      const std::string rest = stream.Flush();
      EXPECT_TRUE(tokenizer::IsValidUtf8(rest));
      streamed += rest;
      EXPECT_EQ(streamed, tok_->Decode(ids, skip_special));
    }
  }
}

TEST_P(RealTokenizerTest, StreamingHoldsPartialCharactersAndRepairsBadBytes) {
  const auto& alphabet = tokenizer::ByteLevelAlphabet::Get();
  auto byte_id = [&](unsigned char b) {
    auto id = tok_->TokenToId(alphabet.Encode(b));
    EXPECT_TRUE(id.has_value()) << "no token for byte " << int{b};
    return id.value_or(0);
  };
  StreamingDetokenizer stream(*tok_, false);
  EXPECT_EQ(stream.Add(byte_id(0xE2)), "");  // € = E2 82 AC
  EXPECT_EQ(stream.Add(byte_id(0x82)), "");
  EXPECT_EQ(stream.Add(byte_id(0xAC)), "\u20AC");
  EXPECT_EQ(stream.Add(byte_id(0xF0)), "");  // F0 9F then 'A': broken sequence
  EXPECT_EQ(stream.Add(byte_id(0x9F)), "");
  EXPECT_EQ(stream.Add(byte_id('A')), "\uFFFDA");
  EXPECT_EQ(stream.Add(byte_id(0xFF)), "\uFFFD");  // never valid
  EXPECT_EQ(stream.Add(byte_id(0xE4)), "");
  EXPECT_EQ(stream.Flush(), "\uFFFD");
  const std::vector<int32_t> ids = {byte_id(0xE2), byte_id(0x82), byte_id(0xAC), byte_id(0xF0),
                                    byte_id(0x9F), byte_id('A'),  byte_id(0xFF), byte_id(0xE4)};
  EXPECT_EQ(tok_->Decode(ids), "\u20AC\uFFFDA\uFFFD\uFFFD");
}

TEST_P(RealTokenizerTest, SkipSpecialDropsOnlySpecialTokens) {
  const std::string file =
      GetParam() == "qwen3" ? "20_special_qwen.txt" : "21_special_deepseek.txt";
  const std::string text = testing::ReadTextFile(testing::TokenizerDataDir() / "corpus" / file);
  const std::vector<int32_t> ids = tok_->Encode(text);
  std::string expected = text;
  int specials_seen = 0;
  for (const auto& t : tok_->added_tokens()) {
    if (!t.special) continue;
    for (size_t p = expected.find(t.content); p != std::string::npos;
         p = expected.find(t.content)) {
      expected.erase(p, t.content.size());
      ++specials_seen;
    }
  }
  EXPECT_GT(specials_seen, 3);
  EXPECT_EQ(tok_->Decode(ids, /*skip_special=*/true), expected);
  EXPECT_EQ(tok_->Decode(ids, /*skip_special=*/false), text);
}

TEST_P(RealTokenizerTest, ParseSpecialOffEncodesSpecialTokensAsText) {
  const std::string special = GetParam() == "qwen3" ? "<|im_start|>" : "<｜begin▁of▁sentence｜>";
  const std::string text = "a" + special + "b";
  const auto parsed = tok_->Encode(text);
  const auto id = tok_->TokenToId(special);
  ASSERT_TRUE(id.has_value());
  EXPECT_TRUE(tok_->IsSpecial(*id));
  EXPECT_NE(std::find(parsed.begin(), parsed.end(), *id), parsed.end());

  const auto literal = tok_->Encode(text, /*parse_special=*/false);
  for (int32_t i : literal) EXPECT_FALSE(tok_->IsSpecial(i)) << i;
  EXPECT_GT(literal.size(), parsed.size());
  EXPECT_EQ(tok_->Decode(literal), text);

  // Non-special added tokens are still recognised.
  const std::string added = GetParam() == "qwen3" ? "<tool_call>" : "<｜User｜>";
  const auto added_id = tok_->TokenToId(added);
  ASSERT_TRUE(added_id.has_value());
  EXPECT_FALSE(tok_->IsSpecial(*added_id));
  EXPECT_EQ(tok_->Encode(added, /*parse_special=*/false), std::vector<int32_t>{*added_id});
}

TEST_P(RealTokenizerTest, InvalidUtf8IsEncodedAsReplacementCharacter) {
  EXPECT_EQ(tok_->Encode("x\xff\xfey"), tok_->Encode("x\uFFFD\uFFFDy"));
  EXPECT_EQ(tok_->Encode(std::string("a\0b", 3)).size(), 3u);
  EXPECT_TRUE(tok_->Encode("").empty());
}

TEST_P(RealTokenizerTest, ConcurrentEncodingAgreesWithSerial) {
  const auto corpus = Corpus();
  std::vector<std::vector<int32_t>> serial;
  for (const auto& item : corpus) serial.push_back(tok_->Encode(item.text));
  std::vector<std::thread> threads;
  std::vector<int> mismatches(4, 0);
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int round = 0; round < 3; ++round) {
        for (size_t i = 0; i < corpus.size(); ++i) {
          const size_t k = (i + static_cast<size_t>(t) * 7) % corpus.size();
          if (tok_->Encode(corpus[k].text) != serial[k]) ++mismatches[static_cast<size_t>(t)];
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  for (int m : mismatches) EXPECT_EQ(m, 0);
}

INSTANTIATE_TEST_SUITE_P(Tokenizers, RealTokenizerTest, ::testing::Values("qwen3", "deepseek_v3"),
                         [](const auto& info) { return info.param; });

TEST(RealTokenizerConfig, Qwen3) {
  const Tokenizer* tok = RealTokenizer("qwen3");
  ASSERT_NE(tok, nullptr);
  EXPECT_EQ(tok->vocab_size(), 151669);
  EXPECT_EQ(tok->TokenToId("<|im_start|>"), 151644);
  EXPECT_EQ(tok->IdToToken(151645), "<|im_end|>");
  EXPECT_EQ(tok->IdToToken(9707), "Hello");
  EXPECT_EQ(tok->IdToToken(-1), "");
  EXPECT_EQ(tok->IdToToken(10'000'000), "");
  EXPECT_TRUE(tok->IsSpecial(151643));
  EXPECT_FALSE(tok->IsSpecial(151657));  // <tool_call> is added but not special
  EXPECT_FALSE(tok->IsSpecial(9707));
  EXPECT_FALSE(tok->bos_token().has_value());
  EXPECT_EQ(tok->eos_token(), "<|im_end|>");
  EXPECT_EQ(tok->eos_token_id(), 151645);
  EXPECT_NE(tok->chat_template().find("<|im_start|>"), std::string::npos);
  EXPECT_EQ(tok->config().at("tokenizer_class"), "Qwen2Tokenizer");
  const std::vector<int32_t> ids = tok->Encode("Hello world");
  EXPECT_EQ(ids, (std::vector<int32_t>{9707, 1879}));
  EXPECT_EQ(tok->AddSpecialTokens(ids), ids);  // Qwen adds nothing
  EXPECT_EQ(tok->Decode(std::vector<int32_t>{9707, -5, 99'999'999, 1879}), "Hello world");
}

TEST(RealTokenizerConfig, DeepSeekV3) {
  const Tokenizer* tok = RealTokenizer("deepseek_v3");
  ASSERT_NE(tok, nullptr);
  EXPECT_EQ(tok->vocab_size(), 128815);
  EXPECT_EQ(tok->bos_token(), "<｜begin▁of▁sentence｜>");
  EXPECT_EQ(tok->bos_token_id(), 0);
  EXPECT_EQ(tok->eos_token_id(), 1);
  EXPECT_TRUE(tok->IsSpecial(0));
  EXPECT_NE(tok->chat_template().find("<｜Assistant｜>"), std::string::npos);
  const std::vector<int32_t> ids = tok->Encode("Hello");
  std::vector<int32_t> with_bos = {0};
  with_bos.insert(with_bos.end(), ids.begin(), ids.end());
  EXPECT_EQ(tok->AddSpecialTokens(ids), with_bos);  // add_bos_token: true
}

}  // namespace
}  // namespace krasis
