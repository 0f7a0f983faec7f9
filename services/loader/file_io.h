// Reading byte ranges of model files for ReadFile / ReadTensor, and one-pass
// checksumming of whole files (no gRPC).
//
// An "object" is a whole file or one tensor inside a file (object_base is then the
// tensor's absolute file offset). Reads use pread on a file descriptor opened when
// the range is resolved, so a stream is unaffected by the registry re-inspecting
// the model meanwhile; a file that shrank under us is DATA_LOSS, not garbage.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace krasis {

// Called for each chunk: its position within the object, its bytes and their
// CRC-32C. Return false to stop (the stream then ends with CANCELLED).
using ChunkSink =
    std::function<bool(uint64_t object_offset, std::span<const std::byte> data, uint32_t crc32c)>;

class FileRange {
 public:
  // The range [offset, offset + length) of the object of `object_size` bytes that
  // starts at byte `object_base` of the file at `path`; length 0 means "to the end
  // of the object". OUT_OF_RANGE when the range does not fit in the object,
  // NOT_FOUND when the file cannot be opened, DATA_LOSS when the file is shorter
  // than object_base + object_size.
  static absl::StatusOr<FileRange> Open(const std::string& path, uint64_t object_base,
                                        uint64_t object_size, uint64_t offset, uint64_t length);

  uint64_t object_size() const { return object_size_; }
  uint64_t range_offset() const { return range_offset_; }
  uint64_t range_length() const { return range_length_; }

  // Reads the range in chunks of `chunk_bytes` (the last may be shorter), calls
  // `sink` for each, and returns the CRC-32C of the whole range.
  absl::StatusOr<uint32_t> Stream(size_t chunk_bytes, const ChunkSink& sink) const;

 private:
  struct Fd;
  std::shared_ptr<Fd> fd_;
  std::string path_;
  uint64_t object_base_ = 0;
  uint64_t object_size_ = 0;
  uint64_t range_offset_ = 0;
  uint64_t range_length_ = 0;
};

// A part of a file whose CRC-32C is wanted besides the whole file's.
struct FileSpan {
  uint64_t offset = 0;
  uint64_t length = 0;
};

struct FileChecksums {
  uint32_t file_crc32c = 0;
  std::vector<uint32_t> span_crc32c;  // one per requested span, same order
};

// Reads the file at `path` once, front to back, and returns the CRC-32C of the
// whole file and of each span. Spans must be sorted by offset, disjoint and
// inside the file (INVALID_ARGUMENT otherwise). `progress` is called with the
// bytes read so far and the index of the span being read (spans.size() for
// bytes outside every span); returning false stops with CANCELLED.
absl::StatusOr<FileChecksums> ChecksumFile(
    const std::string& path, const std::vector<FileSpan>& spans,
    const std::function<bool(uint64_t bytes_done, size_t span)>& progress);

}  // namespace krasis
