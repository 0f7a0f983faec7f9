// Safetensors checkpoint reader (and a small writer for tests and conversion caches).
//
// A safetensors file is: u64 little-endian header length N, N bytes of JSON header
// ({"name": {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {...}}),
// then the data section; offsets are relative to the first byte after the header.
// Checkpoints are hundreds of GB, so files are mmap'ed read-only (MAP_SHARED) and
// tensors are returned as zero-copy TensorViews into the mapping. Everything in the
// header is validated up front so a corrupt or hostile file yields an absl::Status
// naming the file and tensor, never a crash: kDataLoss for truncated/corrupt files,
// kInvalidArgument for malformed headers or indexes, kNotFound for missing files
// and tensors. SafetensorsModel unifies a sharded checkpoint
// (model.safetensors.index.json) into one name -> tensor map.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/dtype.h"
#include "common/tensor.h"

namespace krasis {

// Headers above this size are rejected as corrupt (the reference implementation's
// limit too).
inline constexpr uint64_t kMaxSafetensorsHeaderBytes = 100'000'000;

// One tensor's entry in a safetensors header.
struct TensorInfo {
  std::string name;
  DType dtype = DType::kF32;
  Shape shape;
  uint64_t begin = 0;  // [begin, end) in the data section (not the file)
  uint64_t end = 0;
  std::string file;  // the file it lives in, as it was opened

  uint64_t nbytes() const { return end - begin; }
};

// A validated header. Every tensor satisfies: known dtype, non-negative dims whose
// byte size fits in uint64, end - begin == numel * DTypeSize, end <= data_size, and
// no two non-empty tensors overlap.
struct ParsedHeader {
  uint64_t data_offset = 0;  // file offset of the data section (8 + header length)
  uint64_t data_size = 0;    // bytes from data_offset to the end of the file
  std::vector<TensorInfo> tensors;  // ordered by (begin, end): file order
  std::map<std::string, std::string> metadata;  // "__metadata__", if present
};

// Validates a whole safetensors file given as bytes (only the first 8 + N bytes are
// read; the size of the rest is what matters). `file_name` goes into error messages
// and TensorInfo::file. Pure: no I/O, safe on arbitrary input (fuzzed).
absl::StatusOr<ParsedHeader> ParseSafetensorsHeader(std::span<const std::byte> file_bytes,
                                                     std::string_view file_name);

// One mmap'ed safetensors file. Views returned by it live as long as the object.
class SafetensorsFile {
 public:
  // Opens, maps and validates `path`. kNotFound if it does not exist.
  static absl::StatusOr<std::unique_ptr<SafetensorsFile>> Open(const std::string& path);

  ~SafetensorsFile();
  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;

  const std::string& path() const { return path_; }
  // File offset of the data section: a tensor's bytes are at data_offset() + begin.
  uint64_t data_offset() const { return header_.data_offset; }
  uint64_t file_size() const { return size_; }
  // In file order (by data offset).
  const std::vector<TensorInfo>& tensors() const { return header_.tensors; }
  const std::map<std::string, std::string>& metadata() const { return header_.metadata; }

  // nullptr when absent.
  const TensorInfo* Find(std::string_view name) const;
  // Zero-copy view into the mapping; kNotFound naming the file when absent.
  absl::StatusOr<TensorView> GetTensor(std::string_view name) const;
  // View of an entry of tensors() (or the result of Find) of this file. The mapping
  // is page-aligned, but a file whose header length is not a multiple of 8 (old
  // writers) or with odd tensor order can yield views that are not aligned to their
  // element size; check IsAligned before reading through as<T>() (or copy).
  TensorView View(const TensorInfo& info) const;
  // True when the tensor's bytes start at a multiple of its element size.
  bool IsAligned(const TensorInfo& info) const;
  // Raw bytes of an entry of this file.
  std::span<const std::byte> Bytes(const TensorInfo& info) const;

 private:
  SafetensorsFile(std::string path, const std::byte* map, uint64_t size, ParsedHeader header);

  std::string path_;
  const std::byte* map_ = nullptr;  // whole file, PROT_READ, MAP_SHARED (null if empty)
  uint64_t size_ = 0;
  ParsedHeader header_;
  std::unordered_map<std::string_view, size_t> index_;  // name -> tensors() index
};

// A checkpoint: one file, or a directory of shards. For a directory, uses
// model.safetensors.index.json if present, else model.safetensors, else every
// *.safetensors in it (sorted). A path ending in ".json" is read as an index.
class SafetensorsModel {
 public:
  static absl::StatusOr<std::unique_ptr<SafetensorsModel>> Open(const std::string& dir_or_file);

  // The path given to Open.
  const std::string& root() const { return root_; }
  // The index file used, or empty.
  const std::string& index_path() const { return index_path_; }
  // Opened shards, sorted by path.
  const std::vector<std::unique_ptr<SafetensorsFile>>& shards() const { return shards_; }
  std::vector<std::string> shard_paths() const;

  // All tensor names across shards, sorted.
  std::vector<std::string> tensor_names() const;
  size_t num_tensors() const { return tensors_.size(); }
  bool Contains(std::string_view name) const { return Find(name) != nullptr; }

  // nullptr when absent. TensorInfo::file names the shard.
  const TensorInfo* Find(std::string_view name) const;
  // The shard holding `name`, or nullptr.
  const SafetensorsFile* ShardOf(std::string_view name) const;
  // kNotFound "tensor 'x' not found in <root>" when absent.
  absl::StatusOr<TensorView> GetTensor(std::string_view name) const;

 private:
  struct Entry {
    const SafetensorsFile* shard;
    const TensorInfo* info;
  };
  SafetensorsModel() = default;
  absl::Status AddShard(std::unique_ptr<SafetensorsFile> shard);

  std::string root_;
  std::string index_path_;
  std::vector<std::unique_ptr<SafetensorsFile>> shards_;
  std::unordered_map<std::string_view, Entry> tensors_;  // keys point into TensorInfo
};

// Writes a safetensors file holding `tensors` (each view's nbytes() are copied
// from its data) and optional metadata, readable by the reference implementation.
// Like it, lays the data out by element size, largest first (stable otherwise), and
// pads the header with spaces to 8 bytes, so every tensor is naturally aligned.
// Writes `path`.tmp and renames it over `path`.
absl::Status WriteSafetensors(const std::string& path,
                              const std::vector<std::pair<std::string, TensorView>>& tensors,
                              const std::map<std::string, std::string>& metadata = {});

}  // namespace krasis
