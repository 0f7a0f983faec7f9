// Byte-exact renderings of real models' chat templates.
//
// tools/gen_template_refs.py renders a battery of conversations (system prompts,
// multi-turn, tools, tool calls with dict and string arguments, tool results,
// reasoning_content and <think>, enable_thinking on/off, list content, Unicode,
// error cases) with Python's jinja2 configured as transformers configures it, and
// stores context + output in tests/data/chat_template/expected_<name>.json. Here
// every case must render to exactly the same bytes (or fail where jinja2 failed).
//
// qwen3 and deepseek_v3 use the real tokenizer_config.json templates from the
// tokenizer cache filled by scripts/fetch_tokenizers (not committed); qwen3_coder,
// glm4_5 and glm4_7 are published templates committed beside the expectations
// (see tests/data/chat_template/SOURCES.md).
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include <gtest/gtest.h>

#include "common/chat_template/chat_template.h"

namespace krasis {
namespace {

const std::filesystem::path kDataDir = std::filesystem::path(KRASIS_TEST_DATA_DIR) / "chat_template";

std::string ReadFile(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// Where scripts/fetch_tokenizers puts tokenizers.
std::filesystem::path TokenizersDir() {
  if (const char* dir = std::getenv("KRASIS_TOKENIZERS_DIR"); dir != nullptr && *dir != '\0') {
    return dir;
  }
  if (const char* cache = std::getenv("KRASIS_CACHE"); cache != nullptr && *cache != '\0') {
    return std::filesystem::path(cache) / "tokenizers";
  }
  const char* home = std::getenv("HOME");
  return std::filesystem::path(home != nullptr ? home : ".") / ".cache" / "krasis" / "tokenizers";
}

// "first difference at byte N" with context, for readable failures.
std::string DescribeDiff(const std::string& want, const std::string& got) {
  size_t i = 0;
  while (i < want.size() && i < got.size() && want[i] == got[i]) ++i;
  const size_t from = i > 60 ? i - 60 : 0;
  std::ostringstream out;
  out << "first difference at byte " << i << " (expected " << want.size() << " bytes, got "
      << got.size() << ")\n  expected: ..." << nlohmann::json(want.substr(from, 140)).dump()
      << "\n  got:      ..." << nlohmann::json(got.substr(from, 140)).dump();
  return out.str();
}

class TemplateRenderTest : public ::testing::TestWithParam<const char*> {};

TEST_P(TemplateRenderTest, MatchesJinja2) {
  const std::string name = GetParam();
  std::string source;
  if (name == "qwen3" || name == "deepseek_v3") {
    const std::filesystem::path dir = TokenizersDir() / name;
    auto loaded = LoadChatTemplateSource(dir);
    ASSERT_TRUE(loaded.ok()) << "the real " << name << " tokenizer is not in " << dir
                             << ": run scripts/fetch_tokenizers (" << loaded.status() << ")";
    source = loaded->source;
  } else {
    source = ReadFile(kDataDir / (name + ".jinja"));
    ASSERT_FALSE(source.empty()) << name;
  }
  auto tpl = ChatTemplate::Parse(source, name);
  ASSERT_TRUE(tpl.ok()) << tpl.status();

  const std::string expected_text = ReadFile(kDataDir / ("expected_" + name + ".json"));
  const auto cases = nlohmann::ordered_json::parse(expected_text, nullptr, false);
  ASSERT_TRUE(cases.is_array() && cases.size() >= 20) << "bad expected_" << name << ".json";
  int rendered = 0, refused = 0;
  for (const auto& c : cases) {
    SCOPED_TRACE(name + " / " + c["name"].get<std::string>());
    auto out = tpl->Render(c["context"]);
    if (c.contains("error")) {
      EXPECT_FALSE(out.ok()) << "jinja2 failed with " << c["error"] << " but we rendered:\n"
                             << *out;
      if (!out.ok()) {
        EXPECT_EQ(out.status().code(), absl::StatusCode::kInvalidArgument);
        ++refused;
      }
      continue;
    }
    ASSERT_TRUE(out.ok()) << out.status();
    const std::string want = c["rendered"].get<std::string>();
    EXPECT_TRUE(*out == want) << DescribeDiff(want, *out);
    if (*out == want) ++rendered;
  }
  RecordProperty("rendered", rendered);
  RecordProperty("refused", refused);
}

INSTANTIATE_TEST_SUITE_P(RealTemplates, TemplateRenderTest,
                         ::testing::Values("qwen3", "deepseek_v3", "qwen3_coder", "glm4_5",
                                           "glm4_7"),
                         [](const ::testing::TestParamInfo<const char*>& info) {
                           return std::string(info.param);
                         });

// RenderChat builds the context as apply_chat_template does.
TEST(RenderChatTest, BuildsTransformersContext) {
  const std::string source = ReadFile(kDataDir / "qwen3_coder.jinja");
  auto tpl = ChatTemplate::Parse(source, "qwen3_coder");
  ASSERT_TRUE(tpl.ok()) << tpl.status();
  const auto cases = nlohmann::ordered_json::parse(ReadFile(kDataDir / "expected_qwen3_coder.json"));
  for (const auto& c : cases) {
    if (c.contains("error")) continue;
    const auto& ctx = c["context"];
    nlohmann::ordered_json extra = nlohmann::ordered_json::object();
    for (auto it = ctx.begin(); it != ctx.end(); ++it) {
      if (it.key() != "messages" && it.key() != "tools" && it.key() != "documents" &&
          it.key() != "add_generation_prompt") {
        extra[it.key()] = it.value();
      }
    }
    auto out = RenderChat(*tpl, ctx["messages"], ctx["tools"],
                          ctx["add_generation_prompt"].get<bool>(), extra);
    ASSERT_TRUE(out.ok()) << out.status();
    EXPECT_EQ(*out, c["rendered"].get<std::string>()) << c["name"];
  }
}

TEST(RenderChatTest, PlainJsonOverloadAndArgumentChecks) {
  auto tpl = ChatTemplate::Parse(
      "{% for m in messages %}[{{ m.role }}]{{ m.content }}{% endfor %}"
      "{% if add_generation_prompt %}[assistant]{% endif %}{{ tools is none }}{{ documents is none }}"
      "{{ eos_token }}");
  ASSERT_TRUE(tpl.ok()) << tpl.status();
  const nlohmann::json messages = {{{"role", "user"}, {"content", "hi"}}};
  auto out = RenderChat(*tpl, messages, nlohmann::json(), true, {{"eos_token", "</s>"}});
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_EQ(*out, "[user]hi[assistant]TrueTrue</s>");
  EXPECT_FALSE(RenderChat(*tpl, nlohmann::json::object(), nlohmann::json(), true,
                          nlohmann::json::object())
                   .ok());
  EXPECT_FALSE(RenderChat(*tpl, messages, nlohmann::json("x"), true, nlohmann::json::object()).ok());
}

TEST(LoadChatTemplateSourceTest, ReadsTokenizerConfigAndJinjaFile) {
  const std::filesystem::path dir =
      std::filesystem::temp_directory_path() / ("krasis_tpl_" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  {
    std::ofstream(dir / "tokenizer_config.json")
        << R"({"bos_token": {"__type": "AddedToken", "content": "<s>"}, "eos_token": "</s>",
              "pad_token": null, "additional_special_tokens": ["<a>", "<b>"],
              "chat_template": [{"name": "default", "template": "D"},
                                {"name": "tool_use", "template": "T"}]})";
  }
  auto src = LoadChatTemplateSource(dir);
  ASSERT_TRUE(src.ok()) << src.status();
  EXPECT_EQ(src->source, "D");
  EXPECT_EQ(src->special_tokens.dump(),
            R"({"bos_token":"<s>","eos_token":"</s>","additional_special_tokens":["<a>","<b>"]})");
  auto tool_use = LoadChatTemplateSource(dir, "tool_use");
  ASSERT_TRUE(tool_use.ok());
  EXPECT_EQ(tool_use->source, "T");
  EXPECT_EQ(LoadChatTemplateSource(dir, "nope").status().code(), absl::StatusCode::kNotFound);
  std::ofstream(dir / "chat_template.jinja") << "J";
  auto jinja = LoadChatTemplateSource(dir);
  ASSERT_TRUE(jinja.ok());
  EXPECT_EQ(jinja->source, "J");
  EXPECT_EQ(jinja->origin, dir / "chat_template.jinja");
  std::filesystem::remove_all(dir);
  EXPECT_EQ(LoadChatTemplateSource(dir).status().code(), absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace krasis
