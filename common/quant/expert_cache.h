// The conversion cache of quantized routed experts: one file per MoE layer,
// under <cache root>/<model name>/experts-<int4|int8>g<group>/<layer>.kxq,
// holding every expert's gate, up and down matrices in the layout of
// quant_format.h, so the decode worker maps the file and computes straight from
// it (and several processes on a host share one page-cache copy).
//
// File: a 4 KiB header, then the matrices, each part 4 KiB aligned.
//   header: magic "KRASISXQ", version, format, group size, hidden, inter,
//   number of experts, the source fingerprint (a hash of config.json and of the
//   safetensors tensor index: names, shapes, dtypes, shard sizes and mtimes),
//   the file's total size, then per expert and matrix {data offset, data bytes,
//   scales offset, scales count}, and a checksum of the header itself.
// A file whose magic, version, shapes, fingerprint, size or header checksum do
// not match is stale or foreign: it is ignored and rebuilt. Files are written as
// <name>.tmp.<pid>, fsynced and renamed, so an interrupted build never leaves a
// file that is used; a lock file (flock, released by the kernel when its owner
// dies) keeps two builders of one directory apart.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/quant/expert_set.h"

namespace krasis::quant {

// Hash of a model directory's config.json bytes and tensor index (see above).
absl::StatusOr<uint64_t> SourceFingerprint(const std::string& model_dir);

// <root>/<model name>/experts-<fmt>g<group>.
std::string ExpertCacheDir(const std::string& root, const std::string& model_dir, QuantFormat format,
                           int64_t group_size);

struct ExpertLayerShape {
  QuantFormat format = QuantFormat::kInt4;
  int64_t group_size = 128;  // as requested (each matrix's own group size is derived from it)
  int64_t hidden = 0, inter = 0, num_experts = 0;
  uint64_t fingerprint = 0;
};

// A mapped layer file: the experts' matrices view the mapping.
class MappedExpertLayer {
 public:
  ~MappedExpertLayer();
  // Validates the file against `shape`; kNotFound when it does not exist,
  // kDataLoss (naming the file and what differs) when it is stale, truncated
  // or foreign.
  static absl::StatusOr<std::unique_ptr<MappedExpertLayer>> Open(const std::string& path,
                                                                 const ExpertLayerShape& shape);
  // Views of the matrices (node 0; the caller assigns nodes).
  std::vector<QuantExpert> Experts() const;
  size_t size_bytes() const { return size_; }

 private:
  MappedExpertLayer() = default;
  const uint8_t* base_ = nullptr;
  size_t size_ = 0;
  ExpertLayerShape shape_;
};

// Writes `experts` (all of the layer, in order) to `path` atomically.
absl::Status WriteExpertLayer(const std::string& path, const ExpertLayerShape& shape,
                              const std::vector<QuantExpert>& experts);

// An exclusive lock on a cache directory (creates it). Waits up to
// `timeout_seconds` for another holder (kDeadlineExceeded naming the holder's pid).
class CacheLock {
 public:
  static absl::StatusOr<CacheLock> Acquire(const std::string& dir, double timeout_seconds);
  CacheLock(CacheLock&& other) noexcept : fd_(other.fd_) { other.fd_ = -1; }
  CacheLock& operator=(CacheLock&&) = delete;
  ~CacheLock();

 private:
  explicit CacheLock(int fd) : fd_(fd) {}
  int fd_ = -1;
};

}  // namespace krasis::quant
