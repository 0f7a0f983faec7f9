// cpu_attention_bench: the CPU attention of one decode token (CpuOps::Attention,
// n = 1) over a paged BF16 cache of several lengths, as the decode worker calls
// it once per sequence and layer. Prints per length the time of one call, the
// cache bytes it reads and the rate that is, with the cache cold (other memory
// read between calls, untimed, as a real step reads its weights between one
// layer's attention and the next) and warm (calls back to back), next to the
// cost of an empty pool dispatch. Shapes default to DeepSeek-V2-Lite's absorbed
// MLA (16 query heads over one latent head: keys 576 wide, values the first
// 512); --kv-heads 2 --head-dim 256 --v-dim 256 --separate-v gives
// Qwen3-Next's GQA layers.
//
//   cpu_attention_bench [--heads 16] [--kv-heads 1] [--head-dim 576] [--v-dim 512]
//                       [--separate-v] [--positions 128,1024,4096,16384] [--calls 50]
//                       [--evict-mb 256]
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <iostream>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_split.h"
#include "benchmarks/bandwidth.h"
#include "common/kernels/cpu_ops.h"
#include "common/models/kv_cache.h"

namespace {

using Clock = std::chrono::steady_clock;

}  // namespace

int main(int argc, char** argv) {
  int64_t heads = 16, kv_heads = 1, head_dim = 576, v_dim = 512, calls = 50, evict_mb = 256;
  bool separate_v = false;
  std::string positions_list = "128,1024,4096,16384";
  for (int i = 1; i < argc; ++i) {
    const std::string f = argv[i];
    if (f == "--separate-v") {
      separate_v = true;
      continue;
    }
    if (i + 1 >= argc) {
      std::cerr << "cpu_attention_bench: " << f << " needs a value\n";
      return 2;
    }
    const std::string v = argv[++i];
    if (f == "--heads") heads = std::stoll(v);
    else if (f == "--kv-heads") kv_heads = std::stoll(v);
    else if (f == "--head-dim") head_dim = std::stoll(v);
    else if (f == "--v-dim") v_dim = std::stoll(v);
    else if (f == "--positions") positions_list = v;
    else if (f == "--calls") calls = std::max<int64_t>(1, std::stoll(v));
    else if (f == "--evict-mb") evict_mb = std::max<int64_t>(0, std::stoll(v));
    else {
      std::cerr << "usage: cpu_attention_bench [--heads 16] [--kv-heads 1] [--head-dim 576] [--v-dim 512] "
                   "[--separate-v] [--positions 128,1024,4096,16384] [--calls 50] [--evict-mb 256]\n";
      return 2;
    }
  }
  if (heads <= 0 || kv_heads <= 0 || heads % kv_heads != 0 || head_dim <= 0 || v_dim <= 0 ||
      (!separate_v && v_dim > head_dim)) {
    std::cerr << "cpu_attention_bench: heads must be a multiple of kv-heads, dims positive, and v-dim <= head-dim "
                 "unless --separate-v\n";
    return 2;
  }
  krasis::NumaThreadPool& pool = krasis::NumaThreadPool::Default();
  const krasis::CpuOps ops(&pool);
  {
    constexpr int kRuns = 2000;
    const auto d0 = Clock::now();
    for (int i = 0; i < kRuns; ++i) pool.Run([](const krasis::PoolWorker&) {});
    std::printf("%d threads, empty pool dispatch %.1f us\n", pool.num_threads(),
                std::chrono::duration<double, std::micro>(Clock::now() - d0).count() / kRuns);
  }
  std::printf("heads %lld over %lld kv heads, keys %lld wide, values %lld wide (%s), BF16 cache, blocks of 16\n\n",
              static_cast<long long>(heads), static_cast<long long>(kv_heads), static_cast<long long>(head_dim),
              static_cast<long long>(v_dim), separate_v ? "stored after the keys" : "the keys' first elements");
  krasis::bench::CacheEvictor evictor(pool, static_cast<size_t>(evict_mb) << 20);
  std::printf("%10s %12s %14s %14s %14s %14s\n", "positions", "cache MB", "cold us/call", "cold GB/s",
              "warm us/call", "warm GB/s");
  const int64_t row = kv_heads * head_dim + (separate_v ? kv_heads * v_dim : 0);
  constexpr int64_t kBlock = 16;
  std::mt19937 rng(7);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  for (const std::string& item : std::vector<std::string>(absl::StrSplit(positions_list, ',', absl::SkipEmpty()))) {
    const int64_t positions = std::stoll(item);
    if (positions <= 0) continue;
    const int64_t blocks = (positions + kBlock - 1) / kBlock;
    krasis::PagedKvCache cache(blocks, kBlock, {row}, krasis::DType::kBF16);
    std::vector<int32_t> table;
    std::vector<float> values(static_cast<size_t>(row));
    for (int64_t b = 0; b < blocks; ++b) {
      table.push_back(*cache.Allocate());
      for (int64_t s = 0; s < kBlock; ++s) {
        for (float& x : values) x = normal(rng);
        cache.Store(values.data(), row, cache.Slot(table.back(), 0, s));
      }
    }
    std::vector<float> q(static_cast<size_t>(heads * head_dim)), out(static_cast<size_t>(heads * v_dim));
    for (float& x : q) x = normal(rng) / std::sqrt(static_cast<float>(head_dim));
    krasis::AttentionArgs args;
    args.q = q.data();
    args.n = 1;
    args.start_pos = positions - 1;
    args.heads = heads;
    args.kv_heads = kv_heads;
    args.head_dim = head_dim;
    args.v_dim = v_dim;
    args.block_size = kBlock;
    args.slot_stride = cache.SlotStride();
    args.k_offset = 0;
    args.v_offset = separate_v ? kv_heads * head_dim : 0;
    args.kv_dtype = krasis::DType::kBF16;
    args.block_row = [&](int64_t b) -> const std::byte* { return cache.Slot(table[static_cast<size_t>(b)], 0, 0); };
    args.out = out.data();
    ops.Attention(args);  // first touch of the scratch
    double cold = 0.0, warm = 0.0;
    for (int64_t c = 0; c < calls; ++c) {
      evictor.Evict();
      const auto t0 = Clock::now();
      ops.Attention(args);
      cold += std::chrono::duration<double>(Clock::now() - t0).count();
    }
    const auto w0 = Clock::now();
    for (int64_t c = 0; c < calls; ++c) ops.Attention(args);
    warm = std::chrono::duration<double>(Clock::now() - w0).count();
    const double bytes = static_cast<double>(positions * row * 2);
    std::printf("%10lld %12.2f %14.1f %14.1f %14.1f %14.1f\n", static_cast<long long>(positions), bytes / 1e6,
                cold / calls * 1e6, bytes * calls / cold / 1e9, warm / calls * 1e6, bytes * calls / warm / 1e9);
  }
  return evictor.sink() == 42 ? 1 : 0;  // (keeps the eviction reads)
}
