// Inspection and validation of one model directory (see model_inspect.h).
#include "services/loader/model_inspect.h"

#include <sys/stat.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <sstream>

#include "common/safetensors.h"
#include "common/status.h"
#include "nlohmann/json.hpp"

namespace krasis {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

constexpr uint64_t kMaxTextFileBytes = 64ull << 20;  // config and tokenizer JSON

absl::StatusOr<std::string> ReadTextFile(const std::string& path) {
  std::error_code ec;
  uint64_t size = fs::file_size(path, ec);
  if (ec) return NotFoundError(path, ": cannot read: ", ec.message());
  if (size > kMaxTextFileBytes) {
    return InvalidArgumentError(path, ": ", size, " bytes is too large");
  }
  std::ifstream in(path, std::ios::binary);
  std::ostringstream text;
  text << in.rdbuf();
  if (!in) return DataLossError(path, ": read failed");
  return std::move(text).str();
}

int64_t MtimeNs(const struct stat& st) {
  return static_cast<int64_t>(st.st_mtim.tv_sec) * 1'000'000'000 + st.st_mtim.tv_nsec;
}

// The decimal index after `marker` when it is followed by '.', e.g. 3 for
// ("model.layers.3.mlp", "layers.").
std::optional<int> IndexAfter(std::string_view name, std::string_view marker) {
  size_t pos = name.find(marker);
  while (pos != std::string_view::npos && pos != 0 && name[pos - 1] != '.') {
    pos = name.find(marker, pos + 1);
  }
  if (pos == std::string_view::npos) return std::nullopt;
  pos += marker.size();
  int64_t value = 0;
  size_t digits = 0;
  while (pos < name.size() && name[pos] >= '0' && name[pos] <= '9' && digits < 9) {
    value = value * 10 + (name[pos] - '0');
    ++pos;
    ++digits;
  }
  if (digits == 0 || pos >= name.size() || name[pos] != '.') return std::nullopt;
  return static_cast<int>(value);
}

std::optional<DType> MajorityDType(const std::map<DType, uint64_t>& bytes) {
  std::optional<DType> best;
  uint64_t best_bytes = 0;
  for (const auto& [dtype, n] : bytes) {
    if (!best || n > best_bytes) best = dtype, best_bytes = n;
  }
  return best;
}

// Reads the token ids of generation_config.json into the record.
absl::Status ReadGenerationConfig(const std::string& path, ModelRecord& record) {
  ASSIGN_OR_RETURN(record.generation_config_json, ReadTextFile(path));
  json j = json::parse(record.generation_config_json, nullptr, false);
  if (j.is_discarded() || !j.is_object()) {
    return InvalidArgumentError(path, ": not a JSON object");
  }
  if (auto it = j.find("bos_token_id"); it != j.end() && it->is_number_integer()) {
    record.generation_bos_token_id = it->get<int64_t>();
  }
  if (auto it = j.find("eos_token_id"); it != j.end()) {
    if (it->is_number_integer()) record.generation_eos_token_ids.push_back(it->get<int64_t>());
    if (it->is_array()) {
      for (const json& id : *it) {
        if (id.is_number_integer()) record.generation_eos_token_ids.push_back(id.get<int64_t>());
      }
    }
  }
  return absl::OkStatus();
}

// Checks the tensor index against config.json: embedding and LM head shapes,
// every layer present, routers of MoE layers shaped [num_experts, hidden].
absl::Status CheckTensorsAgainstConfig(const ModelRecord& record, const ModelConfig& config) {
  const std::string config_path = record.path + "/config.json";
  auto check_matrix = [&](const std::string& name, int64_t rows, int64_t cols,
                          std::string_view meaning) -> absl::Status {
    const ModelTensor* t = record.FindTensor(name);
    if (t == nullptr) {
      return NotFoundError(record.path, ": tensor '", name, "' (", meaning,
                           ") is missing from the checkpoint");
    }
    if (t->shape != Shape{rows, cols}) {
      return InvalidArgumentError(t->path, ": tensor '", name, "' has shape ",
                                  ShapeToString(t->shape), " but ", config_path, " implies ",
                                  ShapeToString({rows, cols}), " (", meaning, ")");
    }
    return absl::OkStatus();
  };
  RETURN_IF_ERROR(check_matrix("model.embed_tokens.weight", config.vocab_size, config.hidden_size,
                               "vocab_size x hidden_size"));
  if (!config.tie_word_embeddings) {
    RETURN_IF_ERROR(check_matrix("lm_head.weight", config.vocab_size, config.hidden_size,
                                 "vocab_size x hidden_size; tie_word_embeddings is false"));
  }
  std::vector<bool> seen(static_cast<size_t>(config.num_hidden_layers), false);
  for (const ModelTensor& t : record.tensors) {
    if (t.layer && *t.layer < config.num_hidden_layers) seen[static_cast<size_t>(*t.layer)] = true;
  }
  for (int64_t i = 0; i < config.num_hidden_layers; ++i) {
    if (!seen[static_cast<size_t>(i)]) {
      return NotFoundError(record.path, ": the checkpoint has no tensors of layer ", i, " but ",
                           config_path, " says num_hidden_layers = ", config.num_hidden_layers);
    }
    if (config.IsMoeLayer(static_cast<int>(i))) {
      RETURN_IF_ERROR(check_matrix(StrCat("model.layers.", i, ".mlp.gate.weight"),
                                   config.num_experts, config.hidden_size,
                                   "router: num_experts x hidden_size"));
    }
  }
  return absl::OkStatus();
}

// Lists the top-level files (config, tokenizer, ...) and checks the must-haves.
absl::Status ReadConfigAndTokenizer(ModelRecord& record) {
  const fs::path dir(record.path);
  std::vector<std::string> names;
  for (const auto& e : record.fingerprint.entries) names.push_back(e.name);
  auto has = [&](std::string_view name) {
    return std::binary_search(names.begin(), names.end(), std::string(name));
  };
  for (const auto& e : record.fingerprint.entries) {
    ModelFileKind kind = ClassifyModelFile(e.name);
    if (kind == ModelFileKind::kOther || kind == ModelFileKind::kWeights) continue;
    record.tokenizer_files.push_back({e.name, (dir / e.name).string(), e.size, kind, {}});
  }
  const std::string config_path = (dir / "config.json").string();
  if (!has("config.json")) {
    return NotFoundError(config_path, ": missing config.json (a Hugging Face model directory has ",
                         "one describing the architecture)");
  }
  ASSIGN_OR_RETURN(record.config_json, ReadTextFile(config_path));
  json j = json::parse(record.config_json, nullptr, false);
  if (j.is_discarded()) return InvalidArgumentError(config_path, ": not valid JSON");
  if (j.is_object()) {
    if (auto it = j.find("architectures");
        it != j.end() && it->is_array() && !it->empty() && it->front().is_string()) {
      record.architecture = it->front().get<std::string>();
    }
    if (auto it = j.find("model_type"); it != j.end() && it->is_string()) {
      record.model_type = it->get<std::string>();
    }
  }
  ASSIGN_OR_RETURN(ModelConfig config, ParseModelConfig(j, config_path));
  record.model_type = config.model_type;
  record.num_layers = config.num_hidden_layers;
  record.num_experts = config.num_experts;
  record.experts_per_token = config.num_experts > 0 ? config.num_experts_per_tok.value_or(0) : 0;
  record.context_length = config.max_position_embeddings;
  record.config = std::move(config);

  if (has("generation_config.json")) {
    RETURN_IF_ERROR(ReadGenerationConfig((dir / "generation_config.json").string(), record));
  }
  if (!has("tokenizer.json")) {
    return NotFoundError(record.path, ": missing tokenizer: no tokenizer.json (the Hugging Face ",
                         "fast-tokenizer file the gateway tokenizes with)");
  }
  return absl::OkStatus();
}

// Opens the checkpoint and fills tensors, weight files, sizes and counts.
absl::Status ReadCheckpoint(ModelRecord& record) {
  ASSIGN_OR_RETURN(std::unique_ptr<SafetensorsModel> model, SafetensorsModel::Open(record.path));
  const fs::path dir(record.path);
  std::map<DType, uint64_t> expert_bytes, dense_bytes;
  for (const auto& shard : model->shards()) {
    std::string rel = fs::path(shard->path()).lexically_relative(dir).generic_string();
    record.weight_files.push_back(
        {rel, shard->path(), shard->file_size(), ModelFileKind::kWeights, {}});
    record.size_bytes += shard->file_size();
    for (const TensorInfo& info : shard->tensors()) {
      ModelTensor t;
      t.name = info.name;
      t.dtype = info.dtype;
      t.shape = info.shape;
      t.file = rel;
      t.path = shard->path();
      t.offset = shard->data_offset() + info.begin;
      t.byte_length = info.nbytes();
      t.layer = IndexAfter(info.name, "layers.");
      t.routed_expert = info.name.find(".mlp.experts.") != std::string::npos;
      if (t.routed_expert) t.expert = IndexAfter(info.name, "experts.");
      (t.routed_expert ? expert_bytes : dense_bytes)[t.dtype] += t.byte_length;
      record.tensors.push_back(std::move(t));
    }
  }
  std::sort(record.weight_files.begin(), record.weight_files.end(),
            [](const ModelFile& a, const ModelFile& b) { return a.file < b.file; });
  std::sort(record.tensors.begin(), record.tensors.end(),
            [](const ModelTensor& a, const ModelTensor& b) { return a.name < b.name; });
  record.expert_dtype = MajorityDType(expert_bytes);
  record.dense_dtype = MajorityDType(dense_bytes);
  ParamCounts counts = CountParams(record.tensors, record.num_experts, record.experts_per_token);
  record.total_params = counts.total;
  record.active_params = counts.active;
  return absl::OkStatus();
}

}  // namespace

ModelFileKind ClassifyModelFile(std::string_view name) {
  static const std::map<std::string_view, ModelFileKind> kKnown = {
      {"config.json", ModelFileKind::kConfig},
      {"generation_config.json", ModelFileKind::kGenerationConfig},
      {"tokenizer.json", ModelFileKind::kTokenizer},
      {"tokenizer_config.json", ModelFileKind::kTokenizer},
      {"special_tokens_map.json", ModelFileKind::kTokenizer},
      {"added_tokens.json", ModelFileKind::kTokenizer},
      {"vocab.json", ModelFileKind::kTokenizer},
      {"vocab.txt", ModelFileKind::kTokenizer},
      {"merges.txt", ModelFileKind::kTokenizer},
      {"tokenizer.model", ModelFileKind::kTokenizer},
      {"chat_template.jinja", ModelFileKind::kChatTemplate},
      {"chat_template.json", ModelFileKind::kChatTemplate},
  };
  if (auto it = kKnown.find(name); it != kKnown.end()) return it->second;
  if (name.ends_with(".safetensors")) return ModelFileKind::kWeights;
  return ModelFileKind::kOther;
}

DirFingerprint FingerprintDir(const std::string& dir) {
  DirFingerprint fp;
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) return fp;
  fp.exists = true;
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    struct stat st {};
    // stat follows symlinks (Hugging Face cache snapshots link to blobs).
    if (::stat(it->path().c_str(), &st) != 0 || !S_ISREG(st.st_mode)) continue;
    fp.entries.push_back(
        {it->path().filename().string(), static_cast<uint64_t>(st.st_size), MtimeNs(st)});
  }
  std::sort(fp.entries.begin(), fp.entries.end(),
            [](const auto& a, const auto& b) { return a.name < b.name; });
  return fp;
}

ParamCounts CountParams(const std::vector<ModelTensor>& tensors, int64_t num_experts,
                        int64_t experts_per_token) {
  ParamCounts counts;
  for (const ModelTensor& t : tensors) {
    int64_t n = NumElements(t.shape);
    counts.total += n;
    if (t.routed_expert && num_experts > 0) counts.routed_experts += n;
  }
  counts.active = counts.total - counts.routed_experts;
  if (num_experts > 0) {
    __int128 used = static_cast<__int128>(counts.routed_experts) * experts_per_token / num_experts;
    counts.active += static_cast<int64_t>(used);
  }
  return counts;
}

const ModelTensor* ModelRecord::FindTensor(std::string_view name) const {
  auto it = std::lower_bound(tensors.begin(), tensors.end(), name,
                             [](const ModelTensor& t, std::string_view n) { return t.name < n; });
  return it != tensors.end() && it->name == name ? &*it : nullptr;
}

const ModelFile* ModelRecord::FindFile(std::string_view file) const {
  for (const auto* list : {&weight_files, &tokenizer_files}) {
    for (const ModelFile& f : *list) {
      if (f.file == file) return &f;
    }
  }
  return nullptr;
}

ModelRecord InspectModel(std::string id, const std::string& dir) {
  ModelRecord record;
  record.id = std::move(id);
  std::error_code ec;
  record.path = fs::absolute(dir, ec).lexically_normal().string();
  if (record.path.size() > 1 && record.path.back() == '/') record.path.pop_back();
  record.fingerprint = FingerprintDir(record.path);
  if (!record.fingerprint.exists) {
    record.status = NotFoundError(record.path, ": no such model directory");
    return record;
  }
  struct stat st {};
  if (::stat(record.path.c_str(), &st) == 0) record.created_unix = st.st_mtim.tv_sec;

  record.status = ReadConfigAndTokenizer(record);
  if (!record.status.ok()) return record;
  record.status = ReadCheckpoint(record);
  if (!record.status.ok()) return record;
  record.status = CheckTensorsAgainstConfig(record, *record.config);
  return record;
}

}  // namespace krasis
