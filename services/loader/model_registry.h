// The loader's model registry (no gRPC): which models exist, whether they are
// valid, and where their bytes are.
//
// Models come from two places: every model directory found under the models dir
// (default ~/.krasis/models; id = the directory's path relative to it, e.g.
// "Qwen3-Next-80B-A3B-Instruct" or "deepseek-ai/DeepSeek-V3"), and directories
// registered explicitly (`krasis-loader --model DIR`; id = the folder name; an
// explicit model hides a scanned one of the same id or path). A directory is a model
// directory when it holds config.json, a *.safetensors file or a shard index;
// other directories are searched up to three levels deep (hidden ones skipped).
//
// Each model is inspected and validated by InspectModel (model_inspect.h). The
// result is kept with a fingerprint of the directory's files (names, sizes,
// mtimes), so a rescan only stats files and re-inspects what changed; Find
// re-checks one model's fingerprint (at most once a second by default) so a
// manifest does not describe stale files.
// Thread-safe: records are immutable and shared; updates replace them.
#pragma once

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "services/loader/model_inspect.h"

namespace krasis {

struct RegistryOptions {
  std::string models_dir;               // scanned; need not exist
  std::string cache_dir;                // conversion cache (reported; used by a later issue)
  std::vector<std::string> model_dirs;  // registered explicitly
  // List(rescan = false) rescans when the last scan is older than this.
  absl::Duration scan_max_age = absl::Seconds(10);
  // Find re-checks a model's files at most this often (a remote worker calls
  // ReadTensor for each of a model's tens of thousands of tensors).
  absl::Duration recheck_interval = absl::Seconds(1);
};

// ~/.krasis/<leaf> ($HOME, or /tmp without one).
std::string DefaultKrasisDir(std::string_view leaf);

class ModelRegistry {
 public:
  explicit ModelRegistry(RegistryOptions options);

  // Absolute paths.
  const std::string& models_dir() const { return models_dir_; }
  const std::string& cache_dir() const { return cache_dir_; }

  // Every model (valid or not), sorted by id. Rescans first when `rescan`, when
  // nothing was scanned yet, or when the last scan is older than scan_max_age.
  std::vector<std::shared_ptr<const ModelRecord>> List(bool rescan);

  // The model `id`, re-inspected if its files changed. NOT_FOUND (after one
  // rescan, so a newly added model is found) when there is no such model.
  absl::StatusOr<std::shared_ptr<const ModelRecord>> Find(std::string_view id);

  // Like Find, but FAILED_PRECONDITION with the validation message when the
  // model is invalid.
  absl::StatusOr<std::shared_ptr<const ModelRecord>> FindValid(std::string_view id);

  // Stores checksums computed for `id` (relative file name -> CRC-32C, tensor
  // name -> CRC-32C) if the model still has `fingerprint`; returns whether stored.
  bool StoreChecksums(std::string_view id, const DirFingerprint& fingerprint,
                      const std::map<std::string, uint32_t>& file_crcs,
                      const std::map<std::string, uint32_t>& tensor_crcs);

  // How many times a model directory was inspected (tests check that an
  // unchanged model is not inspected again).
  int64_t inspections() const { return inspections_.load(); }

 private:
  struct Candidate {
    std::string id;
    std::string dir;
  };
  std::vector<Candidate> Candidates() const;
  void Scan();
  // `previous` if the directory is unchanged, else a fresh inspection.
  std::shared_ptr<const ModelRecord> Refresh(const std::string& id, const std::string& dir,
                                             std::shared_ptr<const ModelRecord> previous);

  std::string models_dir_;
  std::string cache_dir_;
  std::vector<std::string> explicit_dirs_;  // absolute
  absl::Duration scan_max_age_;
  absl::Duration recheck_interval_;

  std::mutex scan_mu_;  // one scan at a time
  mutable std::mutex mu_;
  std::map<std::string, std::shared_ptr<const ModelRecord>, std::less<>> models_;  // by id
  absl::Time last_scan_ = absl::InfinitePast();
  std::map<std::string, absl::Time, std::less<>> last_checked_;  // by id, for Find
  std::atomic<int64_t> inspections_{0};
};

}  // namespace krasis
