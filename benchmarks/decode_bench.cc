// decode_bench: end-to-end decode speed of a model directory on the CPU with
// quantized weights, as the decode worker runs it (DecoderModel::Forward over a
// batch of sequences, one new token each per step). Prints per batch size:
// tokens/s, quantized bytes read per token (routed experts actually chosen,
// attention, lm_head, shared and dense weights, and the BF16 weights that stay
// as stored -- routers, MLA's kv_b_proj, shared-expert gates -- read by CpuOps),
// the bandwidth that is, and the ratio to the ceiling (measured DRAM read
// bandwidth / bytes per token). The KV cache read by attention is not counted
// (the prompts are short).
//
// Between steps (untimed) the pool reads --evict-mb of other memory, so every
// step starts with none of the weights in the last-level cache. Without it the
// benchmark checkpoints flatter the ratio: the weights every step reads again
// (attention, lm_head, routers, shared experts: ~330 MB for Qwen3-Coder-Next
// with 8 layers) are about the size of the GPU host's 320 MB L3, which kept a
// varying part of them between steps (parts measured above 100% of DRAM
// bandwidth, and identical runs spanned 60-79%). The real models read several
// times more per step than an L3 holds. --evict-mb 0 turns it off.
//
// The host is shared and its bandwidth moves between runs, so each batch size
// is timed --repeats times, each repeat held to a bandwidth measured just
// before it; the row gives the median repeat and the range of the ratios. A
// last, separate pass with the per-part profile on gives the breakdown (its
// clock reads are kept out of the timed repeats).
//
//   decode_bench --model DIR [--format int4|int8] [--batches 1,4,16] [--steps 16]
//                [--cache-dir DIR] [--evict-mb 1024] [--repeats 3]
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

#include "benchmarks/bandwidth.h"
#include "common/kernels/cpu_ops.h"
#include "common/models/model.h"
#include "common/models/quantize_experts.h"
#include "common/quant/expert_set.h"

namespace {

using Clock = std::chrono::steady_clock;

}  // namespace

int main(int argc, char** argv) {
  std::string model_dir, format_name = "int4", batches = "1,4,16", cache_dir;
  int steps = 16, repeats = 3;
  int64_t evict_mb = 1024;
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string f = argv[i], v = argv[i + 1];
    if (f == "--model") model_dir = v;
    else if (f == "--format") format_name = v;
    else if (f == "--batches") batches = v;
    else if (f == "--steps") steps = std::stoi(v);
    else if (f == "--cache-dir") cache_dir = v;
    else if (f == "--evict-mb") evict_mb = std::stoll(v);
    else if (f == "--repeats") repeats = std::max(1, std::stoi(v));
    else {
      std::cerr << "usage: decode_bench --model DIR [--format int4|int8] [--batches 1,4,16] [--steps 16] "
                   "[--cache-dir DIR] [--evict-mb 1024] [--repeats 3]\n";
      return 2;
    }
  }
  auto format = krasis::ParseExpertFormat(format_name);
  if (model_dir.empty() || !format || *format == krasis::ExpertFormat::kBf16) {
    std::cerr << "decode_bench: --model DIR and --format int4|int8 are needed\n";
    return 2;
  }
  auto model = krasis::LoadModel(model_dir);
  if (!model.ok()) {
    std::cerr << model.status() << "\n";
    return 1;
  }
  auto t0 = Clock::now();
  if (auto s = krasis::QuantizeExperts(**model, model_dir, *format, 128, cache_dir); !s.ok()) {
    std::cerr << s << "\n";
    return 1;
  }
  krasis::WeightFormats weights;
  weights.attention = weights.lm_head = weights.dense_mlp = weights.shared_experts = *format;
  if (auto s = krasis::SetWeightFormats(**model, weights); !s.ok()) {
    std::cerr << s << "\n";
    return 1;
  }
  krasis::NumaThreadPool& pool = krasis::NumaThreadPool::Default();
  std::printf("model %s, everything quantizable in %s (ready in %.1f s), %d threads\n", model_dir.c_str(),
              format_name.c_str(), std::chrono::duration<double>(Clock::now() - t0).count(), pool.num_threads());
  // The machine's read bandwidth varies from run to run (a shared host), so it
  // is measured just before each batch size and that row is held to it.
  {
    // What one pool dispatch costs with nothing to do (the floor of every
    // parallel step).
    constexpr int kRuns = 2000;
    auto d0 = Clock::now();
    for (int i = 0; i < kRuns; ++i) pool.Run([](const krasis::PoolWorker&) {});
    std::printf("empty pool dispatch: %.1f us\n", std::chrono::duration<double, std::micro>(Clock::now() - d0).count() / kRuns);
    // What one clock read costs (the profile makes ~20 per layer; a virtual
    // machine without a fast clock source makes each a system call).
    auto c0 = Clock::now();
    volatile int64_t sink = 0;  // keeps the reads
    for (int i = 0; i < kRuns; ++i) sink = Clock::now().time_since_epoch().count();
    (void)sink;
    std::printf("clock read: %.0f ns\n\n", std::chrono::duration<double, std::nano>(Clock::now() - c0).count() / kRuns);
  }
  // Memory read between steps to push the weights out of the caches, in one
  // slice per worker, first touched by it.
  krasis::bench::CacheEvictor evictor(pool, static_cast<size_t>(std::max<int64_t>(0, evict_mb)) << 20);
  std::printf("timed: the steps only; between steps %lld MB of other memory is read (untimed) to evict the weights "
              "from the caches\n\n",
              static_cast<long long>(evictor.bytes() >> 20));
  std::printf("%6s %12s %16s %10s %12s %14s %8s   %s\n", "batch", "tokens/s", "MB read/token", "GB/s", "DRAM GB/s",
              "ceiling tok/s", "ratio", "repeats");
  const int64_t vocab = (*model)->config().vocab_size;
  struct Profile {
    int batch;
    krasis::ForwardProfile p;
    double steps;
    double bandwidth;  // measured before the median repeat
    double seconds;    // the profiled pass's steps, in all
    double argmax;     // of which the bench's own greedy choice of the next tokens
  };
  std::vector<Profile> profiles;
  std::stringstream list(batches);
  std::string item;
  while (std::getline(list, item, ',')) {
    const int batch = std::stoi(item);
    auto cache = (*model)->MakeCache(batch * 64, 16, krasis::DType::kBF16);  // what the decode worker stores
    std::vector<krasis::SequenceState> seqs(static_cast<size_t>(batch));
    std::vector<krasis::BatchItem> items(static_cast<size_t>(batch));
    for (int b = 0; b < batch; ++b) {
      (*model)->InitSequence(seqs[static_cast<size_t>(b)]);
      items[static_cast<size_t>(b)] = {&seqs[static_cast<size_t>(b)], {1 + b % 7, 17 + b, 33, 5 + b}, false};
    }
    std::vector<std::vector<float>> logits;
    if (auto s = (*model)->Forward(items, *cache, &logits); !s.ok()) {  // the prompts
      std::cerr << s << "\n";
      return 1;
    }
    // A step: the forward pass, then the greedy choice of each sequence's next
    // token from the logits it just made (as the decode worker samples them).
    auto choose_next = [&] {
      for (int b = 0; b < batch; ++b) {
        const auto& l = logits[static_cast<size_t>(b)];
        items[static_cast<size_t>(b)].tokens = {static_cast<int32_t>(krasis::cpu::ArgMax(l.data(), vocab))};
      }
    };
    choose_next();
    // `steps` steps; adds their time and the argmax's part of it.
    auto run_steps = [&](double* seconds, double* argmax_seconds) {
      for (int step = 0; step < steps; ++step) {
        evictor.Evict();
        const auto start = Clock::now();
        if (auto s = (*model)->Forward(items, *cache, &logits); !s.ok()) {
          std::cerr << s << "\n";
          std::exit(1);
        }
        const auto forward_done = Clock::now();
        choose_next();
        const auto end = Clock::now();
        *argmax_seconds += std::chrono::duration<double>(end - forward_done).count();
        *seconds += std::chrono::duration<double>(end - start).count();
      }
    };
    struct Repeat {
      double rate, per_token, bandwidth, ratio;
    };
    std::vector<Repeat> runs;
    for (int r = 0; r < repeats; ++r) {
      const double bandwidth = krasis::bench::MeasureReadBandwidth(pool);
      const uint64_t bytes0 = krasis::quant::QuantizedBytesRead() + krasis::DenseBytesRead();
      double seconds = 0.0, unused = 0.0;
      run_steps(&seconds, &unused);
      const double tokens = double(steps) * batch;
      const double per_token =
          double(krasis::quant::QuantizedBytesRead() + krasis::DenseBytesRead() - bytes0) / tokens;
      const double rate = tokens / seconds;
      runs.push_back({rate, per_token, bandwidth, rate / (bandwidth * 1e9 / per_token)});
    }
    std::sort(runs.begin(), runs.end(), [](const Repeat& a, const Repeat& b) { return a.ratio < b.ratio; });
    const Repeat& mid = runs[runs.size() / 2];
    std::printf("%6d %12.1f %16.1f %10.1f %12.1f %14.1f %7.0f%%   %3.0f-%.0f%%\n", batch, mid.rate,
                mid.per_token / 1e6, mid.rate * mid.per_token / 1e9, mid.bandwidth, mid.bandwidth * 1e9 / mid.per_token,
                100.0 * mid.ratio, 100.0 * runs.front().ratio, 100.0 * runs.back().ratio);
    // The profiled pass.
    krasis::EnableForwardProfile(true);
    krasis::TakeForwardProfile();
    double seconds = 0.0, argmax_seconds = 0.0;
    run_steps(&seconds, &argmax_seconds);
    const krasis::ForwardProfile p = krasis::TakeForwardProfile();
    krasis::EnableForwardProfile(false);
    profiles.push_back({batch, p, double(steps), mid.bandwidth, seconds, argmax_seconds});
  }
  std::printf("\nper step, ms: %6s %10s %10s %10s %10s %10s\n", "batch", "attention", "linear", "routing",
              "experts", "lm_head");
  for (const auto& [batch, p, steps, bw, secs, argmax] : profiles) {
    // ffn_ns covers the whole block, routing included.
    std::printf("               %6d %10.3f %10.3f %10.3f %10.3f %10.3f\n", batch, p.attention_ns / steps / 1e6,
                p.linear_ns / steps / 1e6, p.routing_ns / steps / 1e6, (p.ffn_ns - p.routing_ns) / steps / 1e6,
                p.lm_head_ns / steps / 1e6);
  }
  // Where the time goes, finer: each part's ms per step, the weight bytes it
  // read per step, and the GB/s that is (against the row's measured bandwidth).
  for (const auto& [batch, p, steps, bw, secs, argmax] : profiles) {
    const double proj_ns = double(p.proj_ns - p.lm_head_proj_ns);
    struct Part {
      const char* name;
      double ns, bytes;
    } parts[] = {
        {"mixer projections", proj_ns, double(p.proj_bytes - p.lm_head_bytes)},
        {"GDN recurrence", double(p.recurrence_ns), 0},
        {"MLA absorbed W", double(p.absorbed_ns), double(p.absorbed_bytes)},
        {"attention core", double(p.attention_core_ns), 0},
        {"mixer rest", double(p.attention_ns + p.linear_ns - p.recurrence_ns - p.absorbed_ns - p.attention_core_ns) -
                           proj_ns, 0},
        {"router matmul", double(p.router_ns), double(p.router_bytes)},
        {"top-k", double(p.routing_ns - p.router_ns), 0},
        {"experts dispatch", double(p.experts_ns), double(p.experts_bytes)},
        {"dense MLP", double(p.dense_ns), double(p.dense_bytes)},
        {"ffn rest", double(p.ffn_ns - p.routing_ns - p.experts_ns - p.dense_ns), 0},
        {"lm_head", double(p.lm_head_proj_ns), double(p.lm_head_bytes)},
        {"setup, embedding", double(p.setup_ns), 0},
        {"final norm, logits", double(p.lm_head_ns - p.lm_head_proj_ns), 0},
        {"bench's argmax", argmax * 1e9, 0},
        // The step's time that none of the above covers (calls, returns).
        {"unaccounted", secs * 1e9 - argmax * 1e9 -
                            double(p.setup_ns + p.attention_ns + p.linear_ns + p.ffn_ns + p.lm_head_ns), 0},
    };
    std::printf("\nbatch %d, per step: %-18s %9s %9s %9s %9s\n", batch, "part", "ms", "MB", "GB/s", "of DRAM");
    for (const Part& part : parts) {
      const double ms = part.ns / steps / 1e6, mb = part.bytes / steps / 1e6;
      if (mb > 0) {
        std::printf("                     %-18s %9.3f %9.1f %9.1f %8.0f%%\n", part.name, ms, mb, mb / ms,
                    100.0 * (mb / ms) / bw);
      } else {
        std::printf("                     %-18s %9.3f %9s %9s %9s\n", part.name, ms, "-", "-", "-");
      }
    }
  }
  return 0;
}
