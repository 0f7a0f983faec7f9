// Shared helpers of the tokenizer tests: where the real tokenizers live (put
// there by scripts/fetch_tokenizers), loading them once per test binary, and
// reading the corpus and the reference ids made by tools/gen_tokenizer_refs.mjs.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "common/tokenizer/tokenizer.h"

namespace krasis::testing {

inline std::filesystem::path TokenizerDataDir() {
  return std::filesystem::path(KRASIS_TEST_DATA_DIR) / "tokenizer";
}

// $KRASIS_TOKENIZERS_DIR, else ${KRASIS_CACHE:-$HOME/.cache/krasis}/tokenizers
// (the same rule as scripts/fetch_tokenizers).
inline std::filesystem::path RealTokenizersRoot() {
  if (const char* dir = std::getenv("KRASIS_TOKENIZERS_DIR"); dir && *dir) return dir;
  std::filesystem::path cache;
  if (const char* c = std::getenv("KRASIS_CACHE"); c && *c) {
    cache = c;
  } else {
    const char* home = std::getenv("HOME");
    cache = std::filesystem::path(home ? home : "/") / ".cache" / "krasis";
  }
  return cache / "tokenizers";
}

inline std::string ReadTextFile(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return std::move(s).str();
}

// The real tokenizer `name` (qwen3, deepseek_v3), loaded once; nullptr (with a
// test failure explaining how to fetch it) when it is missing.
inline const Tokenizer* RealTokenizer(const std::string& name) {
  static auto* cache = new std::map<std::string, std::unique_ptr<Tokenizer>>();
  if (auto it = cache->find(name); it != cache->end()) return it->second.get();
  const std::filesystem::path dir = RealTokenizersRoot() / name;
  if (!std::filesystem::exists(dir / "tokenizer.json")) {
    ADD_FAILURE() << "real tokenizer '" << name << "' not found in " << dir
                  << ": run scripts/fetch_tokenizers (or set KRASIS_TOKENIZERS_DIR)";
    return nullptr;
  }
  auto tok = Tokenizer::Load(dir.string());
  if (!tok.ok()) {
    ADD_FAILURE() << "loading " << dir << ": " << tok.status();
    return nullptr;
  }
  auto& slot = (*cache)[name];
  slot = std::move(tok).value();
  return slot.get();
}

struct CorpusItem {
  std::string name;
  std::string text;
};

// Every tests/data/tokenizer/corpus/*.txt, sorted by name.
inline std::vector<CorpusItem> Corpus() {
  std::vector<CorpusItem> items;
  for (const auto& entry : std::filesystem::directory_iterator(TokenizerDataDir() / "corpus")) {
    if (entry.path().extension() == ".txt") {
      items.push_back({entry.path().filename().string(), ReadTextFile(entry.path())});
    }
  }
  std::sort(items.begin(), items.end(),
            [](const CorpusItem& a, const CorpusItem& b) { return a.name < b.name; });
  return items;
}

// Reference ids per corpus file for tokenizer `name`.
inline std::map<std::string, std::vector<int32_t>> ExpectedIds(const std::string& name) {
  const auto j =
      nlohmann::json::parse(ReadTextFile(TokenizerDataDir() / ("expected_" + name + ".json")));
  std::map<std::string, std::vector<int32_t>> out;
  for (const auto& [file, ids] : j.at("items").items()) {
    out[file] = ids.get<std::vector<int32_t>>();
  }
  return out;
}

}  // namespace krasis::testing
