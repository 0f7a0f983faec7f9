// Read-only file maps (see mapped_file.h).
#include "common/mapped_file.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <map>
#include <mutex>

#include "common/status.h"

namespace krasis {

namespace {
// The live maps of MapFileReadOnly: start address -> size.
std::mutex maps_mu;
std::map<uintptr_t, size_t>& maps() {
  static auto* m = new std::map<uintptr_t, size_t>();
  return *m;
}
}  // namespace

absl::StatusOr<std::span<const std::byte>> MapFileReadOnly(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return absl::ErrnoToStatus(errno, StrCat(path, ": cannot open"));
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    const int error = errno;
    ::close(fd);
    return absl::ErrnoToStatus(error, StrCat(path, ": cannot stat"));
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    return InvalidArgumentError(path, ": not a regular file");
  }
  const size_t size = static_cast<size_t>(st.st_size);
  const std::byte* map = nullptr;
  if (size > 0) {
    void* addr = ::mmap(nullptr, size, PROT_READ, MAP_SHARED, fd, 0);
    if (addr == MAP_FAILED) {
      const int error = errno;
      ::close(fd);
      return absl::ErrnoToStatus(error, StrCat(path, ": cannot mmap"));
    }
    map = static_cast<const std::byte*>(addr);
  }
  ::close(fd);  // the mapping keeps the file referenced
  if (size > 0) {
    std::lock_guard<std::mutex> lock(maps_mu);
    maps()[reinterpret_cast<uintptr_t>(map)] = size;
  }
  return std::span<const std::byte>(map, size);
}

void UnmapFile(std::span<const std::byte> bytes) {
  if (bytes.empty()) return;
  {
    std::lock_guard<std::mutex> lock(maps_mu);
    maps().erase(reinterpret_cast<uintptr_t>(bytes.data()));
  }
  ::munmap(const_cast<std::byte*>(bytes.data()), bytes.size());
}

void ReleaseMappedPages(std::span<const std::byte> bytes) {
  const uintptr_t first = reinterpret_cast<uintptr_t>(bytes.data()), last = first + bytes.size();
  {
    // Only inside a live file map: MADV_DONTNEED on heap memory would zero it.
    std::lock_guard<std::mutex> lock(maps_mu);
    auto it = maps().upper_bound(first);
    if (it == maps().begin()) return;
    --it;
    if (last > it->first + it->second) return;
  }
  const uintptr_t page = static_cast<uintptr_t>(sysconf(_SC_PAGESIZE));
  const uintptr_t begin = (first + page - 1) / page * page, end = last / page * page;
  if (end > begin) ::madvise(reinterpret_cast<void*>(begin), end - begin, MADV_DONTNEED);
}

}  // namespace krasis
