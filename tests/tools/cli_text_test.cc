// krasis-cli tokenize / detokenize / render on the demo model, whose tokenizer
// was trained with HF tokenizers: the ids of its reference prompt must equal the
// ones HF tokenizers produced (models/demo/reference.json), decoding must give
// the text back, and render must print the ChatML prompt the template defines.
#include <gtest/gtest.h>

#include <array>
#include <cstdio>
#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

namespace {

std::pair<int, std::string> RunCommand(const std::string& command) {
  std::string out;
  FILE* pipe = popen((command + " 2>&1").c_str(), "r");
  std::array<char, 4096> buf;
  size_t n;
  while ((n = fread(buf.data(), 1, buf.size(), pipe)) > 0) out.append(buf.data(), n);
  return {WEXITSTATUS(pclose(pipe)), out};
}

const std::string kCli = std::string(KRASIS_BINARY_DIR) + "/bin/krasis-cli";
const std::string kDemo = std::string(KRASIS_TEST_DATA_DIR) + "/../../models/demo";

std::string Temp(const std::string& name, const std::string& content) {
  std::string path = (std::filesystem::path(::testing::TempDir()) / name).string();
  std::ofstream(path) << content;
  return path;
}

TEST(CliTextTest, TokenizeMatchesHfTokenizersAndDetokenizeInverts) {
  std::ifstream in(kDemo + "/reference.json");
  auto ref = nlohmann::json::parse(in);
  std::string file = Temp("prompt.txt", ref["prompt"].get<std::string>());
  auto [code, out] = RunCommand(kCli + " tokenize --model " + kDemo + " --text-file " + file);
  ASSERT_EQ(code, 0) << out;
  auto ids = nlohmann::json::parse(out)["ids"];
  EXPECT_EQ(ids, ref["prompt_ids"]);
  std::string list;
  for (int id : ids) list += (list.empty() ? "" : ",") + std::to_string(id);
  auto [dcode, text] = RunCommand(kCli + " detokenize --model " + kDemo + " --ids " + list);
  ASSERT_EQ(dcode, 0) << text;
  EXPECT_EQ(text, ref["prompt"].get<std::string>());
}

TEST(CliTextTest, RenderPrintsTheTemplatePrompt) {
  std::string req = Temp("req.json", R"({"messages":[{"role":"system","content":"Be brief."},)"
                                     R"({"role":"user","content":[{"type":"text","text":"Hi"}]}]})");
  auto [code, out] = RunCommand(kCli + " render --model " + kDemo + " --request " + req);
  ASSERT_EQ(code, 0) << out;
  EXPECT_EQ(out, "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n");
}

TEST(CliTextTest, BadInputIsAClearError) {
  EXPECT_EQ(RunCommand(kCli + " tokenize --model " + kDemo + " --text-file /nonexistent").first, 1);
  EXPECT_EQ(RunCommand(kCli + " tokenize --model /nonexistent --text-file /etc/hostname").first, 1);
  EXPECT_EQ(RunCommand(kCli + " detokenize --model " + kDemo + " --ids 1,x").first, 2);
  EXPECT_EQ(RunCommand(kCli + " detokenize --model " + kDemo + " --ids 99999").first, 1);
  std::string bad = Temp("bad.json", R"({"messages":"nope"})");
  auto [code, out] = RunCommand(kCli + " render --model " + kDemo + " --request " + bad);
  EXPECT_EQ(code, 1);
  EXPECT_NE(out.find("messages"), std::string::npos) << out;
}

}  // namespace

namespace {

// Tool definitions reach the template in the client's key order (|tojson
// prints them as sent, as transformers does), with the real Qwen3 template.
TEST(CliTextTest, RenderKeepsToolKeyOrderWithTheQwen3Template) {
  const char* home = std::getenv("HOME");
  std::string cache = std::getenv("KRASIS_TOKENIZERS_DIR") != nullptr
                          ? std::getenv("KRASIS_TOKENIZERS_DIR")
                          : std::string(home != nullptr ? home : "/root") + "/.cache/krasis/tokenizers";
  ASSERT_TRUE(std::filesystem::exists(cache + "/qwen3/tokenizer_config.json"))
      << "real tokenizers missing: run scripts/fetch_tokenizers";
  auto dir = std::filesystem::path(::testing::TempDir()) / "qwen3_render";
  std::filesystem::create_directories(dir);
  for (const char* f : {"tokenizer.json", "tokenizer_config.json"}) {
    std::filesystem::copy_file(cache + "/qwen3/" + f, dir / f, std::filesystem::copy_options::overwrite_existing);
  }
  std::filesystem::copy_file(std::string(KRASIS_TEST_DATA_DIR) + "/models/qwen3_moe/config.json", dir / "config.json",
                             std::filesystem::copy_options::overwrite_existing);
  std::string req = Temp("tools.json",
                         R"({"messages":[{"role":"user","content":"hi"}],"tools":[{"type":"function","function":)"
                         R"({"name":"zeta","description":"d","parameters":{"type":"object","properties":)"
                         R"({"b":{"type":"string"},"a":{"type":"integer"}}}}}]})");
  auto [code, out] = RunCommand(kCli + " render --model " + dir.string() + " --request " + req);
  ASSERT_EQ(code, 0) << out;
  EXPECT_NE(out.find(R"({"type": "function", "function": {"name": "zeta", "description": "d", "parameters": )"
                     R"({"type": "object", "properties": {"b": {"type": "string"}, "a": {"type": "integer"}}}}})"),
            std::string::npos)
      << out;
  EXPECT_TRUE(out.ends_with("<|im_start|>assistant\n")) << out;
}

}  // namespace
