// expert_decode_bench: decode speed of the quantized routed experts against the
// machine's memory bandwidth. Builds random experts of a real model's shapes
// (codes and scales written by the worker of each expert's NUMA node, as the
// decode worker places them), then times decode steps: for every layer, each
// token picks top-k distinct experts at random and the experts run as in the
// decode worker (quant::QuantizedExperts, two pool dispatches per layer).
// Prints, per format and batch: tokens/s, bytes of experts read per token, the
// bandwidth achieved, and the ratio to the ceiling (measured DRAM read
// bandwidth / bytes per token).
//
//   expert_decode_bench [--shape deepseek-v2-lite|qwen3-coder-next] [--layers N]
//                       [--formats int4,int8] [--batches 1,4,16] [--seconds 3]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <iostream>
#include <random>
#include <set>
#include <string>


#include "absl/strings/str_split.h"
#include "benchmarks/bandwidth.h"
#include "common/quant/expert_set.h"
#include "common/threading/numa_pool.h"

namespace {

using Clock = std::chrono::steady_clock;
using krasis::NumaThreadPool;
using krasis::PoolWorker;
namespace quant = krasis::quant;

struct Shape {
  std::string name;
  int64_t hidden, inter;
  int experts, top_k, layers;
};

Shape ShapeNamed(const std::string& name) {
  // DeepSeek-V2-Lite: 26 MoE layers (of 27), 64 routed experts, top-6, moe_intermediate 1408.
  if (name == "deepseek-v2-lite") return {name, 2048, 1408, 64, 6, 26};
  // Qwen3-Coder-Next: 48 layers of 512 experts, top-10, moe_intermediate 512 (8 layers by default).
  if (name == "qwen3-coder-next") return {name, 2048, 512, 512, 10, 8};
  std::cerr << "unknown --shape " << name << "\n";
  std::exit(2);
}

std::vector<std::string> Split(const std::string& s) { return absl::StrSplit(s, ',', absl::SkipEmpty()); }

// Random codes and scales of the right layout, written by the calling thread.
quant::QuantizedMatrix RandomMatrix(int64_t rows, int64_t cols, quant::QuantFormat format, uint64_t seed) {
  quant::QuantizedMatrix m;
  m.format = format;
  m.rows = rows;
  m.cols = cols;
  m.group_size = quant::ChooseGroupSize(cols, 128);
  m.owned_data.resize(m.data_bytes());
  m.owned_scales.resize(m.scale_count());
  uint64_t x = seed * 0x9E3779B97F4A7C15ull + 1;
  auto* words = reinterpret_cast<uint64_t*>(m.owned_data.data());
  for (size_t i = 0; i < m.owned_data.size() / 8; ++i) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    words[i] = x;
  }
  for (size_t i = 0; i < m.owned_scales.size(); ++i) m.owned_scales[i] = 1e-3f * static_cast<float>(1 + (i % 7));
  m.data = m.owned_data.data();
  m.scales = m.owned_scales.data();
  return m;
}

}  // namespace

int main(int argc, char** argv) {
  std::string shape_name = "deepseek-v2-lite", formats = "int4,int8", batches = "1,4,16";
  int layers = 0;
  double seconds = 3.0;
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string flag = argv[i], value = argv[i + 1];
    if (flag == "--shape") shape_name = value;
    else if (flag == "--layers") layers = std::stoi(value);
    else if (flag == "--formats") formats = value;
    else if (flag == "--batches") batches = value;
    else if (flag == "--seconds") seconds = std::stod(value);
    else {
      std::cerr << "usage: expert_decode_bench [--shape deepseek-v2-lite|qwen3-coder-next] [--layers N] "
                   "[--formats int4,int8] [--batches 1,4,16] [--seconds 3]\n";
      return 2;
    }
  }
  Shape shape = ShapeNamed(shape_name);
  if (layers > 0) shape.layers = layers;
  NumaThreadPool& pool = NumaThreadPool::Default();
  std::printf("machine: %d threads on %d NUMA node(s); kernels: %s\n", pool.num_threads(), pool.num_nodes(),
              std::string(quant::IsaName(quant::BestIsa())).c_str());
  const double bandwidth = krasis::bench::MeasureReadBandwidth(pool);
  std::printf("measured DRAM read bandwidth: %.1f GB/s\n", bandwidth);
  std::printf("shape %s: %d layers x %d experts (top-%d), hidden %ld, expert intermediate %ld\n\n",
              shape.name.c_str(), shape.layers, shape.experts, shape.top_k, static_cast<long>(shape.hidden),
              static_cast<long>(shape.inter));
  std::printf("%-6s %6s %12s %14s %12s %14s %8s\n", "format", "batch", "tokens/s", "MB read/token", "GB/s",
              "ceiling tok/s", "ratio");
  for (const std::string& fname : Split(formats)) {
    const auto format = fname == "int8" ? quant::QuantFormat::kInt8 : quant::QuantFormat::kInt4;
    // Build every layer's experts on their nodes.
    std::vector<quant::QuantizedExperts> model;
    const std::vector<int> placement = krasis::PlaceExperts(shape.experts, pool.threads_per_node());
    for (int l = 0; l < shape.layers; ++l) {
      std::vector<quant::QuantExpert> experts(static_cast<size_t>(shape.experts));
      pool.Run([&](const PoolWorker& w) {
        int k = 0;
        for (int e = 0; e < shape.experts; ++e) {
          if (placement[static_cast<size_t>(e)] != w.node || k++ % w.threads_in_node != w.index_in_node) continue;
          auto& x = experts[static_cast<size_t>(e)];
          const uint64_t seed = static_cast<uint64_t>(l) * 100000 + static_cast<uint64_t>(e) * 3;
          x.gate = RandomMatrix(shape.inter, shape.hidden, format, seed);
          x.up = RandomMatrix(shape.inter, shape.hidden, format, seed + 1);
          x.down = RandomMatrix(shape.hidden, shape.inter, format, seed + 2);
          x.node = w.node;
        }
      });
      model.emplace_back(std::move(experts), shape.hidden, &pool);
    }
    const size_t expert_bytes = model[0].experts()[0].bytes();
    std::mt19937 rng(7);
    for (const std::string& bs : Split(batches)) {
      const int batch = std::stoi(bs);
      std::vector<float> x(static_cast<size_t>(batch * shape.hidden)), out(x.size());
      std::normal_distribution<float> gauss;
      for (float& v : x) v = gauss(rng);
      std::vector<std::vector<int>> ids(static_cast<size_t>(batch));
      std::vector<std::vector<float>> weights(static_cast<size_t>(batch),
                                              std::vector<float>(static_cast<size_t>(shape.top_k), 0.1f));
      int64_t steps = 0;
      double bytes = 0.0;
      auto t0 = Clock::now();
      double elapsed = 0.0;
      // One decode step: every layer's experts for random top-k choices; adds
      // the bytes of the distinct experts read.
      auto step = [&](double* read) {
        for (int l = 0; l < shape.layers; ++l) {
          std::set<int> unique;
          for (auto& chosen : ids) {
            std::set<int> pick;
            while (static_cast<int>(pick.size()) < shape.top_k) pick.insert(static_cast<int>(rng() % shape.experts));
            chosen.assign(pick.begin(), pick.end());
            unique.insert(pick.begin(), pick.end());
          }
          std::fill(out.begin(), out.end(), 0.0f);
          model[static_cast<size_t>(l)].Run(x.data(), batch, ids, weights, out.data());
          *read += static_cast<double>(unique.size() * expert_bytes);
        }
      };
      while (elapsed < seconds || steps < 2) {
        step(&bytes);
        ++steps;
        elapsed = std::chrono::duration<double>(Clock::now() - t0).count();
      }
      const double tokens_per_s = steps * batch / elapsed;
      const double bytes_per_token = bytes / (steps * batch);
      const double achieved = bytes / elapsed / 1e9;
      const double ceiling = bandwidth * 1e9 / bytes_per_token;
      std::printf("%-6s %6d %12.1f %14.1f %12.1f %14.1f %7.0f%%\n", fname.c_str(), batch, tokens_per_s,
                  bytes_per_token / 1e6, achieved, ceiling, 100.0 * tokens_per_s / ceiling);
      // The same steps again, traced: where a dispatch's time goes.
      quant::EnableDispatchTrace(true);
      quant::TakeDispatchTrace();
      double traced_bytes = 0.0;
      for (int64_t i = 0; i < steps; ++i) step(&traced_bytes);
      quant::EnableDispatchTrace(false);
      const quant::DispatchTrace t = quant::TakeDispatchTrace();
      if (t.dispatches > 0 && t.worker_slots > 0) {
        const double d = double(t.dispatches), slot = double(t.worker_slots);
        const double busy = (t.gate_up_us + t.down_us) / slot;  // per worker and dispatch
        std::printf("         per dispatch %.1f us (%.2f MB); per worker: wake %.1f, gate/up %.1f, grabs %.1f, "
                    "wait %.1f, down %.1f, idle at end %.1f us; while computing %.1f GB/s\n",
                    t.total_us / d, traced_bytes / d / 1e6, t.wake_us / slot, t.gate_up_us / slot,
                    t.grabs_us / slot, t.wait_us / slot, t.down_us / slot, t.idle_end_us / slot,
                    traced_bytes / d / (busy * 1e3));
      }
    }
  }
  std::printf("\n(Routed experts only: attention, shared experts, dense layers and lm_head are not in these numbers.)\n");
  return 0;
}
