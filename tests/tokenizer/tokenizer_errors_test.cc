// Tests that bad tokenizer files give clear errors: unsupported components are
// named ("tokenizer.json: unsupported pre_tokenizer type 'Whitespace'"),
// malformed JSON and broken fields name the file, and a missing file says
// where it looked.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>

#include "tests/tokenizer/tokenizer_test_util.h"

namespace krasis {
namespace {

using ::testing::HasSubstr;
using testing::ReadTextFile;
using testing::TokenizerDataDir;

nlohmann::json TinyJson() {
  return nlohmann::json::parse(ReadTextFile(TokenizerDataDir() / "tiny" / "tokenizer.json"));
}

// The error of building `j`, named "models/x/tokenizer.json".
std::string ErrorOf(const nlohmann::json& j) {
  auto tok = Tokenizer::FromJsonText(j.dump(), "models/x/tokenizer.json");
  EXPECT_FALSE(tok.ok());
  if (tok.ok()) return "";
  EXPECT_EQ(tok.status().code(), absl::StatusCode::kInvalidArgument);
  return std::string(tok.status().message());
}

TEST(TokenizerErrors, UnsupportedComponentsAreNamed) {
  auto j = TinyJson();
  j["pre_tokenizer"] = {{"type", "Whitespace"}};
  EXPECT_THAT(ErrorOf(j),
              HasSubstr("models/x/tokenizer.json: unsupported pre_tokenizer type 'Whitespace'"));

  j = TinyJson();
  j["pre_tokenizer"]["pretokenizers"].push_back({{"type", "Metaspace"}, {"replacement", "_"}});
  EXPECT_THAT(ErrorOf(j), HasSubstr("tokenizer.json: unsupported pre_tokenizer type 'Metaspace'"));

  j = TinyJson();
  j["normalizer"] = {{"type", "Sequence"},
                     {"normalizers", {{{"type", "NFC"}}, {{"type", "BertNormalizer"}}}}};
  EXPECT_THAT(ErrorOf(j),
              HasSubstr("tokenizer.json: unsupported normalizer type 'BertNormalizer'"));

  j = TinyJson();
  j["decoder"] = {{"type", "WordPiece"}, {"prefix", "##"}};
  EXPECT_THAT(ErrorOf(j), HasSubstr("tokenizer.json: unsupported decoder type 'WordPiece'"));

  j = TinyJson();
  j["post_processor"] = {{"type", "RobertaProcessing"}};
  EXPECT_THAT(ErrorOf(j),
              HasSubstr("tokenizer.json: unsupported post_processor type 'RobertaProcessing'"));

  j = TinyJson();
  j["model"]["type"] = "Unigram";
  EXPECT_THAT(ErrorOf(j), HasSubstr("tokenizer.json: unsupported model type 'Unigram'"));

  j = TinyJson();
  j["pre_tokenizer"]["pretokenizers"][0]["behavior"] = "Sideways";
  EXPECT_THAT(ErrorOf(j), HasSubstr("unsupported behavior 'Sideways'"));

  j = TinyJson();
  j["model"]["dropout"] = 0.1;
  EXPECT_THAT(ErrorOf(j), HasSubstr("dropout"));
}

TEST(TokenizerErrors, BrokenFieldsAreExplained) {
  auto j = TinyJson();
  j["model"]["merges"].push_back("a b c");
  EXPECT_THAT(ErrorOf(j), HasSubstr("merge 14 'a b c' is not two tokens separated by one space"));

  j = TinyJson();
  j["model"]["merges"].push_back({"q", "nope"});
  EXPECT_THAT(ErrorOf(j), HasSubstr("merge 14 uses token 'nope' that is not in vocab"));

  j = TinyJson();
  j["model"]["merges"].push_back("x y");
  EXPECT_THAT(ErrorOf(j), HasSubstr("merge 14 produces 'xy' that is not in vocab"));

  j = TinyJson();
  j["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"] = "(unclosed";
  EXPECT_THAT(ErrorOf(j), HasSubstr("cannot compile regex '(unclosed'"));

  j = TinyJson();
  j["model"].erase("vocab");
  EXPECT_THAT(ErrorOf(j), HasSubstr("field 'vocab' must be an object"));

  j = TinyJson();
  j["added_tokens"][0].erase("content");
  EXPECT_THAT(ErrorOf(j), HasSubstr("added_tokens: field 'content' must be a string"));

  j = TinyJson();
  j["model"]["unk_token"] = "<nope>";
  EXPECT_THAT(ErrorOf(j), HasSubstr("unk_token '<nope>' is not in vocab"));
}

class TokenizerFileErrors : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() /
           ("krasis_tok_errors_" + std::to_string(::getpid()));
    std::filesystem::create_directories(dir_);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  void Write(const std::string& name, const std::string& text) {
    std::ofstream(dir_ / name, std::ios::binary) << text;
  }
  std::filesystem::path dir_;
};

TEST_F(TokenizerFileErrors, MalformedJsonNamesTheFile) {
  Write("tokenizer.json", "{\"model\": {\"type\": \"BPE\", ");
  auto tok = Tokenizer::Load(dir_.string());
  ASSERT_FALSE(tok.ok());
  EXPECT_EQ(tok.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(tok.status().message()),
              HasSubstr((dir_ / "tokenizer.json").string() + ": invalid JSON"));
}

TEST_F(TokenizerFileErrors, WrongJsonTypesNameTheFile) {
  Write("tokenizer.json", "[1, 2, 3]");
  auto tok = Tokenizer::Load(dir_.string());
  ASSERT_FALSE(tok.ok());
  EXPECT_THAT(std::string(tok.status().message()),
              HasSubstr((dir_ / "tokenizer.json").string() + ": top level must be a JSON object"));
  Write("tokenizer.json", R"({"model": {"type": "BPE", "vocab": {"a": "zero"}, "merges": []}})");
  tok = Tokenizer::Load(dir_.string());
  ASSERT_FALSE(tok.ok());
  EXPECT_THAT(std::string(tok.status().message()),
              HasSubstr("tokenizer.json: model BPE: vocab entry 'a' has an invalid id"));
}

TEST_F(TokenizerFileErrors, MalformedConfigNamesTheConfigFile) {
  Write("tokenizer.json", TinyJson().dump());
  Write("tokenizer_config.json", "{ nope");
  auto tok = Tokenizer::Load(dir_.string());
  ASSERT_FALSE(tok.ok());
  EXPECT_THAT(std::string(tok.status().message()),
              HasSubstr((dir_ / "tokenizer_config.json").string() + ": invalid JSON"));
  Write("tokenizer_config.json", R"({"added_tokens_decoder": {"x7": {"content": "<y>"}}})");
  tok = Tokenizer::Load(dir_.string());
  ASSERT_FALSE(tok.ok());
  EXPECT_THAT(std::string(tok.status().message()),
              HasSubstr("tokenizer_config.json: added_tokens_decoder: key 'x7' is not an id"));
}

TEST_F(TokenizerFileErrors, MissingFileSaysWhere) {
  auto tok = Tokenizer::Load(dir_.string());
  ASSERT_FALSE(tok.ok());
  EXPECT_EQ(tok.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(tok.status().message()),
              HasSubstr((dir_ / "tokenizer.json").string() + ": not found"));
}

}  // namespace
}  // namespace krasis
