// Tokenizer throughput on one core: encodes ~1 MB of mixed text (the test
// corpus -- prose, code, CJK, scripts, emoji, whitespace runs -- repeated)
// with the real Qwen3 and DeepSeek-V3 tokenizers, and decodes / streams the
// result. Prints a table of MB/s (10^6 bytes of input text per second).
//
// Encode/ measures the steady state of a long-running server (the BPE word
// cache warm); EncodeCold/ clears the cache before encoding one round of the
// corpus (~19 KB, every distinct word merged once), a pessimistic bound for
// fresh text. Rates are per CPU second of the benchmark thread. Needs
// scripts/fetch_tokenizers.
#include <benchmark/benchmark.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "common/tokenizer/streaming_detokenizer.h"
#include "common/tokenizer/tokenizer.h"

namespace {

namespace fs = std::filesystem;

constexpr size_t kTargetBytes = 1 << 20;

fs::path TokenizersRoot() {
  if (const char* dir = std::getenv("KRASIS_TOKENIZERS_DIR"); dir && *dir) return dir;
  if (const char* c = std::getenv("KRASIS_CACHE"); c && *c) return fs::path(c) / "tokenizers";
  const char* home = std::getenv("HOME");
  return fs::path(home ? home : "/") / ".cache" / "krasis" / "tokenizers";
}

// The corpus files concatenated and repeated to at least `target_bytes`.
std::string MixedText(size_t target_bytes) {
  std::vector<fs::path> files;
  for (const auto& e :
       fs::directory_iterator(fs::path(KRASIS_TEST_DATA_DIR) / "tokenizer" / "corpus")) {
    if (e.path().extension() == ".txt") files.push_back(e.path());
  }
  std::sort(files.begin(), files.end());
  std::string one_round;
  for (const auto& f : files) {
    std::ifstream in(f, std::ios::binary);
    std::ostringstream s;
    s << in.rdbuf();
    one_round += s.str();
  }
  std::string text;
  if (one_round.empty()) return text;
  while (text.size() < target_bytes) text += one_round;
  return text;
}

struct Loaded {
  std::string name;
  std::unique_ptr<krasis::Tokenizer> tok;
};

std::vector<Loaded>& Tokenizers() {
  static auto* all = new std::vector<Loaded>();
  return *all;
}

const std::string& Text() {
  static const std::string* text = new std::string(MixedText(kTargetBytes));
  return *text;
}

const std::string& OneRound() {
  static const std::string* text = new std::string(MixedText(1));
  return *text;
}

void SetThroughput(benchmark::State& state, size_t bytes_per_iteration) {
  const double bytes =
      static_cast<double>(bytes_per_iteration) * static_cast<double>(state.iterations());
  state.SetBytesProcessed(static_cast<int64_t>(bytes));
  state.counters["MB/s"] = benchmark::Counter(bytes / 1e6, benchmark::Counter::kIsRate);
}

void BM_Encode(benchmark::State& state, const krasis::Tokenizer* tok) {
  size_t tokens = 0;
  for (auto _ : state) {
    auto ids = tok->Encode(Text());
    tokens = ids.size();
    benchmark::DoNotOptimize(ids.data());
  }
  SetThroughput(state, Text().size());
  state.counters["tokens"] = static_cast<double>(tokens);
}

void BM_EncodeCold(benchmark::State& state, const krasis::Tokenizer* tok) {
  for (auto _ : state) {
    state.PauseTiming();
    tok->ClearCache();
    state.ResumeTiming();
    auto ids = tok->Encode(OneRound());
    benchmark::DoNotOptimize(ids.data());
  }
  SetThroughput(state, OneRound().size());
}

void BM_Decode(benchmark::State& state, const krasis::Tokenizer* tok) {
  const auto ids = tok->Encode(Text());
  for (auto _ : state) {
    auto text = tok->Decode(ids);
    benchmark::DoNotOptimize(text.data());
  }
  SetThroughput(state, Text().size());
}

void BM_Stream(benchmark::State& state, const krasis::Tokenizer* tok) {
  const auto ids = tok->Encode(Text());
  for (auto _ : state) {
    krasis::StreamingDetokenizer stream(*tok, /*skip_special=*/false);
    size_t n = 0;
    for (int32_t id : ids) n += stream.Add(id).size();
    n += stream.Flush().size();
    benchmark::DoNotOptimize(n);
  }
  SetThroughput(state, Text().size());
}

}  // namespace

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  if (Text().empty()) {
    std::fprintf(stderr, "tokenizer_bench: corpus not found under %s\n", KRASIS_TEST_DATA_DIR);
    return 1;
  }
  for (const char* name : {"qwen3", "deepseek_v3"}) {
    const fs::path dir = TokenizersRoot() / name;
    auto tok = krasis::Tokenizer::Load(dir.string());
    if (!tok.ok()) {
      std::fprintf(stderr, "tokenizer_bench: %s (run scripts/fetch_tokenizers)\n",
                   std::string(tok.status().message()).c_str());
      return 1;
    }
    Tokenizers().push_back({name, std::move(tok).value()});
  }

  for (const Loaded& l : Tokenizers()) {
    benchmark::RegisterBenchmark(("Encode/" + l.name).c_str(), BM_Encode, l.tok.get())
        ->Unit(benchmark::kMillisecond);
    benchmark::RegisterBenchmark(("EncodeCold/" + l.name).c_str(), BM_EncodeCold, l.tok.get())
        ->Unit(benchmark::kMillisecond);
    benchmark::RegisterBenchmark(("Decode/" + l.name).c_str(), BM_Decode, l.tok.get())
        ->Unit(benchmark::kMillisecond);
    benchmark::RegisterBenchmark(("StreamingDetokenize/" + l.name).c_str(), BM_Stream, l.tok.get())
        ->Unit(benchmark::kMillisecond);
  }
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
