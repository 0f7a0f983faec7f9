// The DRAM read bandwidth the benchmarks compare against: every pool thread
// streams its own buffer (first touched by itself, so on its node), GB/s, the
// best of a few passes. Shared by decode_bench and expert_decode_bench.
#pragma once

#include <immintrin.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
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

inline double MeasureReadBandwidth(NumaThreadPool& pool, size_t bytes_per_thread = size_t{256} << 20) {
  std::vector<std::vector<uint8_t>> buffers(static_cast<size_t>(pool.num_threads()));
  pool.Run([&](const PoolWorker& w) { buffers[static_cast<size_t>(w.global_index)].assign(bytes_per_thread, 1); });
  std::atomic<uint64_t> sink{0};
  double best = 0.0;
  for (int pass = 0; pass < 5; ++pass) {
    auto t0 = std::chrono::steady_clock::now();
    pool.Run([&](const PoolWorker& w) {
      const auto& b = buffers[static_cast<size_t>(w.global_index)];
      sink.fetch_xor(ReadAvx2(b.data(), b.size()));
    });
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    best = std::max(best, static_cast<double>(bytes_per_thread) * pool.num_threads() / s / 1e9);
  }
  return best;
}

}  // namespace krasis::bench
