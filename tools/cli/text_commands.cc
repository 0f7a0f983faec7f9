// Tokenizer and chat-template subcommands of krasis-cli (see text_commands.h).
#include "tools/cli/text_commands.h"

#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>
#include <variant>

#include <boost/program_options.hpp>
#include <nlohmann/json.hpp>

#include "common/tokenizer/tokenizer.h"
#include "services/gateway/model_frontend.h"
#include "services/gateway/openai_request.h"
#include "tools/cli/logits_command.h"

namespace krasis {

namespace po = boost::program_options;

namespace {

// Parses `desc` from argv; returns an exit code to stop with, or -1 to go on.
int Parse(const char* name, const char* usage, po::options_description& desc, int argc, char** argv) {
  po::variables_map vm;
  try {
    po::store(po::command_line_parser(argc, argv).options(desc).run(), vm);
    if (vm.count("help")) {
      std::cout << "usage: " << usage << "\n\n" << desc << "\n";
      return 0;
    }
    po::notify(vm);
  } catch (const po::error& e) {
    std::cerr << "krasis-cli " << name << ": " << e.what() << " (see --help)\n";
    return 2;
  }
  return -1;
}

bool ReadFile(const std::string& path, std::string* out) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return false;
  std::stringstream ss;
  ss << in.rdbuf();
  *out = ss.str();
  return true;
}

}  // namespace

int TokenizeCommand(int argc, char** argv) {
  std::string model, text_file;
  po::options_description desc("krasis-cli tokenize options");
  desc.add_options()("help,h", "print this help")("model", po::value(&model)->required(), "model directory")(
      "text-file", po::value(&text_file)->required(), "file whose text to encode (special tokens parsed)");
  if (int code = Parse("tokenize", "krasis-cli tokenize --model DIR --text-file FILE", desc, argc, argv); code >= 0) {
    return code;
  }
  std::string text;
  if (!ReadFile(text_file, &text)) {
    std::cerr << "krasis-cli tokenize: cannot read " << text_file << "\n";
    return 1;
  }
  auto tok = Tokenizer::Load(model);
  if (!tok.ok()) {
    std::cerr << "krasis-cli tokenize: " << tok.status().message() << "\n";
    return 1;
  }
  std::cout << nlohmann::json({{"ids", (*tok)->Encode(text)}}).dump() << "\n";
  return 0;
}

int DetokenizeCommand(int argc, char** argv) {
  std::string model, ids;
  po::options_description desc("krasis-cli detokenize options");
  desc.add_options()("help,h", "print this help")("model", po::value(&model)->required(), "model directory")(
      "ids", po::value(&ids)->required(), "token ids, comma separated: 1,2,3");
  if (int code = Parse("detokenize", "krasis-cli detokenize --model DIR --ids 1,2,3", desc, argc, argv); code >= 0) {
    return code;
  }
  auto list = ParseTokenList(ids);
  if (!list.ok()) {
    std::cerr << "krasis-cli detokenize: " << list.status().message() << "\n";
    return 2;
  }
  auto tok = Tokenizer::Load(model);
  if (!tok.ok()) {
    std::cerr << "krasis-cli detokenize: " << tok.status().message() << "\n";
    return 1;
  }
  for (int32_t id : *list) {
    if (id >= (*tok)->vocab_size()) {
      std::cerr << "krasis-cli detokenize: token id " << id << " is outside the vocabulary ("
                << (*tok)->vocab_size() << ")\n";
      return 1;
    }
  }
  std::cout << (*tok)->Decode(*list);
  return 0;
}

int RenderCommand(int argc, char** argv) {
  std::string model, request;
  po::options_description desc("krasis-cli render options");
  desc.add_options()("help,h", "print this help")("model", po::value(&model)->required(), "model directory")(
      "request", po::value(&request)->required(), "an OpenAI chat-completions request body (JSON file)");
  if (int code = Parse("render", "krasis-cli render --model DIR --request REQUEST.json", desc, argc, argv); code >= 0) {
    return code;
  }
  std::string body;
  if (!ReadFile(request, &body)) {
    std::cerr << "krasis-cli render: cannot read " << request << "\n";
    return 1;
  }
  auto frontend = gateway::ModelFrontend::Load(model, std::filesystem::path(model).filename().string());
  if (!frontend.ok()) {
    std::cerr << "krasis-cli render: " << frontend.status().message() << "\n";
    return 1;
  }
  // The same parsing and normalisation as the gateway; the model name is not checked.
  nlohmann::ordered_json j = nlohmann::ordered_json::parse(body, nullptr, false);
  if (j.is_object() && !j.contains("model")) {
    j["model"] = (*frontend)->id();
    body = j.dump();
  }
  auto parsed = gateway::ParseChatRequest(body, nlohmann::json::object());
  if (auto* e = std::get_if<gateway::ApiError>(&parsed)) {
    std::cerr << "krasis-cli render: " << request << ": " << e->message << "\n";
    return 1;
  }
  const auto& chat = std::get<gateway::ChatRequest>(parsed);
  auto text = (*frontend)->RenderChat(chat.messages, chat.tools, chat.chat_template_kwargs);
  if (!text.ok()) {
    std::cerr << "krasis-cli render: " << text.status().message() << "\n";
    return 1;
  }
  std::cout << *text;
  return 0;
}

}  // namespace krasis
