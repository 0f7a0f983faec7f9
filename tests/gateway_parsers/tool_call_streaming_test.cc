// ToolCallParser as a stream: when calls and argument fragments are released,
// random (mostly malformed) texts of every format giving the same result
// streamed over many chunkings as parsed whole, a large argument streamed in
// tiny chunks, and the reasoning parser feeding the tool-call parser as the
// gateway chains them.
#include <gtest/gtest.h>

#include <random>
#include <string>
#include <vector>

#include "services/gateway/parsers/reasoning_parser.h"
#include "services/gateway/parsers/tool_call_parser.h"
#include "tests/gateway_parsers/tool_call_test_util.h"

namespace krasis::gateway {
namespace {

using nlohmann::json;
using testing::Apply;
using testing::CheckStreaming;
using testing::CountingIds;
using Result = ToolCallParser::Result;

// Pushes `text` one code point at a time; returns, per call, the text offsets
// after which its first delta and each argument fragment were released.
struct Timeline {
  std::vector<size_t> first_delta_at;
  std::vector<std::vector<size_t>> fragments_at;
  Result result;
};
Timeline PushByCodePoint(ToolCallFormat format, const json& tools, std::string_view text) {
  ToolCallParser parser(format, tools, CountingIds());
  Timeline t;
  std::vector<size_t> bounds = testing::CodePointBoundaries(text);
  for (size_t i = 1; i < bounds.size(); ++i) {
    ToolCallParser::Delta d = parser.Push(text.substr(bounds[i - 1], bounds[i] - bounds[i - 1]));
    for (const ToolCallDelta& c : d.tool_calls) {
      if (c.is_first()) {
        t.first_delta_at.push_back(bounds[i]);
        t.fragments_at.emplace_back();
      } else {
        t.fragments_at[c.index].push_back(bounds[i]);
      }
    }
    Apply(d, &t.result);
  }
  Apply(parser.Finish(), &t.result);
  return t;
}

size_t EndOf(std::string_view text, std::string_view what, size_t nth = 0) {
  size_t pos = text.find(what);
  while (nth-- > 0) pos = text.find(what, pos + 1);
  return pos + what.size();
}

TEST(ToolCallStreamingTest, XmlCallsStreamNameThenEachArgument) {
  std::string text =
      "<tool_call>\n<function=write_file>\n<parameter=path>\nout.txt\n</parameter>\n"
      "<parameter=content>\nline one\nline two\n</parameter>\n</function>\n</tool_call>";
  Timeline t = PushByCodePoint(ToolCallFormat::kQwen3Coder, json::array(), text);
  ASSERT_EQ(t.first_delta_at.size(), 1u);
  EXPECT_EQ(t.first_delta_at[0], EndOf(text, "<function=write_file>"));
  ASSERT_EQ(t.fragments_at[0].size(), 3u);
  EXPECT_EQ(t.fragments_at[0][0], EndOf(text, "</parameter>"));
  EXPECT_EQ(t.fragments_at[0][1], EndOf(text, "</parameter>", 1));
  EXPECT_EQ(t.fragments_at[0][2], text.size());  // the closing brace, at </tool_call>
  EXPECT_EQ(t.result.tool_calls[0].arguments,
            R"({"path":"out.txt","content":"line one\nline two"})");

  std::string glm =
      "<tool_call>f\n<arg_key>a</arg_key>\n<arg_value>1</arg_value>\n</tool_call>";
  t = PushByCodePoint(ToolCallFormat::kGlm45, json::array(), glm);
  ASSERT_EQ(t.first_delta_at.size(), 1u);
  EXPECT_EQ(t.first_delta_at[0], EndOf(glm, "<tool_call>f\n"));
  ASSERT_EQ(t.fragments_at[0].size(), 2u);
  EXPECT_EQ(t.fragments_at[0][0], EndOf(glm, "</arg_value>"));
}

TEST(ToolCallStreamingTest, JsonCallsAreReleasedWhole) {
  std::string text = "Hi<tool_call>\n{\"name\": \"f\", \"arguments\": {\"a\": [1, 2]}}\n</tool_call>";
  Timeline t = PushByCodePoint(ToolCallFormat::kHermes, json::array(), text);
  ASSERT_EQ(t.first_delta_at.size(), 1u);
  EXPECT_EQ(t.first_delta_at[0], text.size());
  ASSERT_EQ(t.fragments_at[0].size(), 1u);
  EXPECT_EQ(t.fragments_at[0][0], text.size());
  EXPECT_EQ(t.result.content, "Hi");
}

TEST(ToolCallStreamingTest, FragmentsConcatenateToTheArguments) {
  // Many parameters, pushed in 5-byte chunks: fragments arrive separately and
  // join into the whole-text arguments.
  std::string text = "<tool_call>\n<function=f>\n";
  for (int i = 0; i < 20; ++i) {
    text += "<parameter=p" + std::to_string(i) + ">\n" + std::to_string(i * 7) + "\n</parameter>\n";
  }
  text += "</function>\n</tool_call>";
  Result whole = ToolCallParser(ToolCallFormat::kQwen3Coder, json::array(), CountingIds())
                     .ParseComplete(text);
  ToolCallParser parser(ToolCallFormat::kQwen3Coder, json::array(), CountingIds());
  Result streamed;
  int fragments = 0;
  for (size_t i = 0; i < text.size(); i += 5) {
    ToolCallParser::Delta d = parser.Push(std::string_view(text).substr(i, 5));
    for (const ToolCallDelta& c : d.tool_calls) fragments += c.is_first() ? 0 : 1;
    Apply(d, &streamed);
  }
  Apply(parser.Finish(), &streamed);
  EXPECT_GT(fragments, 10);
  ASSERT_EQ(streamed.tool_calls.size(), 1u);
  EXPECT_EQ(streamed.tool_calls[0].arguments, whole.tool_calls[0].arguments);
  EXPECT_TRUE(json::accept(streamed.tool_calls[0].arguments));
  EXPECT_EQ(json::parse(streamed.tool_calls[0].arguments)["p19"], 133);
}

TEST(ToolCallStreamingTest, LargeArgumentInTinyChunks) {
  std::string value;
  for (int i = 0; value.size() < (1 << 20); ++i) value += "line " + std::to_string(i) + " <x>\n";
  std::string text = "<tool_call>\n<function=write_file>\n<parameter=content>\n" + value +
                     "\n</parameter>\n</function>\n</tool_call>";
  ToolCallParser parser(ToolCallFormat::kQwen3Coder, json::array(), CountingIds());
  Result r;
  for (size_t i = 0; i < text.size(); i += 3) Apply(parser.Push(std::string_view(text).substr(i, 3)), &r);
  Apply(parser.Finish(), &r);
  ASSERT_EQ(r.tool_calls.size(), 1u);
  EXPECT_EQ(json::parse(r.tool_calls[0].arguments)["content"], value);
}

// Random texts built from a format's markers, fragments of markers and filler:
// mostly malformed, which is the point.
std::string RandomText(std::mt19937& rng, const std::vector<std::string>& pieces) {
  std::string text;
  for (int i = 0, n = 1 + rng() % 24; i < n; ++i) text += pieces[rng() % pieces.size()];
  return text;
}

void FuzzFormat(ToolCallFormat format, const std::vector<std::string>& pieces, uint32_t seed) {
  std::mt19937 rng(seed);
  for (int round = 0; round < 150; ++round) {
    std::string text = RandomText(rng, pieces);
    SCOPED_TRACE(text);
    CheckStreaming(format, json::array(), text, /*max_middle=*/0, /*random_count=*/15);
    if (::testing::Test::HasFailure()) return;
  }
}

TEST(ToolCallStreamingTest, RandomHermesTexts) {
  FuzzFormat(ToolCallFormat::kHermes,
             {"<tool_call>", "</tool_call>", "\n", " ", R"({"name": "f", "arguments": {"a": 1}})",
              R"({"name": "g"})", "{bad", "text", "<tool_", "</tool", "é", "🙂", "<", "}"},
             1);
}

TEST(ToolCallStreamingTest, RandomQwen3CoderTexts) {
  FuzzFormat(ToolCallFormat::kQwen3Coder,
             {"<tool_call>", "</tool_call>", "<function=f>", "<function=", "</function>",
              "<parameter=a>", "<parameter=b>", "</parameter>", "\n", "1", "x y",
              R"({"k": 2})", "<", ">", "🙂", "</param"},
             2);
}

TEST(ToolCallStreamingTest, RandomGlmTexts) {
  FuzzFormat(ToolCallFormat::kGlm45,
             {"<tool_call>", "</tool_call>", "f", "get", "\n", "<arg_key>", "</arg_key>",
              "<arg_value>", "</arg_value>", "a", "2", " ", "<", "é", "<arg_"},
             3);
}

TEST(ToolCallStreamingTest, RandomDeepseekTexts) {
  std::vector<std::string> pieces = {
      "<｜tool▁calls▁begin｜>", "<｜tool▁calls▁end｜>", "<｜tool▁call▁begin｜>",
      "<｜tool▁call▁end｜>",    "<｜tool▁sep｜>",       "function",
      "f",                      "\n",                   "```json",
      "```",                    "{}",                   R"({"a": 1})",
      "x",                      " ",                    "<｜tool▁call"};
  FuzzFormat(ToolCallFormat::kDeepseekV3, pieces, 4);
  FuzzFormat(ToolCallFormat::kDeepseekV31, pieces, 5);
}

TEST(ToolCallStreamingTest, ReasoningThenToolCalls) {
  // The gateway's chain: reasoning parser first, its content into the tool parser.
  std::string text =
      "The user wants the weather.\n</think>\n\n<tool_call>\n{\"name\": \"get_weather\", "
      "\"arguments\": {\"city\": \"Paris\"}}\n</tool_call>";
  ReasoningOptions options;
  options.starts_in_reasoning = true;
  for (const testing::Chunking& chunks : testing::Chunkings(text, 0, 30)) {
    ReasoningParser reasoning(options);
    ToolCallParser tools(ToolCallFormat::kHermes, json::array(), CountingIds());
    std::string thought;
    Result r;
    for (std::string_view chunk : chunks) {
      ReasoningDelta d = reasoning.Push(chunk);
      thought += d.reasoning;
      Apply(tools.Push(d.content), &r);
    }
    ReasoningDelta d = reasoning.Finish();
    thought += d.reasoning;
    Apply(tools.Push(d.content), &r);
    Apply(tools.Finish(), &r);
    ASSERT_EQ(thought, "The user wants the weather.\n") << testing::Describe(chunks);
    ASSERT_EQ(r.content, "\n\n") << testing::Describe(chunks);
    ASSERT_EQ(r.tool_calls.size(), 1u);
    ASSERT_EQ(r.tool_calls[0].arguments, R"({"city":"Paris"})");
  }
}

}  // namespace
}  // namespace krasis::gateway
