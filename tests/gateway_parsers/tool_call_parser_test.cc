// ToolCallParser, format by format: each case pins the whole-text result
// (content and tool_calls) and then checks that streaming the same text over
// every chunking gives exactly that (tool_call_test_util.h), so every marker is
// also exercised split at every position.
#include "services/gateway/parsers/tool_call_parser.h"

#include <gtest/gtest.h>

#include <cctype>
#include <set>
#include <string>

#include "tests/gateway_parsers/tool_call_test_util.h"

namespace krasis::gateway {
namespace {

using nlohmann::json;
using testing::CheckStreaming;
using Result = ToolCallParser::Result;

void ExpectCall(const Result& r, size_t i, std::string_view name, std::string_view arguments) {
  ASSERT_LT(i, r.tool_calls.size());
  EXPECT_EQ(r.tool_calls[i].name, name);
  EXPECT_EQ(r.tool_calls[i].arguments, arguments);
  EXPECT_EQ(r.tool_calls[i].id, "call_" + std::to_string(i));
}

// The tools array of a request, for schema typing.
json Tools() {
  return json::parse(R"([
    {"type": "function", "function": {"name": "write_file", "parameters": {
      "type": "object", "properties": {
        "path": {"type": "string"}, "content": {"type": "string"},
        "mode": {"type": "integer"}, "overwrite": {"type": "boolean"},
        "options": {"type": "object"}, "tags": {"type": "array"},
        "ratio": {"type": "number"}, "zip": {"type": "string"},
        "limit": {"type": ["integer", "null"]}}}}},
    {"type": "function", "function": {"name": "get_weather", "parameters": {
      "type": "object", "properties": {
        "city": {"type": "string"}, "days": {"type": "integer"}, "code": {"type": "string"}}}}}
  ])");
}

// ---------------------------------------------------------------- Hermes (Qwen3)

TEST(HermesToolCallTest, OneCall) {
  Result r = CheckStreaming(ToolCallFormat::kHermes, json::array(),
                            "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": "
                            "{\"city\": \"Paris\", \"unit\": \"c\"}}\n</tool_call>");
  EXPECT_EQ(r.content, "");
  ASSERT_EQ(r.tool_calls.size(), 1u);
  ExpectCall(r, 0, "get_weather", R"({"city":"Paris","unit":"c"})");
}

TEST(HermesToolCallTest, TwoCallsWithContentBefore) {
  Result r = CheckStreaming(
      ToolCallFormat::kHermes, json::array(),
      "Let me check both.\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": "
      "\"東京 🗼\"}}\n</tool_call>\n<tool_call>\n{\"name\": \"get_time\", \"arguments\": "
      "{\"tz\": \"Asia/Tokyo\", \"n\": [1, 2.5, true, null]}}\n</tool_call>");
  EXPECT_EQ(r.content, "Let me check both.\n");
  ASSERT_EQ(r.tool_calls.size(), 2u);
  ExpectCall(r, 0, "get_weather", R"({"city":"東京 🗼"})");
  ExpectCall(r, 1, "get_time", R"({"tz":"Asia/Tokyo","n":[1,2.5,true,null]})");
}

TEST(HermesToolCallTest, TextAfterACallIsContentAgain) {
  Result r = CheckStreaming(ToolCallFormat::kHermes, json::array(),
                            "<tool_call>{\"name\": \"f\", \"arguments\": {}}</tool_call>\n\nDone.");
  EXPECT_EQ(r.content, "\n\nDone.");
  ExpectCall(r, 0, "f", "{}");
  // Whitespace that only trails the calls is dropped.
  r = CheckStreaming(ToolCallFormat::kHermes, json::array(),
                     "<tool_call>{\"name\": \"f\"}</tool_call>\n  \n");
  EXPECT_EQ(r.content, "");
  ExpectCall(r, 0, "f", "{}");
}

TEST(HermesToolCallTest, ArgumentVariants) {
  // Arguments given as a JSON string, or as "parameters"; key order is kept.
  Result r = CheckStreaming(
      ToolCallFormat::kHermes, json::array(),
      "<tool_call>{\"name\": \"f\", \"arguments\": \"{\\\"z\\\": 1, \\\"a\\\": 2}\"}</tool_call>"
      "<tool_call>{\"name\": \"g\", \"parameters\": {\"z\": 1, \"a\": {\"b\": \"c\"}}}</tool_call>");
  ExpectCall(r, 0, "f", R"({"z":1,"a":2})");
  ExpectCall(r, 1, "g", R"({"z":1,"a":{"b":"c"}})");
}

TEST(HermesToolCallTest, MalformedCallsFallBackToContent) {
  std::string bad = "<tool_call>\n{\"name\": \"f\", \"arguments\": {bad json}}\n</tool_call>";
  Result r = CheckStreaming(ToolCallFormat::kHermes, json::array(), "Hi " + bad + " bye");
  EXPECT_EQ(r.content, "Hi " + bad + " bye");
  EXPECT_TRUE(r.tool_calls.empty());

  // A good call and a bad one: the good one survives, ids stay dense.
  r = CheckStreaming(ToolCallFormat::kHermes, json::array(),
                     bad + "\n<tool_call>{\"name\": \"ok\", \"arguments\": {\"a\": 1}}</tool_call>");
  EXPECT_EQ(r.content, bad + "\n");
  ASSERT_EQ(r.tool_calls.size(), 1u);
  ExpectCall(r, 0, "ok", R"({"a":1})");

  // No name, a non-object, arguments that are not an object.
  for (std::string body : {"{\"arguments\": {}}", "[1, 2]", "{\"name\": \"f\", \"arguments\": 3}",
                           "{\"name\": \"bad name\", \"arguments\": {}}", ""}) {
    std::string text = "<tool_call>" + body + "</tool_call>";
    r = CheckStreaming(ToolCallFormat::kHermes, json::array(), text);
    EXPECT_EQ(r.content, text);
    EXPECT_TRUE(r.tool_calls.empty()) << text;
  }
}

TEST(HermesToolCallTest, CutOffCalls) {
  // Ended before </tool_call> but the JSON is whole: still a call.
  Result r = CheckStreaming(ToolCallFormat::kHermes, json::array(),
                            "<tool_call>\n{\"name\": \"f\", \"arguments\": {\"a\": 1}}\n");
  ExpectCall(r, 0, "f", R"({"a":1})");
  EXPECT_EQ(r.content, "");
  // Cut inside the JSON: content.
  std::string cut = "ok <tool_call>\n{\"name\": \"f\", \"argu";
  r = CheckStreaming(ToolCallFormat::kHermes, json::array(), cut);
  EXPECT_EQ(r.content, cut);
  EXPECT_TRUE(r.tool_calls.empty());
  // Cut inside the begin marker.
  r = CheckStreaming(ToolCallFormat::kHermes, json::array(), "text <tool_ca");
  EXPECT_EQ(r.content, "text <tool_ca");
}

TEST(HermesToolCallTest, MarkerLookalikesStayContent) {
  std::string text = "a < b, <tool_x> c, </tool_call> d <tool_cal> e";
  Result r = CheckStreaming(ToolCallFormat::kHermes, json::array(), text);
  EXPECT_EQ(r.content, text);
  EXPECT_TRUE(r.tool_calls.empty());
}

// ---------------------------------------------------------------- Qwen3-Coder

const char kCoderCall[] =
    "I'll write it.\n\n<tool_call>\n<function=write_file>\n"
    "<parameter=path>\n/tmp/a.py\n</parameter>\n"
    "<parameter=content>\ndef f():\n    return 1\n</parameter>\n"
    "<parameter=mode>\n644\n</parameter>\n"
    "<parameter=overwrite>\nTrue\n</parameter>\n"
    "<parameter=options>\n{\"x\": [1, 2]}\n</parameter>\n"
    "<parameter=ratio>\n0.5\n</parameter>\n"
    "<parameter=zip>\n01234\n</parameter>\n"
    "<parameter=limit>\nnull\n</parameter>\n"
    "</function>\n</tool_call>";

TEST(Qwen3CoderToolCallTest, OneCallTypedBySchema) {
  Result r = CheckStreaming(ToolCallFormat::kQwen3Coder, Tools(), kCoderCall);
  EXPECT_EQ(r.content, "I'll write it.\n\n");
  ASSERT_EQ(r.tool_calls.size(), 1u);
  ExpectCall(r, 0, "write_file",
             R"({"path":"/tmp/a.py","content":"def f():\n    return 1","mode":644,)"
             R"("overwrite":true,"options":{"x":[1,2]},"ratio":0.5,"zip":"01234","limit":null})");
}

TEST(Qwen3CoderToolCallTest, WithoutSchemaValuesAreJsonOrStrings) {
  Result r = CheckStreaming(ToolCallFormat::kQwen3Coder, json::array(), kCoderCall);
  ExpectCall(r, 0, "write_file",
             R"({"path":"/tmp/a.py","content":"def f():\n    return 1","mode":644,)"
             R"("overwrite":"True","options":{"x":[1,2]},"ratio":0.5,"zip":"01234","limit":null})");
}

TEST(Qwen3CoderToolCallTest, TwoCallsAndBareFunction) {
  Result r = CheckStreaming(
      ToolCallFormat::kQwen3Coder, Tools(),
      "<tool_call>\n<function=get_weather>\n<parameter=city>\nParis\n</parameter>\n"
      "<parameter=days>\n3\n</parameter>\n</function>\n</tool_call>\n"
      "<function=get_weather>\n<parameter=city>\n北京\n</parameter>\n</function>");
  EXPECT_EQ(r.content, "");
  ASSERT_EQ(r.tool_calls.size(), 2u);
  ExpectCall(r, 0, "get_weather", R"({"city":"Paris","days":3})");
  ExpectCall(r, 1, "get_weather", R"({"city":"北京"})");
}

TEST(Qwen3CoderToolCallTest, LenientParameterEnds) {
  // Missing </parameter>: a value ends at the next parameter or </function>.
  Result r = CheckStreaming(ToolCallFormat::kQwen3Coder, json::array(),
                            "<tool_call>\n<function=f>\n<parameter=a>\n1\n<parameter=b>\n"
                            "two\n</function>\n</tool_call>");
  ExpectCall(r, 0, "f", R"({"a":1,"b":"two"})");
  // No parameters at all, and a call cut off mid-value.
  r = CheckStreaming(ToolCallFormat::kQwen3Coder, json::array(),
                     "<tool_call>\n<function=list_files>\n</function>\n</tool_call>"
                     "<tool_call>\n<function=g>\n<parameter=x>\nabc");
  ExpectCall(r, 0, "list_files", "{}");
  ExpectCall(r, 1, "g", R"({"x":"abc"})");
}

TEST(Qwen3CoderToolCallTest, MalformedFallsBackToContent) {
  std::string text = "<tool_call>\nno function here\n</tool_call> and <function=bad name>x</function>";
  Result r = CheckStreaming(ToolCallFormat::kQwen3Coder, json::array(), text);
  EXPECT_EQ(r.content, text);
  EXPECT_TRUE(r.tool_calls.empty());
}

// ---------------------------------------------------------------- GLM-4.5 / 4.7

TEST(GlmToolCallTest, OneCallTypedBySchema) {
  Result r = CheckStreaming(
      ToolCallFormat::kGlm45, Tools(),
      "<tool_call>get_weather\n<arg_key>city</arg_key>\n<arg_value>北京</arg_value>\n"
      "<arg_key>days</arg_key>\n<arg_value>3</arg_value>\n<arg_key>code</arg_key>\n"
      "<arg_value>007</arg_value>\n</tool_call>");
  EXPECT_EQ(r.content, "");
  ExpectCall(r, 0, "get_weather", R"({"city":"北京","days":3,"code":"007"})");
}

TEST(GlmToolCallTest, TwoCallsGlm47StyleWithContentBefore) {
  Result r = CheckStreaming(
      ToolCallFormat::kGlm45, json::array(),
      "Checking.<tool_call>get_weather<arg_key>city</arg_key><arg_value>Paris</arg_value>"
      "<arg_key>when</arg_key><arg_value>[1, 2]</arg_value></tool_call>"
      "<tool_call>get_time</tool_call>");
  EXPECT_EQ(r.content, "Checking.");
  ASSERT_EQ(r.tool_calls.size(), 2u);
  ExpectCall(r, 0, "get_weather", R"({"city":"Paris","when":[1,2]})");
  ExpectCall(r, 1, "get_time", "{}");
}

TEST(GlmToolCallTest, MalformedFallsBackToContent) {
  for (std::string text : {std::string("<tool_call>\n</tool_call>"),
                           std::string("<tool_call>{\"name\": \"f\"}</tool_call>")}) {
    Result r = CheckStreaming(ToolCallFormat::kGlm45, json::array(), text);
    EXPECT_EQ(r.content, text);
    EXPECT_TRUE(r.tool_calls.empty());
  }
}

// ---------------------------------------------------------------- DeepSeek

TEST(DeepseekToolCallTest, V3TwoCalls) {
  Result r = CheckStreaming(
      ToolCallFormat::kDeepseekV3, json::array(),
      "Sure.<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>get_weather\n"
      "```json\n{\"location\": \"Beijing\"}\n```<｜tool▁call▁end｜>\n"
      "<｜tool▁call▁begin｜>function<｜tool▁sep｜>get_time\n```json\n{}\n```"
      "<｜tool▁call▁end｜><｜tool▁calls▁end｜>");
  EXPECT_EQ(r.content, "Sure.");
  ASSERT_EQ(r.tool_calls.size(), 2u);
  ExpectCall(r, 0, "get_weather", R"({"location":"Beijing"})");
  ExpectCall(r, 1, "get_time", "{}");
}

TEST(DeepseekToolCallTest, V31OneAndTwoCalls) {
  Result r = CheckStreaming(ToolCallFormat::kDeepseekV31, json::array(),
                            "<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>get_weather<｜tool▁sep｜>"
                            "{\"location\": \"Tokyo\"}<｜tool▁call▁end｜><｜tool▁calls▁end｜>");
  EXPECT_EQ(r.content, "");
  ExpectCall(r, 0, "get_weather", R"({"location":"Tokyo"})");

  r = CheckStreaming(ToolCallFormat::kDeepseekV31, json::array(),
                     "好的。<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>a<｜tool▁sep｜>{\"x\": 1}"
                     "<｜tool▁call▁end｜><｜tool▁call▁begin｜>b<｜tool▁sep｜>{}<｜tool▁call▁end｜>"
                     "<｜tool▁calls▁end｜>\nDone.");
  EXPECT_EQ(r.content, "好的。\nDone.");
  ExpectCall(r, 0, "a", R"({"x":1})");
  ExpectCall(r, 1, "b", "{}");
}

TEST(DeepseekToolCallTest, MalformedAndStrayText) {
  std::string bad = "<｜tool▁call▁begin｜>get_weather<｜tool▁sep｜>{bad<｜tool▁call▁end｜>";
  Result r = CheckStreaming(ToolCallFormat::kDeepseekV31, json::array(),
                            "<｜tool▁calls▁begin｜>" + bad +
                                "<｜tool▁call▁begin｜>ok<｜tool▁sep｜>{}<｜tool▁call▁end｜>"
                                "<｜tool▁calls▁end｜>");
  EXPECT_EQ(r.content, bad);
  ExpectCall(r, 0, "ok", "{}");
  // Text inside the section ends it; the end marker is then plain text.
  r = CheckStreaming(ToolCallFormat::kDeepseekV31, json::array(),
                     "<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>a<｜tool▁sep｜>{}"
                     "<｜tool▁call▁end｜>\noops<｜tool▁calls▁end｜>");
  EXPECT_EQ(r.content, "\noops<｜tool▁calls▁end｜>");
  ExpectCall(r, 0, "a", "{}");
  // V3 body without the name line.
  r = CheckStreaming(ToolCallFormat::kDeepseekV3, json::array(),
                     "<｜tool▁call▁begin｜>function<｜tool▁sep｜>f<｜tool▁call▁end｜>");
  EXPECT_EQ(r.content, "<｜tool▁call▁begin｜>function<｜tool▁sep｜>f<｜tool▁call▁end｜>");
}

// ---------------------------------------------------------------- format choice, ids, JSON

TEST(ToolCallFormatTest, ChosenFromTemplateMarkers) {
  EXPECT_EQ(ToolCallFormatFor("{{- '<tool_call>\\n<function=' + tool_call.name + '>\\n' }}"),
            ToolCallFormat::kQwen3Coder);
  EXPECT_EQ(ToolCallFormatFor("<tool_call>{{ tc.name }}<arg_key>{{ k }}</arg_key>"),
            ToolCallFormat::kGlm45);
  EXPECT_EQ(ToolCallFormatFor("{{'<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>' + tool['type'] + "
                              "'<｜tool▁sep｜>' + tool['function']['name'] + '\\n' + '```json'}}"),
            ToolCallFormat::kDeepseekV3);
  EXPECT_EQ(ToolCallFormatFor("{{'<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>'+ "
                              "tool['function']['name'] + '<｜tool▁sep｜>'}}"),
            ToolCallFormat::kDeepseekV31);
  EXPECT_EQ(ToolCallFormatFor("<tool_call>\\n{\"name\": <function-name>, \"arguments\": ...}"),
            ToolCallFormat::kHermes);
  EXPECT_EQ(ToolCallFormatFor("qwen3_next"), ToolCallFormat::kHermes);
  EXPECT_EQ(ToolCallFormatFor("glm4_moe"), ToolCallFormat::kGlm45);
  EXPECT_EQ(ToolCallFormatFor("deepseek_v3"), ToolCallFormat::kDeepseekV31);
  EXPECT_EQ(ToolCallFormatFor("llama"), std::nullopt);
  EXPECT_EQ(ToolCallFormatFromName("glm45").value(), ToolCallFormat::kGlm45);
  EXPECT_FALSE(ToolCallFormatFromName("nope").ok());
}

TEST(ToolCallIdTest, RandomIdsAreWellFormedAndDistinct) {
  std::set<std::string> seen;
  for (int i = 0; i < 2000; ++i) {
    std::string id = RandomToolCallId();
    ASSERT_EQ(id.size(), 29u);
    ASSERT_TRUE(id.starts_with("call_"));
    for (char c : id.substr(5)) ASSERT_TRUE(std::isalnum(static_cast<unsigned char>(c))) << id;
    seen.insert(id);
  }
  EXPECT_EQ(seen.size(), 2000u);
  // The default generator is used when none is given.
  ToolCallParser parser(ToolCallFormat::kHermes);
  Result r = parser.ParseComplete("<tool_call>{\"name\":\"a\"}</tool_call><tool_call>{\"name\":"
                                  "\"b\"}</tool_call>");
  ASSERT_EQ(r.tool_calls.size(), 2u);
  EXPECT_NE(r.tool_calls[0].id, r.tool_calls[1].id);
  EXPECT_TRUE(r.tool_calls[0].id.starts_with("call_"));
}

TEST(ToolCallJsonTest, OpenAiShapes) {
  ToolCall call{"call_1", "f", R"({"a":1})"};
  EXPECT_EQ(call.ToJson(), json::parse(R"({"id": "call_1", "type": "function",
                                           "function": {"name": "f", "arguments": "{\"a\":1}"}})"));
  ToolCallDelta first{0, "call_1", "f", ""};
  EXPECT_EQ(first.ToJson(), json::parse(R"({"index": 0, "id": "call_1", "type": "function",
                                            "function": {"name": "f", "arguments": ""}})"));
  ToolCallDelta more{0, "", "", "{\"a\""};
  EXPECT_EQ(more.ToJson(), json::parse(R"({"index": 0, "function": {"arguments": "{\"a\""}})"));
}

}  // namespace
}  // namespace krasis::gateway
