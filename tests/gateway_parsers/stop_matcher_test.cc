// StopMatcher: stop strings matched on streamed text. Every case runs over every
// chunking of its text (tests/gateway_parsers/chunking.h) and checks, after every
// Push, that what was emitted so far is a prefix of the final output (so no part
// of a stop string ever leaked) and ends on a code point boundary; the final
// output must equal the whole-text rule (FindFirstStop).
#include "services/gateway/parsers/stop_matcher.h"

#include <gtest/gtest.h>

#include <random>
#include <string>
#include <vector>

#include "tests/gateway_parsers/chunking.h"

namespace krasis::gateway {
namespace {

using testing::ByteChunkings;
using testing::Chunking;
using testing::Chunkings;
using testing::Describe;

struct Outcome {
  std::string output;
  bool stopped = false;
  std::string matched;
};

// The whole-text rule.
Outcome Expected(std::string_view text, const std::vector<std::string>& stops) {
  Outcome out;
  std::optional<StopMatch> m = FindFirstStop(text, stops);
  if (!m) {
    out.output = std::string(text);
    return out;
  }
  out.output = std::string(text.substr(0, m->pos));
  out.stopped = true;
  out.matched = stops[m->stop_index];
  return out;
}

bool IsBoundary(std::string_view text, size_t pos) {
  return pos >= text.size() || (static_cast<unsigned char>(text[pos]) & 0xC0) != 0x80;
}

// Streams `chunks`, checking the invariants after every step.
Outcome Stream(const std::vector<std::string>& stops, const Chunking& chunks,
               const Outcome& expected, bool check_boundaries = true) {
  StopMatcher matcher(stops);
  Outcome out;
  for (std::string_view chunk : chunks) {
    StopResult r = matcher.Push(chunk);
    out.output += r.emit;
    EXPECT_TRUE(std::string_view(expected.output).starts_with(out.output))
        << "leaked \"" << out.output << "\" for " << Describe(chunks);
    if (check_boundaries) {
      EXPECT_TRUE(IsBoundary(expected.output, out.output.size())) << Describe(chunks);
    }
    if (r.stopped) {
      out.stopped = true;
      out.matched = r.matched;
    }
  }
  out.output += matcher.Finish();
  return out;
}

void CheckAllChunkings(std::string_view text, const std::vector<std::string>& stops) {
  Outcome expected = Expected(text, stops);
  for (const Chunking& chunks : Chunkings(text)) {
    Outcome got = Stream(stops, chunks, expected);
    ASSERT_EQ(got.output, expected.output) << Describe(chunks);
    ASSERT_EQ(got.stopped, expected.stopped) << Describe(chunks);
    ASSERT_EQ(got.matched, expected.matched) << Describe(chunks);
  }
}

TEST(StopMatcherTest, MatchesAcrossChunkBoundaries) {
  EXPECT_EQ(Expected("Hello world END of text", {"END"}).output, "Hello world ");
  CheckAllChunkings("Hello world END of text", {"END"});
  CheckAllChunkings("a long stop string: <|im_end|> and more", {"<|im_end|>"});
}

TEST(StopMatcherTest, SeveralStopsWithOverlappingPrefixes) {
  std::vector<std::string> stops = {"</answer>", "</ans>", "</a>", "###", "##!"};
  std::string text = "x </an </ans </answ # ## #! ##!? tail </answer>";
  Outcome e = Expected(text, stops);
  EXPECT_EQ(e.output, "x </an </ans </answ # ## #! ");
  EXPECT_EQ(e.matched, "##!");
  CheckAllChunkings(text, stops);
  CheckAllChunkings("x </an </ans </answ # ## #! tail </answer> after", stops);
}

TEST(StopMatcherTest, EarliestEndWinsThenLongest) {
  // "bc" completes before "abcd" could.
  EXPECT_EQ(Expected("xabcd", {"abcd", "bc"}).output, "xa");
  CheckAllChunkings("xabcd", {"abcd", "bc"});
  // Both end at the same byte: the one that starts first.
  Outcome tie = Expected("xabc", {"bc", "abc"});
  EXPECT_EQ(tie.output, "x");
  EXPECT_EQ(tie.matched, "abc");
  CheckAllChunkings("xabc", {"bc", "abc"});
}

TEST(StopMatcherTest, SelfOverlappingStopStrings) {
  CheckAllChunkings("aaab", {"aab"});
  EXPECT_EQ(Expected("xabaabab", {"abab"}).output, "xaba");
  CheckAllChunkings("xabaabab", {"abab"});
  CheckAllChunkings("ababababx", {"ababx"});
}

TEST(StopMatcherTest, StopAtTheVeryStart) {
  Outcome e = Expected("STOPrest", {"STOP"});
  EXPECT_EQ(e.output, "");
  EXPECT_TRUE(e.stopped);
  CheckAllChunkings("STOPrest", {"STOP"});
  CheckAllChunkings("STOP", {"STOP"});
}

TEST(StopMatcherTest, NoMatchReleasesHeldTextAtFinish) {
  CheckAllChunkings("hello ST", {"STOP"});
  CheckAllChunkings("no stops here", {"STOP", "END"});
  StopMatcher matcher({"STOP"});
  EXPECT_EQ(matcher.Push("hello ST").emit, "hello ");
  EXPECT_EQ(matcher.Push("O").emit, "");
  EXPECT_EQ(matcher.Finish(), "STO");
}

TEST(StopMatcherTest, MultiByteUtf8AroundStops) {
  CheckAllChunkings("你好世界。再见", {"。", "結束"});
  EXPECT_EQ(Expected("你好世界。再见", {"。"}).output, "你好世界");
  CheckAllChunkings("结束前的文字结束后", {"结束后", "结尾"});
  CheckAllChunkings("🙂🙃 done 🛑 after", {"🛑"});
  CheckAllChunkings("a🙂🙂b🙂🙂🙂c", {"🙂🙂🙂"});
  EXPECT_EQ(Expected("a🙂🙂b🙂🙂🙂c", {"🙂🙂🙂"}).output, "a🙂🙂b");
  // A stop string that shares its first bytes with other characters (U+4E16 vs
  // U+4E17 share two of their three bytes).
  CheckAllChunkings("世丗世界", {"世界"});
}

TEST(StopMatcherTest, ByteSplitsInsideCodePointsAreHeldUntilComplete) {
  std::string text = "前🙂后 stop 末";
  std::vector<std::string> stops = {"stop", "🙃"};
  Outcome expected = Expected(text, stops);
  for (const Chunking& chunks : ByteChunkings(text)) {
    Outcome got = Stream(stops, chunks, expected, /*check_boundaries=*/true);
    ASSERT_EQ(got.output, expected.output) << Describe(chunks);
  }
}

TEST(StopMatcherTest, IncludeStopStringAndPushAfterStop) {
  StopMatcher matcher({"END"}, /*include_stop_string=*/true);
  StopResult r = matcher.Push("abc EN");
  EXPECT_EQ(r.emit, "abc ");
  r = matcher.Push("D tail");
  EXPECT_EQ(r.emit, "END");
  EXPECT_TRUE(r.stopped);
  EXPECT_EQ(r.matched, "END");
  r = matcher.Push("more");
  EXPECT_TRUE(r.stopped);
  EXPECT_EQ(r.emit, "");
  EXPECT_EQ(matcher.Finish(), "");
}

TEST(StopMatcherTest, NoStopStringsPassTextThrough) {
  StopMatcher matcher({"", ""});
  EXPECT_TRUE(matcher.empty());
  EXPECT_EQ(matcher.Push("<|im_end|>").emit, "<|im_end|>");
  EXPECT_EQ(matcher.Finish(), "");
}

TEST(StopMatcherTest, RandomTextsAgreeWithWholeTextRule) {
  std::mt19937 rng(7);
  const std::vector<std::string> alphabet = {"a", "b", "c", "é", "🙂", " "};
  auto random_string = [&](size_t max_len) {
    std::string s;
    size_t len = 1 + rng() % max_len;
    for (size_t i = 0; i < len; ++i) s += alphabet[rng() % alphabet.size()];
    return s;
  };
  for (int round = 0; round < 300; ++round) {
    std::vector<std::string> stops;
    for (int i = 0, n = 1 + rng() % 4; i < n; ++i) stops.push_back(random_string(4));
    std::string text = random_string(30);
    Outcome expected = Expected(text, stops);
    for (const Chunking& chunks : Chunkings(text, /*max_middle=*/0, /*random_count=*/10,
                                            /*seed=*/round)) {
      Outcome got = Stream(stops, chunks, expected);
      ASSERT_EQ(got.output, expected.output) << text << " " << Describe(chunks);
      ASSERT_EQ(got.matched, expected.matched) << text << " " << Describe(chunks);
    }
  }
}

}  // namespace
}  // namespace krasis::gateway
