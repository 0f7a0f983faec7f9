// krasis-cli: command-line access to Krasis's building blocks without starting
// the cluster. Subcommands:
//   logits --model DIR --tokens 1,2,3 [--greedy N] [--json]
//   tokenize --model DIR --text-file FILE
//   detokenize --model DIR --ids 1,2,3
//   render --model DIR --request REQUEST.json
#include <cstdlib>
#include <iostream>
#include <string>
#include <tuple>

#include <boost/program_options.hpp>
#include <nlohmann/json.hpp>

#include "tools/cli/logits_command.h"
#include "tools/cli/text_commands.h"

namespace po = boost::program_options;

namespace {

int Logits(int argc, char** argv) {
  std::string model, tokens, experts = "bf16", lm_head = "bf16", dense = "bf16", shared = "bf16", attention = "bf16";
  const char* home = std::getenv("HOME");
  std::string cache_dir = home != nullptr && *home != '\0' ? std::string(home) + "/.krasis/cache" : "";
  std::string kv_dtype = "f32", backend = "cpu";
  int greedy = 0;
  po::options_description desc("krasis-cli logits options");
  desc.add_options()
      ("help,h", "print this help")
      ("model", po::value(&model)->required(), "model directory (config.json + safetensors)")
      ("tokens", po::value(&tokens)->required(), "prompt token ids, comma separated: 1,2,3")
      ("greedy", po::value(&greedy)->default_value(0), "generate N tokens greedily")
      ("experts", po::value(&experts)->default_value(experts),
       "routed experts: bf16 (as stored), int8 or int4 (group-quantized, CPU kernels)")
      ("attention", po::value(&attention)->default_value(attention),
       "token-mixer projections (GQA, MLA, Gated DeltaNet): bf16 (as stored), int8 or int4")
      ("lm-head", po::value(&lm_head)->default_value(lm_head), "lm_head: bf16 (as stored), int8 or int4")
      ("dense-mlp", po::value(&dense)->default_value(dense), "dense layers' MLP: bf16, int8 or int4")
      ("shared-experts", po::value(&shared)->default_value(shared), "shared experts: bf16, int8 or int4")
      ("cache-dir", po::value(&cache_dir)->default_value(cache_dir),
       "conversion cache root for int8/int4 experts (built when missing, then mapped); 'none': quantize in memory")
      ("backend", po::value(&backend)->default_value(backend),
       "where the prompt runs: cpu or cuda (the GPU prefill backend); the greedy continuation decodes on the CPU")
      ("kv-cache-dtype", po::value(&kv_dtype)->default_value(kv_dtype),
       "what the KV cache stores: f32 (the exact reference), bf16 or f16 (what the workers store; bf16 by default)")
      ("json", "print one JSON object {last_logits, argmax, greedy}");
  po::variables_map vm;
  try {
    po::store(po::command_line_parser(argc, argv).options(desc).run(), vm);
    if (vm.count("help")) {
      std::cout << "usage: krasis-cli logits --model DIR --tokens 1,2,3 [--greedy N] [--experts bf16|int8|int4] [--backend cpu|cuda] [--json]\n\n"
                << desc << "\n";
      return 0;
    }
    po::notify(vm);
  } catch (const po::error& e) {
    std::cerr << "krasis-cli logits: " << e.what() << " (see --help)\n";
    return 2;
  }
  auto ids = krasis::ParseTokenList(tokens);
  if (!ids.ok()) {
    std::cerr << "krasis-cli logits: " << ids.status().message() << "\n";
    return 2;
  }
  auto format = krasis::ParseExpertFormat(experts);
  if (!format) {
    std::cerr << "krasis-cli logits: --experts must be bf16, int8 or int4, not '" << experts << "'\n";
    return 2;
  }
  auto weights = krasis::ParseWeightFormats(attention, lm_head, dense, shared);
  if (!weights.ok()) {
    std::cerr << "krasis-cli logits: " << weights.status().message() << "\n";
    return 2;
  }
  auto kv = krasis::ParseKvCacheDtype(kv_dtype);
  if (!kv.ok()) {
    std::cerr << "krasis-cli logits: " << kv.status().message() << "\n";
    return 2;
  }
  auto result =
      krasis::RunLogits({model, *ids, greedy, *format, cache_dir == "none" ? "" : cache_dir, *weights, *kv, backend});
  if (!result.ok()) {
    std::cerr << "krasis-cli logits: " << result.status().message() << "\n";
    return 1;
  }
  if (vm.count("json")) {
    nlohmann::json j = {{"last_logits", result->last_logits},
                        {"argmax", result->argmax},
                        {"greedy", result->greedy}};
    std::cout << j.dump() << "\n";
  } else {
    std::cout << "argmax: " << nlohmann::json(result->argmax).dump() << "\n";
    if (greedy > 0) std::cout << "greedy: " << nlohmann::json(result->greedy).dump() << "\n";
    std::cout << "last_logits: " << result->last_logits.size() << " values\n";
  }
  return 0;
}

void Usage(std::ostream& out) {
  out << "usage: krasis-cli <command> [options]\n\n"
         "commands:\n"
         "  logits       run a model on token ids: logits, argmax, greedy continuation\n"
         "  tokenize     --model DIR --text-file FILE: {\"ids\": [...]}\n"
         "  detokenize   --model DIR --ids 1,2,3: the text\n"
         "  render       --model DIR --request REQUEST.json: the prompt text of a chat request\n";
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    Usage(std::cerr);
    return 2;
  }
  std::string command = argv[1];
  if (command == "logits") return Logits(argc - 1, argv + 1);
  if (command == "tokenize") return krasis::TokenizeCommand(argc - 1, argv + 1);
  if (command == "detokenize") return krasis::DetokenizeCommand(argc - 1, argv + 1);
  if (command == "render") return krasis::RenderCommand(argc - 1, argv + 1);
  if (command == "help" || command == "--help" || command == "-h") {
    Usage(std::cout);
    return 0;
  }
  std::cerr << "krasis-cli: unknown command '" << command << "'\n";
  Usage(std::cerr);
  return 2;
}
