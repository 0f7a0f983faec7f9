// Byte-range reads and one-pass checksums of model files (see file_io.h).
#include "services/loader/file_io.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "common/status.h"
#include "services/loader/crc32c.h"

namespace krasis {

struct FileRange::Fd {
  int fd = -1;
  ~Fd() {
    if (fd >= 0) ::close(fd);
  }
};

namespace {

constexpr size_t kChecksumBufferBytes = 4 << 20;

// Reads exactly `size` bytes at `offset` unless the file ends first; returns the
// bytes read.
absl::StatusOr<size_t> PreadFull(int fd, const std::string& path, std::byte* out, size_t size,
                                 uint64_t offset) {
  size_t done = 0;
  while (done < size) {
    ssize_t n = ::pread(fd, out + done, size - done, static_cast<off_t>(offset + done));
    if (n < 0) {
      if (errno == EINTR) continue;
      return absl::ErrnoToStatus(errno, StrCat(path, ": read at byte ", offset + done));
    }
    if (n == 0) break;
    done += static_cast<size_t>(n);
  }
  return done;
}

absl::StatusOr<int> OpenReadOnly(const std::string& path, uint64_t* size) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    int err = errno;
    if (err == ENOENT) return NotFoundError(path, ": no such file");
    return absl::ErrnoToStatus(err, StrCat(path, ": cannot open"));
  }
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    int err = errno;
    ::close(fd);
    return absl::ErrnoToStatus(err, StrCat(path, ": cannot stat"));
  }
  *size = static_cast<uint64_t>(st.st_size);
  return fd;
}

}  // namespace

absl::StatusOr<FileRange> FileRange::Open(const std::string& path, uint64_t object_base,
                                          uint64_t object_size, uint64_t offset, uint64_t length) {
  if (offset > object_size || (length != 0 && length > object_size - offset)) {
    return absl::OutOfRangeError(StrCat("range [", offset, ", +", length, ") is past the end of ",
                                        "the object (", object_size, " bytes)"));
  }
  FileRange range;
  range.fd_ = std::make_shared<Fd>();
  uint64_t file_size = 0;
  ASSIGN_OR_RETURN(range.fd_->fd, OpenReadOnly(path, &file_size));
  if (file_size < object_base || file_size - object_base < object_size) {
    return DataLossError(path, ": file is ", file_size, " bytes, expected at least ",
                         object_base + object_size, " (it changed since it was indexed?)");
  }
  range.path_ = path;
  range.object_base_ = object_base;
  range.object_size_ = object_size;
  range.range_offset_ = offset;
  range.range_length_ = length == 0 ? object_size - offset : length;
  return range;
}

absl::StatusOr<uint32_t> FileRange::Stream(size_t chunk_bytes, const ChunkSink& sink) const {
  if (chunk_bytes == 0) return InvalidArgumentError("chunk size must be positive");
  std::vector<std::byte> buffer(std::min<uint64_t>(chunk_bytes, range_length_));
  uint32_t whole = 0;
  uint64_t pos = range_offset_;
  const uint64_t end = range_offset_ + range_length_;
  while (pos < end) {
    size_t want = static_cast<size_t>(std::min<uint64_t>(buffer.size(), end - pos));
    ASSIGN_OR_RETURN(size_t got,
                     PreadFull(fd_->fd, path_, buffer.data(), want, object_base_ + pos));
    if (got != want) {
      return DataLossError(path_, ": file ended at byte ", object_base_ + pos + got,
                           " (it changed since it was indexed?)");
    }
    std::span<const std::byte> data(buffer.data(), want);
    uint32_t crc = Crc32c(data);
    whole = Crc32cExtend(whole, data.data(), data.size());
    if (!sink(pos, data, crc)) return absl::CancelledError("the reader went away");
    pos += want;
  }
  return whole;
}

absl::StatusOr<FileChecksums> ChecksumFile(
    const std::string& path, const std::vector<FileSpan>& spans,
    const std::function<bool(uint64_t bytes_done, size_t span)>& progress) {
  uint64_t size = 0;
  ASSIGN_OR_RETURN(int raw_fd, OpenReadOnly(path, &size));
  struct Closer {
    int fd;
    ~Closer() { ::close(fd); }
  } closer{raw_fd};
  uint64_t prev_end = 0;
  for (const FileSpan& s : spans) {
    if (s.offset < prev_end || s.offset > size || s.length > size - s.offset) {
      return InvalidArgumentError(path, ": span [", s.offset, ", +", s.length,
                                  ") overlaps another or is outside the file (", size, " bytes)");
    }
    prev_end = s.offset + s.length;
  }
  FileChecksums out;
  out.span_crc32c.assign(spans.size(), 0);
  std::vector<std::byte> buffer(
      static_cast<size_t>(std::min<uint64_t>(kChecksumBufferBytes, size)));
  size_t si = 0;
  uint64_t pos = 0;
  while (pos < size) {
    size_t want = static_cast<size_t>(std::min<uint64_t>(buffer.size(), size - pos));
    ASSIGN_OR_RETURN(size_t got, PreadFull(raw_fd, path, buffer.data(), want, pos));
    if (got != want) {
      return DataLossError(path, ": file ended at byte ", pos + got, " while reading");
    }
    out.file_crc32c = Crc32cExtend(out.file_crc32c, buffer.data(), want);
    const uint64_t chunk_end = pos + want;
    while (si < spans.size()) {
      const FileSpan& s = spans[si];
      const uint64_t s_end = s.offset + s.length;
      if (s.length == 0 || s_end <= pos) {  // empty, or finished in an earlier chunk
        ++si;
        continue;
      }
      if (s.offset >= chunk_end) break;
      uint64_t from = std::max(s.offset, pos), to = std::min(s_end, chunk_end);
      out.span_crc32c[si] =
          Crc32cExtend(out.span_crc32c[si], buffer.data() + (from - pos), to - from);
      if (s_end > chunk_end) break;
      ++si;
    }
    pos = chunk_end;
    if (progress && !progress(pos, si)) return absl::CancelledError("checksumming stopped");
  }
  return out;
}

}  // namespace krasis
