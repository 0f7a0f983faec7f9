// qmatmul_bench: where batch-1 decode loses memory bandwidth. One large
// quantized matrix (far larger than the last-level cache) lives in memory of a
// chosen kind; the pool's threads stream it in dispatches of a chosen size, each
// worker taking 64 KiB grabs from a shared counter as the decode worker does.
// For every memory kind and dispatch size the table gives the GB/s of a plain
// read of the same bytes and of the INT4 / INT8 batch-1 product, against the
// machine's read bandwidth (benchmarks/bandwidth.h).
//
// Memory kinds: anon-4k (anonymous, MADV_NOHUGEPAGE), anon-thp (anonymous,
// 2 MiB aligned, MADV_HUGEPAGE), file (a file in --dir mapped MAP_SHARED and
// populated, as the decode worker maps the expert cache), file-thp (the same
// with MADV_HUGEPAGE, which only some kernels honour for file pages).
//
//   qmatmul_bench [--mb 4096] [--dir /tmp] [--kinds anon-4k,anon-thp,file]
//                 [--dispatch-mb 1,4,16,0] [--formats int4,int8] [--seconds 1] [--grab-kb 64]
// (--dispatch-mb 0: the whole matrix in one dispatch.) Keep --mb well above the
// last-level cache (300 MiB on the GPU host): a matrix only a few times larger
// is partly served from it, which flatters both columns.
// GCC 12 reports its own _mm_undefined_si128() as "maybe uninitialized".
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#include <fcntl.h>
#include <immintrin.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <iostream>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_split.h"
#include "benchmarks/bandwidth.h"
#include "common/quant/qgemm.h"
#include "common/threading/numa_pool.h"

namespace {

using Clock = std::chrono::steady_clock;
using krasis::NumaThreadPool;
using krasis::PoolWorker;
namespace quant = krasis::quant;

std::vector<std::string> Split(const std::string& s) { return absl::StrSplit(s, ',', absl::SkipEmpty()); }

// A region of `bytes` of the given kind, filled with random bytes (by the pool,
// so anonymous pages are first touched by their readers' threads).
struct Region {
  uint8_t* data = nullptr;
  size_t bytes = 0, mapped = 0;
  int fd = -1;
  std::string path;
  ~Region() {
    if (data != nullptr) munmap(data, mapped);
    if (fd >= 0) close(fd);
    if (!path.empty()) unlink(path.c_str());
  }
};

void FillRandom(uint8_t* p, size_t bytes, NumaThreadPool& pool) {
  pool.Run([&](const PoolWorker& w) {
    auto [b, e] = krasis::SplitRange(static_cast<int64_t>(bytes / 8), w.global_index, pool.num_threads());
    uint64_t x = 0x9E3779B97F4A7C15ull * static_cast<uint64_t>(w.global_index + 1);
    auto* words = reinterpret_cast<uint64_t*>(p);
    for (int64_t i = b; i < e; ++i) {
      x ^= x << 13;
      x ^= x >> 7;
      x ^= x << 17;
      words[i] = x;
    }
  });
}

bool MakeRegion(const std::string& kind, size_t bytes, const std::string& dir, NumaThreadPool& pool, Region* r) {
  constexpr size_t k2M = size_t{2} << 20;
  r->bytes = bytes;
  r->mapped = (bytes + k2M - 1) / k2M * k2M;
  if (kind == "anon-4k" || kind == "anon-thp") {
    void* p = mmap(nullptr, r->mapped + k2M, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) return false;
    // Align to 2 MiB and give back the slack.
    auto base = reinterpret_cast<uintptr_t>(p), aligned = (base + k2M - 1) / k2M * k2M;
    if (aligned > base) munmap(p, aligned - base);
    if (aligned + r->mapped < base + r->mapped + k2M) {
      munmap(reinterpret_cast<void*>(aligned + r->mapped), base + r->mapped + k2M - aligned - r->mapped);
    }
    r->data = reinterpret_cast<uint8_t*>(aligned);
    madvise(r->data, r->mapped, kind == "anon-thp" ? MADV_HUGEPAGE : MADV_NOHUGEPAGE);
    FillRandom(r->data, bytes, pool);
    return true;
  }
  if (kind == "file" || kind == "file-thp") {
    r->path = dir + "/qmatmul_bench." + std::to_string(getpid());
    r->fd = open(r->path.c_str(), O_RDWR | O_CREAT | O_TRUNC, 0600);
    if (r->fd < 0 || ftruncate(r->fd, static_cast<off_t>(r->mapped)) != 0) return false;
    void* w = mmap(nullptr, r->mapped, PROT_READ | PROT_WRITE, MAP_SHARED, r->fd, 0);
    if (w == MAP_FAILED) return false;
    FillRandom(static_cast<uint8_t*>(w), bytes, pool);
    msync(w, r->mapped, MS_SYNC);
    munmap(w, r->mapped);
    void* p = mmap(nullptr, r->mapped, PROT_READ, MAP_SHARED | MAP_POPULATE, r->fd, 0);
    if (p == MAP_FAILED) return false;
    r->data = static_cast<uint8_t*>(p);
    if (kind == "file-thp") madvise(r->data, r->mapped, MADV_HUGEPAGE);
    return true;
  }
  return false;
}

}  // namespace

int main(int argc, char** argv) {
  std::string dir = "/tmp", kinds = "anon-4k,anon-thp,file", dispatches = "1,4,16,0", formats = "int4,int8";
  double mb = 4096, seconds = 1.0, grab_kb = 64;
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string flag = argv[i], value = argv[i + 1];
    if (flag == "--mb") mb = std::stod(value);
    else if (flag == "--dir") dir = value;
    else if (flag == "--kinds") kinds = value;
    else if (flag == "--dispatch-mb") dispatches = value;
    else if (flag == "--formats") formats = value;
    else if (flag == "--seconds") seconds = std::stod(value);
    else if (flag == "--grab-kb") grab_kb = std::stod(value);
    else {
      std::cerr << "usage: qmatmul_bench [--mb 4096] [--dir /tmp] [--kinds anon-4k,anon-thp,file,file-thp] "
                   "[--dispatch-mb 1,4,16,0] [--formats int4,int8] [--seconds 1] [--grab-kb 64]\n";
      return 2;
    }
  }
  NumaThreadPool& pool = NumaThreadPool::Default();
  const quant::Isa isa = quant::BestIsa();
  std::printf("machine: %d threads, kernels %s; read bandwidth (bandwidth.h) %.1f GB/s\n", pool.num_threads(),
              std::string(quant::IsaName(isa)).c_str(), krasis::bench::MeasureReadBandwidth(pool));
  std::printf("%-9s %-6s %9s %10s %10s %8s\n", "memory", "op", "dispatch", "GB/s", "us/disp", "of read");
  constexpr int64_t kCols = 2048;
  for (const std::string& kind : Split(kinds)) {
    Region region;
    if (!MakeRegion(kind, static_cast<size_t>(mb * 1e6), dir, pool, &region)) {
      std::printf("%-9s cannot be made here (%s)\n", kind.c_str(), std::strerror(errno));
      continue;
    }
    for (const std::string& disp : Split(dispatches)) {
      const double dmb = std::stod(disp);
      std::vector<double> read_gbs;
      for (const std::string& op : std::vector<std::string>{"read", "int4", "int8"}) {
        if (op != "read" && formats.find(op) == std::string::npos) continue;
        // The matrix view over the region: rows of whole tiles that fit.
        quant::QuantizedMatrix w;
        w.format = op == "int8" ? quant::QuantFormat::kInt8 : quant::QuantFormat::kInt4;
        w.cols = kCols;
        w.group_size = 128;
        const int64_t tile_bytes = w.groups() * (w.group_bytes() + quant::kTileRows * 4);
        const int64_t tiles = static_cast<int64_t>(region.bytes) / tile_bytes;
        w.rows = tiles * quant::kTileRows;
        w.data = region.data;
        w.scales = reinterpret_cast<const float*>(region.data + w.data_bytes());
        const int64_t tiles_per_disp =
            dmb <= 0 ? tiles : std::clamp<int64_t>(static_cast<int64_t>(dmb * 1e6) / tile_bytes, 1, tiles);
        const int64_t grab = std::max<int64_t>(1, static_cast<int64_t>(grab_kb * 1024) / (w.groups() * w.group_bytes()));
        std::vector<float> x(kCols), y(static_cast<size_t>(w.rows));
        std::mt19937 rng(3);
        std::normal_distribution<float> gauss;
        for (float& v : x) v = gauss(rng);
        quant::QuantizedActivations a;
        quant::QuantizeActivations(x.data(), 1, kCols, w.group_size, &a);
        std::atomic<uint64_t> sink{0};
        int64_t cursor = 0, disps = 0;
        double bytes = 0;
        const auto t0 = Clock::now();
        double elapsed = 0;
        while (elapsed < seconds || disps < 3) {
          const int64_t begin = cursor, end = std::min(tiles, cursor + tiles_per_disp);
          cursor = end >= tiles ? 0 : end;
          std::atomic<int64_t> next{begin};
          pool.Run([&](const PoolWorker&) {
            uint64_t s = 0;
            for (;;) {
              const int64_t t0 = next.fetch_add(grab, std::memory_order_relaxed);
              if (t0 >= end) break;
              const int64_t t1 = std::min(end, t0 + grab);
              if (op == "read") {
                const int64_t g = w.groups();
                s ^= krasis::bench::ReadBytes(w.data + t0 * g * w.group_bytes(), static_cast<size_t>((t1 - t0) * g * w.group_bytes()));
                s ^= krasis::bench::ReadBytes(reinterpret_cast<const uint8_t*>(w.scales + t0 * g * quant::kTileRows),
                             static_cast<size_t>((t1 - t0) * g * quant::kTileRows * 4));
              } else {
                quant::QMatMul(w, a, y.data(), w.rows, t0, t1, isa);
              }
            }
            sink.fetch_xor(s);
          });
          bytes += static_cast<double>((end - begin) * tile_bytes);
          ++disps;
          elapsed = std::chrono::duration<double>(Clock::now() - t0).count();
        }
        const double gbs = bytes / elapsed / 1e9;
        if (op == "read") read_gbs.push_back(gbs);
        std::printf("%-9s %-6s %8.0fM %10.1f %10.1f %7.0f%%\n", kind.c_str(), op.c_str(),
                    static_cast<double>(tiles_per_disp * tile_bytes) / 1e6, gbs, elapsed / disps * 1e6,
                    read_gbs.empty() ? 100.0 : 100.0 * gbs / read_gbs[0]);
      }
    }
  }
  return 0;
}
