// Helpers shared by the loader tests: temporary models dirs built from the
// committed fixtures (tests/data/models/<arch>/: config.json,
// generation_config.json, model.safetensors) plus a tokenizer.json stub, raw file
// reads, and parameter counts computed independently of the loader (straight
// from the safetensors JSON header and config.json, not through krasis code).
#pragma once

#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

namespace krasis::testing_util {

namespace fs = std::filesystem;

inline const std::vector<std::string>& FixtureArchs() {
  static const std::vector<std::string> archs = {"deepseek_v2", "deepseek_v3", "glm4_moe",
                                                 "qwen3_moe", "qwen3_next"};
  return archs;
}

inline fs::path FixtureDir(const std::string& arch) {
  return fs::path(KRASIS_TEST_DATA_DIR) / "models" / arch;
}

// A fresh directory under the test temp dir, removed when destroyed.
class TempDir {
 public:
  TempDir() {
    static std::atomic<int> counter{0};
    path_ = fs::path(::testing::TempDir()) /
            ("krasis-loader-" + std::to_string(getpid()) + "-" + std::to_string(counter++));
    fs::remove_all(path_);
    fs::create_directories(path_);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const fs::path& path() const { return path_; }

 private:
  fs::path path_;
};

inline void WriteText(const fs::path& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << text;
  ASSERT_TRUE(out.good()) << path;
}

inline std::string ReadText(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

// Copies fixture `arch` to `dest` and adds a stub tokenizer.json and
// tokenizer_config.json (unless `tokenizer` is false).
inline void CopyFixture(const std::string& arch, const fs::path& dest, bool tokenizer = true) {
  fs::create_directories(dest);
  for (const char* name : {"config.json", "generation_config.json", "model.safetensors"}) {
    fs::copy_file(FixtureDir(arch) / name, dest / name, fs::copy_options::overwrite_existing);
  }
  if (tokenizer) {
    WriteText(dest / "tokenizer.json", R"({"version": "1.0", "model": {"type": "BPE"}})");
    WriteText(dest / "tokenizer_config.json", R"({"eos_token": "<eos>"})");
  }
}

// Bytes [offset, offset + length) of a file.
inline std::string ReadRange(const std::string& path, uint64_t offset, uint64_t length) {
  std::ifstream in(path, std::ios::binary);
  in.seekg(static_cast<std::streamoff>(offset));
  std::string out(length, '\0');
  in.read(out.data(), static_cast<std::streamsize>(length));
  if (static_cast<uint64_t>(in.gcount()) != length) out.resize(static_cast<size_t>(in.gcount()));
  return out;
}

// Parameter counts of a single-file fixture, computed from the raw safetensors
// header and config.json.
struct ExpectedCounts {
  int64_t total = 0;
  int64_t routed = 0;
  int64_t active = 0;
  int64_t num_tensors = 0;
};

inline ExpectedCounts IndependentCounts(const fs::path& model_dir) {
  std::string file = ReadText(model_dir / "model.safetensors");
  uint64_t header_len = 0;
  std::memcpy(&header_len, file.data(), 8);
  auto header = nlohmann::json::parse(file.substr(8, header_len));
  auto config = nlohmann::json::parse(ReadText(model_dir / "config.json"));
  int64_t experts = config.contains("n_routed_experts") ? config["n_routed_experts"].get<int64_t>()
                                                        : config["num_experts"].get<int64_t>();
  int64_t top_k = config["num_experts_per_tok"].get<int64_t>();
  ExpectedCounts c;
  for (auto& [name, entry] : header.items()) {
    if (name == "__metadata__") continue;
    int64_t n = 1;
    for (auto& d : entry["shape"]) n *= d.get<int64_t>();
    c.total += n;
    if (name.find("mlp.experts.") != std::string::npos &&
        name.find("shared_experts") == std::string::npos) {
      c.routed += n;
    }
    ++c.num_tensors;
  }
  c.active = c.total - c.routed + c.routed / experts * top_k;
  return c;
}

}  // namespace krasis::testing_util
