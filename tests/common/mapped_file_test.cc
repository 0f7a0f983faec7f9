// ReleaseMappedPages: pages of a file map leave the process's resident set and
// read back unchanged; memory that is not a file map (heap) is never touched.
#include "common/mapped_file.h"

#include <gtest/gtest.h>
#include <sys/mman.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <cstring>
#include <random>
#include <vector>

namespace krasis {
namespace {

// Resident pages of this process (/proc/self/statm, second field).
long ResidentPages() {
  std::ifstream in("/proc/self/statm");
  long size = 0, resident = 0;
  in >> size >> resident;
  return resident;
}

TEST(MappedFileTest, ReleasedPagesReadBackUnchanged) {
  const size_t size = size_t{64} << 20;  // 64 MiB
  std::vector<char> content(size);
  std::mt19937 rng(3);
  for (auto& c : content) c = static_cast<char>(rng());
  const std::string path = (std::filesystem::path(::testing::TempDir()) / "mapped_file_test.bin").string();
  std::ofstream(path, std::ios::binary).write(content.data(), static_cast<std::streamsize>(size));
  auto map = MapFileReadOnly(path);
  ASSERT_TRUE(map.ok()) << map.status();
  volatile char sink = 0;
  for (size_t i = 0; i < size; i += 4096) sink = sink + static_cast<char>((*map)[i]);
  const size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
  // Release an unaligned middle range: only its whole pages go.
  const size_t first = 3 * page + 100, count = size / 2;
  const long before = ResidentPages();
  ReleaseMappedPages(map->subspan(first, count));
  const long released = before - ResidentPages();
  EXPECT_GE(released, static_cast<long>(count / page) - 2);
  EXPECT_LE(released, static_cast<long>(count / page) + 1024);  // large folios may go whole
  // And the content reads back unchanged.
  EXPECT_EQ(std::memcmp(map->data(), content.data(), size), 0);
  UnmapFile(*map);
  std::filesystem::remove(path);
}

TEST(MappedFileTest, HeapMemoryIsNeverReleased) {
  std::vector<std::byte> heap(size_t{8} << 20, std::byte{0x5a});
  ReleaseMappedPages(heap);
  for (size_t i = 0; i < heap.size(); i += 4096) ASSERT_EQ(heap[i], std::byte{0x5a}) << i;
}

}  // namespace
}  // namespace krasis
