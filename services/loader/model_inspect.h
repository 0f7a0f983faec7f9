// Inspection and validation of one Hugging Face model directory (no gRPC).
//
// InspectModel reads config.json (and generation_config.json), checks the
// tokenizer is there, opens the safetensors checkpoint (single file or shards;
// the reader catches missing shards and truncated files), checks the tensors
// against the config and builds what a manifest lists: every tensor with the
// absolute file offset of its bytes, the weight files, the tokenizer files, and
// the parameter counts. A model that fails any check still yields a record, with
// `status` saying why (naming the file and the problem) and as many summary
// fields filled as could be read, so ListModels can show it as INVALID.
//
// Parameter counts. total_params is the sum of numel over every stored tensor
// (FP8 block-scale tensors included: about 1/16384 of their matrix). Routed-expert
// tensors are those under "<layer>.mlp.experts." (one tensor per expert, or fused
// all-expert tensors); shared experts and routers are not routed. A token uses
// every non-routed parameter plus num_experts_per_tok of num_experts routed
// experts in each MoE layer, so
//   active_params = (total - routed) + routed * num_experts_per_tok / num_experts.
// Dense models (no routed tensors) have active == total.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "common/dtype.h"
#include "common/model_config.h"
#include "common/tensor.h"

namespace krasis {

// What a file of a model is for (mirrors krasis.v1.FileKind).
enum class ModelFileKind {
  kOther,
  kWeights,
  kConfig,
  kGenerationConfig,
  kTokenizer,
  kChatTemplate
};

// The kind of a model-dir file by its name (tokenizer.json -> kTokenizer, ...);
// kOther for names the loader does not serve (README.md, the shard index, ...).
ModelFileKind ClassifyModelFile(std::string_view file_name);

// One file of a model directory.
struct ModelFile {
  std::string file;  // relative to the model dir, '/'-separated (ReadFile's name)
  std::string path;  // absolute path on this host
  uint64_t size_bytes = 0;
  ModelFileKind kind = ModelFileKind::kOther;
  std::optional<uint32_t> crc32c;  // once computed (Prepare with verify)
};

// One stored tensor and exactly where its bytes are.
struct ModelTensor {
  std::string name;
  DType dtype = DType::kBF16;
  Shape shape;
  std::string file;     // shard, relative to the model dir
  std::string path;     // shard, absolute
  uint64_t offset = 0;  // absolute file offset of the first byte
  uint64_t byte_length = 0;
  std::optional<int> layer;        // "model.layers.<i>."
  std::optional<int> expert;       // "...mlp.experts.<j>."
  bool routed_expert = false;      // under "<layer>.mlp.experts." (see the file comment)
  std::optional<uint32_t> crc32c;  // once computed (Prepare with verify)
};

// The top-level regular files of a directory with their sizes and modification
// times: when it is unchanged, an earlier inspection still holds.
struct DirFingerprint {
  bool exists = false;
  struct Entry {
    std::string name;
    uint64_t size = 0;
    int64_t mtime_ns = 0;
    bool operator==(const Entry&) const = default;
  };
  std::vector<Entry> entries;  // sorted by name
  bool operator==(const DirFingerprint&) const = default;
};
DirFingerprint FingerprintDir(const std::string& dir);

// Parameter counts of a tensor list (see the file comment for the rule).
struct ParamCounts {
  int64_t total = 0;
  int64_t routed_experts = 0;  // parameters of all routed experts together
  int64_t active = 0;
};
ParamCounts CountParams(const std::vector<ModelTensor>& tensors, int64_t num_experts,
                        int64_t experts_per_token);

// Everything the loader knows about one model directory.
struct ModelRecord {
  std::string id;              // registry id (path relative to the models dir, or folder name)
  std::string path;            // absolute model dir
  DirFingerprint fingerprint;  // of `path` when it was inspected
  absl::Status status;         // OK when valid; else the first problem found

  // Summary (filled as far as the checks got).
  std::string architecture;  // config.json "architectures"[0]
  std::string model_type;
  int64_t num_layers = 0;
  int64_t num_experts = 0;
  int64_t experts_per_token = 0;
  int64_t context_length = 0;  // max_position_embeddings
  int64_t total_params = 0;
  int64_t active_params = 0;
  uint64_t size_bytes = 0;   // weight files together
  int64_t created_unix = 0;  // mtime of the model dir

  std::optional<ModelConfig> config;
  std::string config_json;                         // raw text
  std::string generation_config_json;              // raw text, empty if absent
  std::optional<int64_t> generation_bos_token_id;  // from generation_config.json
  std::vector<int64_t> generation_eos_token_ids;   // from generation_config.json

  std::vector<ModelTensor> tensors;        // sorted by name
  std::vector<ModelFile> weight_files;     // shards holding the tensors, sorted
  std::vector<ModelFile> tokenizer_files;  // config, generation config, tokenizer, template
  // The checkpoint's own element type of routed-expert and of other weights (the
  // type holding most of their bytes); nullopt when there are none.
  std::optional<DType> expert_dtype;
  std::optional<DType> dense_dtype;

  bool ok() const { return status.ok(); }
  // nullptr when absent.
  const ModelTensor* FindTensor(std::string_view name) const;
  // A weight or tokenizer file by its relative name; nullptr when not listed.
  const ModelFile* FindFile(std::string_view file) const;
};

// Inspects and validates the model directory `dir` (made absolute) under `id`.
ModelRecord InspectModel(std::string id, const std::string& dir);

}  // namespace krasis
