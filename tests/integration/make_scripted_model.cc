// make_scripted_model: writes a test model that always answers a chat with a
// fixed script -- by default a Qwen3-style tool call -- so the integration
// tests can check tool-call parsing on the model's real output through the whole
// cluster. It is a real checkpoint of the source model's architecture (Qwen3-MoE)
// with crafted weights, run by the real engines:
//   - every attention output projection and expert down projection is zero, so
//     the residual stream at the last position is the current token's
//     embedding and the model is a pure bigram model;
//   - embeddings are random Gaussian vectors (nearly orthogonal in the hidden
//     size) and lm_head row `b` is a scaled copy of embedding `a` for each step
//     a -> b of the script, so token `a` gives `b` a logit of about kScale and
//     every other token about 0 (|cos| << 1);
//   - each piece of the script is a new added token of the tokenizer (so each
//     step is a distinct token), the chain starts from the last token of the
//     assistant header and ends in EOS.
// The tokenizer is the source's plus those tokens; the chat template is a
// ChatML template that renders tools and describes the <tool_call> format.
//
//   make_scripted_model --from models/demo --out DIR
#include <cmath>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <random>
#include <set>

#include <nlohmann/json.hpp>

#include "common/dtype.h"
#include "common/safetensors.h"
#include "common/tokenizer/tokenizer.h"

namespace fs = std::filesystem;
using json = nlohmann::ordered_json;

namespace {

constexpr float kScale = 30.0f;

// The reply, piece by piece: <tool_call>
// {"name": "get_weather", "arguments": {"city": "Paris"}}
// </tool_call>
const std::vector<std::string> kPieces = {"<tool_call>\n", "{\"name\": ", "\"get_weather\"", ", \"arguments\": ",
                                          "{\"city\": ", "\"Paris\"", "}}", "\n</tool_call>"};

const char* kTemplate =
    "{% if tools %}<|im_start|>system\n"
    "{% if messages[0].role == 'system' %}{{ messages[0].content }}\n\n{% endif %}"
    "# Tools\n\nYou may call functions. Their signatures, within <tools></tools>:\n<tools>"
    "{% for tool in tools %}\n{{ tool | tojson }}{% endfor %}\n</tools>\n\n"
    "Reply to call one with <tool_call></tool_call> around "
    "{\"name\": <function-name>, \"arguments\": <args-json-object>}<|im_end|>\n"
    "{% elif messages[0].role == 'system' %}<|im_start|>system\n{{ messages[0].content }}<|im_end|>\n"
    "{% endif %}"
    "{% for message in messages %}"
    "{% if message.content is string %}{% set content = message.content %}"
    "{% elif message.content %}{% set content = message.content | map(attribute='text') | join('') %}"
    "{% else %}{% set content = '' %}{% endif %}"
    "{% if message.role == 'user' or (message.role == 'assistant' and not message.tool_calls) %}"
    "<|im_start|>{{ message.role }}\n{{ content }}<|im_end|>\n"
    "{% elif message.role == 'assistant' %}<|im_start|>assistant\n{{ content }}"
    "{% for call in message.tool_calls %}\n<tool_call>\n{\"name\": \"{{ call.function.name }}\", "
    "\"arguments\": {{ call.function.arguments | tojson }}}\n</tool_call>{% endfor %}<|im_end|>\n"
    "{% elif message.role == 'tool' %}<|im_start|>user\n<tool_response>\n{{ content }}\n"
    "</tool_response><|im_end|>\n"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}";

int Fail(const std::string& message) {
  std::cerr << "make_scripted_model: " << message << "\n";
  return 1;
}

json ReadJson(const fs::path& path) {
  std::ifstream in(path);
  return json::parse(in);
}

void WriteJson(const fs::path& path, const json& j) {
  std::ofstream out(path);
  out << j.dump(2) << "\n";
}

}  // namespace

int main(int argc, char** argv) {
  std::string from, out;
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string flag = argv[i];
    if (flag == "--from") from = argv[i + 1];
    else if (flag == "--out") out = argv[i + 1];
    else return Fail("unknown flag " + flag);
  }
  if (from.empty() || out.empty()) return Fail("usage: make_scripted_model --from DIR --out DIR ");

  json config = ReadJson(fs::path(from) / "config.json");
  if (config.value("model_type", "") != "qwen3_moe") return Fail("the source must be a qwen3_moe model");
  auto tokenizer = krasis::Tokenizer::Load(from);
  if (!tokenizer.ok()) return Fail(tokenizer.status().ToString());
  const krasis::Tokenizer& tok = **tokenizer;
  const int64_t source_vocab = config["vocab_size"].get<int64_t>();
  const int64_t hidden = config["hidden_size"].get<int64_t>();
  const int32_t eos = config["eos_token_id"].get<int32_t>();

  // The chain: trigger (last token of the assistant header) -> pieces -> EOS.
  // Each piece becomes a new (non-special) added token of the tokenizer, so
  // every step of the script is a distinct token even where its text repeats
  // characters.
  std::vector<int32_t> header = tok.Encode("<|im_start|>assistant\n");
  std::vector<int32_t> chain = {header.back()};
  json tokenizer_json = ReadJson(fs::path(from) / "tokenizer.json");
  int64_t vocab = source_vocab;
  for (const std::string& piece : kPieces) {
    tokenizer_json["added_tokens"].push_back({{"id", vocab},
                                              {"content", piece},
                                              {"single_word", false},
                                              {"lstrip", false},
                                              {"rstrip", false},
                                              {"normalized", false},
                                              {"special", false}});
    chain.push_back(static_cast<int32_t>(vocab++));
  }
  chain.push_back(eos);
  auto source = krasis::SafetensorsModel::Open(from);
  if (!source.ok()) return Fail(source.status().ToString());
  std::mt19937 rng(1234);
  std::normal_distribution<float> gauss(0.0f, 1.0f);
  std::vector<float> embed(static_cast<size_t>(vocab * hidden));
  for (float& v : embed) v = gauss(rng);
  std::vector<float> lm_head(embed.size(), 0.0f);
  for (size_t i = 0; i + 1 < chain.size(); ++i) {
    const float* a = &embed[static_cast<size_t>(chain[i] * hidden)];
    float* row = &lm_head[static_cast<size_t>(chain[i + 1] * hidden)];
    double norm = 0;
    for (int64_t k = 0; k < hidden; ++k) norm += double(a[k]) * a[k];
    // The final RMSNorm scales the embedding to norm sqrt(hidden).
    const float s = kScale / static_cast<float>(std::sqrt(norm) * std::sqrt(double(hidden)));
    for (int64_t k = 0; k < hidden; ++k) row[k] = a[k] * s;
  }

  std::vector<std::vector<uint16_t>> storage;
  std::vector<std::pair<std::string, krasis::TensorView>> tensors;
  auto bf16 = [&](const std::string& name, const krasis::Shape& shape, const std::vector<float>& values) {
    std::vector<uint16_t> bits(values.size());
    for (size_t i = 0; i < values.size(); ++i) bits[i] = krasis::FloatToBF16(values[i]);
    storage.push_back(std::move(bits));
    tensors.push_back({name, krasis::TensorView{krasis::DType::kBF16, shape,
                                                reinterpret_cast<const std::byte*>(storage.back().data())}});
  };
  storage.reserve((*source)->tensor_names().size() + 2);
  for (const std::string& name : (*source)->tensor_names()) {
    auto view = (*source)->GetTensor(name);
    if (!view.ok()) return Fail(view.status().ToString());
    if (name == "model.embed_tokens.weight") {
      bf16(name, {vocab, hidden}, embed);
    } else if (name == "lm_head.weight") {
      bf16(name, {vocab, hidden}, lm_head);
    } else if (name == "model.norm.weight") {
      bf16(name, view->shape, std::vector<float>(static_cast<size_t>(view->numel()), 1.0f));
    } else if (name.ends_with("self_attn.o_proj.weight") || name.ends_with("down_proj.weight")) {
      bf16(name, view->shape, std::vector<float>(static_cast<size_t>(view->numel()), 0.0f));
    } else {
      bf16(name, view->shape, krasis::ToFloatVector(*view));
    }
  }
  fs::create_directories(out);
  if (auto s = krasis::WriteSafetensors((fs::path(out) / "model.safetensors").string(), tensors); !s.ok()) {
    return Fail(s.ToString());
  }
  config["tie_word_embeddings"] = false;
  config["vocab_size"] = vocab;
  WriteJson(fs::path(out) / "config.json", config);
  WriteJson(fs::path(out) / "tokenizer.json", tokenizer_json);
  json tcfg = ReadJson(fs::path(from) / "tokenizer_config.json");
  tcfg["chat_template"] = kTemplate;
  WriteJson(fs::path(out) / "tokenizer_config.json", tcfg);
  WriteJson(fs::path(out) / "generation_config.json", json{{"eos_token_id", eos}});
  std::cout << "wrote " << out << ": " << kPieces.size() << " script tokens\n";
  return 0;
}
