// Table-driven checks for the chat-template language tests: each case is a template,
// a JSON context and the exact output jinja2 (configured as transformers configures
// it) produces, or a fragment of the error both refuse it with. The expectations
// were checked against Python's jinja2 3.1.
#pragma once

#include <string>

#include <gtest/gtest.h>

#include "common/chat_template/chat_template.h"

namespace krasis::chat_template_test {

struct Case {
  const char* name;
  const char* source;
  const char* context;  // JSON object
  const char* expected;
};

struct ErrorCase {
  const char* name;
  const char* source;
  const char* context;
  const char* message;  // substring of the error message
};

inline absl::StatusOr<std::string> RenderSource(const std::string& source,
                                                const std::string& context) {
  auto tpl = ChatTemplate::Parse(source);
  if (!tpl.ok()) return tpl.status();
  return tpl->Render(nlohmann::ordered_json::parse(context));
}

template <size_t N>
void RunCases(const Case (&cases)[N]) {
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    auto out = RenderSource(c.source, c.context);
    ASSERT_TRUE(out.ok()) << out.status();
    EXPECT_EQ(*out, c.expected);
  }
}

template <size_t N>
void RunErrorCases(const ErrorCase (&cases)[N]) {
  for (const ErrorCase& c : cases) {
    SCOPED_TRACE(c.name);
    auto out = RenderSource(c.source, c.context);
    ASSERT_FALSE(out.ok()) << "rendered: " << *out;
    EXPECT_EQ(out.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(std::string(out.status().message()).find(c.message), std::string::npos)
        << "message: " << out.status().message() << "\nwanted: " << c.message;
  }
}

}  // namespace krasis::chat_template_test
