// The DRAM read bandwidth the benchmarks compare against, GB/s, the best of a
// few passes. Each NUMA node's threads read a buffer first touched by
// themselves (so on their node) in 64 KiB grabs from a shared counter -- the
// way the decode kernels share their weights -- with the widest loads the
// machine has (AVX-512, else AVX2). Dynamic grabs matter on a shared host: with
// one fixed slice per thread a single preempted vCPU sets the time of the
// whole pass, and the figure came out 10-30% below what the same machine
// streams (qmatmul_bench's plain read), which flattered every ratio against it.
// Shared by decode_bench, expert_decode_bench and qmatmul_bench.
#pragma once

#include <immintrin.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <vector>

#include "common/threading/numa_pool.h"

namespace krasis::bench {

__attribute__((target("avx2"))) inline uint64_t ReadAvx2(const uint8_t* p, size_t n) {
  __m256i acc = _mm256_setzero_si256();
  for (size_t i = 0; i + 128 <= n; i += 128) {
    acc = _mm256_xor_si256(acc, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + i)));
    acc = _mm256_xor_si256(acc, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + i + 32)));
    acc = _mm256_xor_si256(acc, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + i + 64)));
    acc = _mm256_xor_si256(acc, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + i + 96)));
  }
  return static_cast<uint64_t>(_mm256_extract_epi64(acc, 0));
}

__attribute__((target("avx512f"))) inline uint64_t ReadAvx512(const uint8_t* p, size_t n) {
  __m512i acc = _mm512_setzero_si512();
  for (size_t i = 0; i + 256 <= n; i += 256) {
    acc = _mm512_xor_si512(acc, _mm512_loadu_si512(p + i));
    acc = _mm512_xor_si512(acc, _mm512_loadu_si512(p + i + 64));
    acc = _mm512_xor_si512(acc, _mm512_loadu_si512(p + i + 128));
    acc = _mm512_xor_si512(acc, _mm512_loadu_si512(p + i + 192));
  }
  alignas(64) uint64_t lanes[8];
  _mm512_store_si512(lanes, acc);  // (not a cast to 128 bits: GCC 12 warns inside its own header)
  return lanes[0];
}

// Plain reads of [p, p + n), with the widest loads this machine has.
inline uint64_t ReadBytes(const uint8_t* p, size_t n) {
  static const bool avx512 = __builtin_cpu_supports("avx512f");
  return avx512 ? ReadAvx512(p, n) : ReadAvx2(p, n);
}

inline double MeasureReadBandwidth(NumaThreadPool& pool, size_t bytes_per_thread = size_t{256} << 20) {
  constexpr size_t kGrab = size_t{64} << 10;
  bytes_per_thread = std::max(kGrab, bytes_per_thread / kGrab * kGrab);
  const int nodes = pool.num_nodes();
  // One buffer per node, a slice per thread of it, each slice touched first by its thread.
  std::vector<std::unique_ptr<uint8_t[]>> buffers(static_cast<size_t>(nodes));
  std::vector<size_t> node_bytes(static_cast<size_t>(nodes), 0);
  for (int n = 0; n < nodes; ++n) {
    node_bytes[static_cast<size_t>(n)] = bytes_per_thread * static_cast<size_t>(pool.threads_per_node()[static_cast<size_t>(n)]);
    buffers[static_cast<size_t>(n)].reset(new uint8_t[node_bytes[static_cast<size_t>(n)]]);
  }
  pool.Run([&](const PoolWorker& w) {
    std::fill_n(buffers[static_cast<size_t>(w.node)].get() + bytes_per_thread * static_cast<size_t>(w.index_in_node),
                bytes_per_thread, uint8_t{1});
  });
  std::atomic<uint64_t> sink{0};
  double best = 0.0;
  for (int pass = 0; pass < 5; ++pass) {
    std::unique_ptr<std::atomic<size_t>[]> next(new std::atomic<size_t>[static_cast<size_t>(nodes)]);
    for (int n = 0; n < nodes; ++n) next[static_cast<size_t>(n)].store(0);
    auto t0 = std::chrono::steady_clock::now();
    pool.Run([&](const PoolWorker& w) {
      const uint8_t* base = buffers[static_cast<size_t>(w.node)].get();
      const size_t total = node_bytes[static_cast<size_t>(w.node)];
      uint64_t s = 0;
      for (;;) {
        const size_t begin = next[static_cast<size_t>(w.node)].fetch_add(kGrab, std::memory_order_relaxed);
        if (begin >= total) break;
        s ^= ReadBytes(base + begin, std::min(kGrab, total - begin));
      }
      sink.fetch_xor(s);
    });
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    best = std::max(best, static_cast<double>(bytes_per_thread) * pool.num_threads() / s / 1e9);
  }
  return best;
}

// Other memory read between timed calls (untimed), so the next call finds
// none of its own data in the caches: one slice per worker, first touched by it.
class CacheEvictor {
 public:
  CacheEvictor(NumaThreadPool& pool, size_t bytes) : pool_(pool), buffer_(bytes) {
    pool_.Run([&](const PoolWorker& w) {
      auto [b, e] = SplitRange(static_cast<int64_t>(buffer_.size()), w.global_index, pool_.num_threads());
      std::fill(buffer_.begin() + b, buffer_.begin() + e, uint8_t{1});
    });
  }
  size_t bytes() const { return buffer_.size(); }
  void Evict() {
    if (buffer_.empty()) return;
    pool_.Run([&](const PoolWorker& w) {
      auto [b, e] = SplitRange(static_cast<int64_t>(buffer_.size()), w.global_index, pool_.num_threads());
      sink_.fetch_xor(ReadBytes(buffer_.data() + b, static_cast<size_t>(e - b)));
    });
  }
  uint64_t sink() const { return sink_.load(); }  // (keeps the reads)

 private:
  NumaThreadPool& pool_;
  std::vector<uint8_t> buffer_;
  std::atomic<uint64_t> sink_{0};
};

}  // namespace krasis::bench
