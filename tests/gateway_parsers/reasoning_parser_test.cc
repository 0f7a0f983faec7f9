// ReasoningParser: <think> splitting. Each case pins the whole-text result
// (Parse) and then checks that streaming the text over every chunking gives the
// same reasoning and content, with no tag fragment ever handed on (what was
// emitted so far is always a prefix of the final reasoning / content).
#include "services/gateway/parsers/reasoning_parser.h"

#include <gtest/gtest.h>

#include <string>

#include "tests/gateway_parsers/chunking.h"

namespace krasis::gateway {
namespace {

using testing::ByteChunkings;
using testing::Chunking;
using testing::Chunkings;
using testing::Describe;

ReasoningDelta Stream(const ReasoningOptions& options, const Chunking& chunks,
                      const ReasoningDelta& expected) {
  ReasoningParser parser(options);
  ReasoningDelta total;
  auto add = [&](const ReasoningDelta& d) {
    total.reasoning += d.reasoning;
    total.content += d.content;
    EXPECT_TRUE(std::string_view(expected.reasoning).starts_with(total.reasoning))
        << "reasoning so far \"" << total.reasoning << "\" for " << Describe(chunks);
    EXPECT_TRUE(std::string_view(expected.content).starts_with(total.content))
        << "content so far \"" << total.content << "\" for " << Describe(chunks);
  };
  for (std::string_view chunk : chunks) add(parser.Push(chunk));
  add(parser.Finish());
  EXPECT_TRUE(parser.in_content());
  EXPECT_TRUE(parser.Push("late").empty());
  return total;
}

// Checks Parse(text) == {reasoning, content} and that every chunking agrees.
void Check(std::string_view text, const ReasoningOptions& options, std::string_view reasoning,
           std::string_view content) {
  ReasoningDelta whole = ReasoningParser::Parse(text, options);
  ASSERT_EQ(whole.reasoning, reasoning) << text;
  ASSERT_EQ(whole.content, content) << text;
  for (const Chunking& chunks : Chunkings(text)) {
    ReasoningDelta got = Stream(options, chunks, whole);
    ASSERT_EQ(got.reasoning, whole.reasoning) << Describe(chunks);
    ASSERT_EQ(got.content, whole.content) << Describe(chunks);
  }
  for (const Chunking& chunks : ByteChunkings(text)) {
    ReasoningDelta got = Stream(options, chunks, whole);
    ASSERT_EQ(got.reasoning, whole.reasoning) << Describe(chunks);
    ASSERT_EQ(got.content, whole.content) << Describe(chunks);
  }
}

ReasoningOptions InPrompt() {
  ReasoningOptions options;
  options.starts_in_reasoning = true;
  return options;
}

TEST(ReasoningParserTest, SplitsAtTagsAcrossChunks) {
  Check("<think>abc</think>xyz", {}, "abc", "xyz");
  // Qwen3's shape: whitespace around the tags is kept, as vLLM does.
  Check("<think>\nLet me think.\n</think>\n\nThe answer is 4.", {}, "\nLet me think.\n",
        "\n\nThe answer is 4.");
}

TEST(ReasoningParserTest, NoTagsIsAllContent) {
  Check("Just an answer.", {}, "", "Just an answer.");
  Check("", {}, "", "");
  Check("   ", {}, "", "   ");
  // A tag that is not at the start is plain text.
  Check("Answer: <think>x</think> y", {}, "", "Answer: <think>x</think> y");
  // Without a start tag an end tag is plain text too (thinking disabled).
  Check("text</think>more", {}, "", "text</think>more");
  // Something that starts like the tag but is not.
  Check("<thinking>no</thinking>", {}, "", "<thinking>no</thinking>");
  Check("<thin", {}, "", "<thin");
}

TEST(ReasoningParserTest, LeadingWhitespaceBeforeStartTagIsDropped) {
  Check("\n\n<think>r</think>c", {}, "r", "c");
}

TEST(ReasoningParserTest, StartsInReasoning) {
  Check("Okay, the user wants...\n</think>\n\nHello!", InPrompt(), "Okay, the user wants...\n",
        "\n\nHello!");
  // The model writes <think> anyway: dropped.
  Check("<think>\nr\n</think>\n\nc", InPrompt(), "\nr\n", "\n\nc");
  // Empty reasoning.
  Check("</think>answer", InPrompt(), "", "answer");
  // Cut off before the end tag: all reasoning, whitespace included.
  Check("\n\nstill thinking", InPrompt(), "\n\nstill thinking", "");
  Check("", InPrompt(), "", "");
}

TEST(ReasoningParserTest, OnlyThinking) {
  Check("<think>only reasoning</think>", {}, "only reasoning", "");
  Check("<think>cut off by max_tokens", {}, "cut off by max_tokens", "");
  Check("<think>partial end tag </thi", {}, "partial end tag </thi", "");
  Check("<think></think>", {}, "", "");
}

TEST(ReasoningParserTest, OnlyTheFirstEndTagCounts) {
  Check("<think>a</think>b</think>c", {}, "a", "b</think>c");
  Check("<think>a<think>b</think>c", {}, "a<think>b", "c");
}

TEST(ReasoningParserTest, MultiByteText) {
  Check("<think>思考一下🙂</think>答案是四。", {}, "思考一下🙂", "答案是四。");
  Check("让我想想……</think>\n\n好的🙂", InPrompt(), "让我想想……", "\n\n好的🙂");
}

TEST(ReasoningParserTest, CustomTags) {
  ReasoningOptions seed;
  seed.start_tag = "<seed:think>";
  seed.end_tag = "</seed:think>";
  Check("<seed:think>r</seed:think>c", seed, "r", "c");
  Check("<think>r</think>c", seed, "", "<think>r</think>c");
}

TEST(ReasoningParserTest, StreamingHandsTextOnEarly) {
  ReasoningParser parser(InPrompt());
  EXPECT_EQ(parser.Push("Let me").reasoning, "Let me");
  ReasoningDelta d = parser.Push(" think</th");
  EXPECT_EQ(d.reasoning, " think");  // "</th" held back
  EXPECT_FALSE(parser.in_content());
  d = parser.Push("ink>\n\nHi");
  EXPECT_EQ(d.reasoning, "");
  EXPECT_EQ(d.content, "\n\nHi");
  EXPECT_TRUE(parser.in_content());
  EXPECT_TRUE(parser.Finish().empty());
}

}  // namespace
}  // namespace krasis::gateway
