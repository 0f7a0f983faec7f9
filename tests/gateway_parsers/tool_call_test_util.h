// Helpers for the ToolCallParser tests: deterministic call ids, streaming a
// chunking into a Result while checking the delta protocol, and the
// stream == whole-text check over every chunking.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <memory>
#include <string>
#include <vector>

#include "services/gateway/parsers/tool_call_parser.h"
#include "tests/gateway_parsers/chunking.h"

namespace krasis::gateway::testing {

// call_0, call_1, ... (a fresh sequence per parser).
inline ToolCallIdGenerator CountingIds() {
  auto next = std::make_shared<int>(0);
  return [next] { return "call_" + std::to_string((*next)++); };
}

inline bool SameCalls(const std::vector<ToolCall>& a, const std::vector<ToolCall>& b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    if (a[i].id != b[i].id || a[i].name != b[i].name || a[i].arguments != b[i].arguments) {
      return false;
    }
  }
  return true;
}

inline std::string Show(const ToolCallParser::Result& r) {
  std::string out = "content=\"" + r.content + "\"";
  for (const ToolCall& c : r.tool_calls) out += " " + c.ToJson().dump();
  return out;
}

// Applies one Delta to an accumulating Result, checking the delta protocol:
// a first delta opens call number `index` with an id, a name and arguments "";
// later deltas only extend an open call.
inline void Apply(const ToolCallParser::Delta& delta, ToolCallParser::Result* r) {
  r->content += delta.content;
  for (const ToolCallDelta& d : delta.tool_calls) {
    if (d.is_first()) {
      ASSERT_EQ(d.index, static_cast<int>(r->tool_calls.size()));
      ASSERT_FALSE(d.name.empty());
      ASSERT_EQ(d.arguments, "");
      r->tool_calls.push_back(ToolCall{d.id, d.name, ""});
    } else {
      ASSERT_GE(d.index, 0);
      ASSERT_LT(d.index, static_cast<int>(r->tool_calls.size()));
      ASSERT_TRUE(d.name.empty());
      ASSERT_FALSE(d.arguments.empty());
      r->tool_calls[d.index].arguments += d.arguments;
    }
  }
}

// Streams `chunks`; checks after every Push that the content so far is a prefix
// of `expected`'s (no marker fragment leaked) and ends on a code point boundary.
inline ToolCallParser::Result Stream(ToolCallFormat format, const nlohmann::json& tools,
                                     const Chunking& chunks,
                                     const ToolCallParser::Result& expected) {
  ToolCallParser parser(format, tools, CountingIds());
  ToolCallParser::Result r;
  for (std::string_view chunk : chunks) {
    Apply(parser.Push(chunk), &r);
    EXPECT_TRUE(std::string_view(expected.content).starts_with(r.content))
        << "content so far \"" << r.content << "\" for " << Describe(chunks);
    if (r.content.size() < expected.content.size()) {
      EXPECT_NE(static_cast<unsigned char>(expected.content[r.content.size()]) & 0xC0, 0x80)
          << Describe(chunks);
    }
  }
  Apply(parser.Finish(), &r);
  EXPECT_TRUE(parser.Push("late").empty());
  return r;
}

// The longest marker of a format: three-way splits with a middle chunk this
// long cut every marker every way.
inline size_t LongestMarker(ToolCallFormat format) {
  const FormatSpec& spec = SpecFor(format);
  size_t longest = std::max(spec.section_begin.size(), spec.section_end.size());
  for (const CallMarkers& m : spec.calls) longest = std::max({longest, m.begin.size(), m.end.size()});
  return longest;
}

constexpr size_t kFormatMarkers = static_cast<size_t>(-1);

// ParseComplete(text) with counting ids, then every chunking must stream to the
// same content and calls (ids included). Returns the whole-text result.
inline ToolCallParser::Result CheckStreaming(ToolCallFormat format, const nlohmann::json& tools,
                                             std::string_view text,
                                             size_t max_middle = kFormatMarkers,
                                             int random_count = 60) {
  if (max_middle == kFormatMarkers) max_middle = LongestMarker(format);
  ToolCallParser::Result whole = ToolCallParser(format, tools, CountingIds()).ParseComplete(text);
  for (const Chunking& chunks : Chunkings(text, max_middle, random_count)) {
    ToolCallParser::Result got = Stream(format, tools, chunks, whole);
    EXPECT_EQ(got.content, whole.content) << Describe(chunks);
    EXPECT_TRUE(SameCalls(got.tool_calls, whole.tool_calls))
        << "streamed: " << Show(got) << "\nwhole:    " << Show(whole) << "\n"
        << Describe(chunks);
    if (::testing::Test::HasFailure()) break;
  }
  return whole;
}

}  // namespace krasis::gateway::testing
