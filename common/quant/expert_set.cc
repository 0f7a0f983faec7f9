// Execution of quantized routed experts (see expert_set.h).
#include "common/quant/expert_set.h"

#include <immintrin.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

namespace krasis::quant {

namespace {
std::atomic<uint64_t> g_bytes_read{0};

// How workers share tiles. Dynamic (the default): grabs of about kGrabBytes of
// weights (guided: longer at first, shorter at the end) from a shared counter,
// so a worker that starts late or is held up (a vCPU the hypervisor preempts)
// does fewer and the dispatch ends with the others. KRASIS_SCHED=static: one even slice each (for comparison).
constexpr int64_t kGrabBytes = 64 << 10;
const bool dynamic_sched = [] {
  const char* env = std::getenv("KRASIS_SCHED");
  return env == nullptr || std::string(env) != "static";
}();

// Tiles of grabs of `bytes_per_tile` bytes each.
int64_t GrabTiles(int64_t bytes_per_tile) { return std::max<int64_t>(1, kGrabBytes / std::max<int64_t>(bytes_per_tile, 1)); }

// `count` ranges of count_of(i) tiles laid end to end; this worker (part `part`
// of `parts`) computes its share -- an even slice, or grabs of `grab` tiles
// from `next` -- calling fn(i, t0, t1) for the tiles [t0, t1) of range i. A
// share may span ranges, so the work is balanced to a tile however the ranges
// are sized.
template <typename CountOf, typename Fn>
void ForMyTiles(std::atomic<int64_t>& next, int64_t grab, size_t count, int part, int parts, CountOf count_of,
                Fn fn) {
  std::vector<int64_t> start(count + 1, 0);
  for (size_t i = 0; i < count; ++i) start[i + 1] = start[i] + count_of(i);
  const int64_t total = start[count];
  auto run = [&](int64_t begin, int64_t end) {
    size_t i = static_cast<size_t>(std::upper_bound(start.begin(), start.end(), begin) - start.begin()) - 1;
    for (; i < count && start[i] < end; ++i) {
      const int64_t t0 = std::max(begin, start[i]) - start[i], t1 = std::min(end, start[i + 1]) - start[i];
      if (t0 < t1) fn(i, t0, t1);
    }
  };
  if (!dynamic_sched) {
    auto [begin, end] = SplitRange(total, part, parts);
    run(begin, end);
    return;
  }
  // Guided (see TakeGuidedGrabs): with fixed grabs the dispatch waited up to a
  // whole grab, ~8 us, for its last worker.
  TakeGuidedGrabs(next, total, grab, parts, run);
}

// y += alpha * x (the experts' outputs into the block's output: the compiler
// leaves this loop scalar at -O2).
__attribute__((target("avx512f"))) void AddScaledAvx512(float alpha, const float* x, float* y, int64_t n) {
  const __m512 a = _mm512_set1_ps(alpha);
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) _mm512_storeu_ps(y + i, _mm512_fmadd_ps(a, _mm512_loadu_ps(x + i), _mm512_loadu_ps(y + i)));
  for (; i < n; ++i) y[i] += alpha * x[i];
}
__attribute__((target("avx2,fma"))) void AddScaledAvx2(float alpha, const float* x, float* y, int64_t n) {
  const __m256 a = _mm256_set1_ps(alpha);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, _mm256_fmadd_ps(a, _mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i)));
  for (; i < n; ++i) y[i] += alpha * x[i];
}
void AddScaled(float alpha, const float* x, float* y, int64_t n, Isa isa) {
  if (HasAvx512(isa)) {
    AddScaledAvx512(alpha, x, y, n);
  } else if (isa == Isa::kAvx2) {
    AddScaledAvx2(alpha, x, y, n);
  } else {
    for (int64_t i = 0; i < n; ++i) y[i] += alpha * x[i];
  }
}
}  // namespace

uint64_t QuantizedBytesRead() { return g_bytes_read.load(std::memory_order_relaxed); }

namespace {
std::atomic<bool> g_trace_on{false};
std::mutex g_trace_mu;
DispatchTrace g_trace;
using TraceClock = std::chrono::steady_clock;
double Us(TraceClock::time_point a, TraceClock::time_point b) {
  return std::chrono::duration<double, std::micro>(b - a).count();
}
// One worker's times in one dispatch.
struct alignas(64) WorkerTimes {
  TraceClock::time_point first, last;
  double gate_up = 0, down = 0, wait = 0, grabs = 0;
};
}  // namespace

void EnableDispatchTrace(bool on) { g_trace_on.store(on); }

DispatchTrace TakeDispatchTrace() {
  std::lock_guard<std::mutex> lock(g_trace_mu);
  DispatchTrace t = g_trace;
  g_trace = {};
  return t;
}

void QuantizedExperts::Run(const float* x, int64_t n, const std::vector<std::vector<int>>& ids,
                          const std::vector<std::vector<float>>& weights, float* out, const QuantExpert* shared,
                          const float* shared_weight) const {
  struct Active {
    const QuantExpert* q = nullptr;
    std::vector<int64_t> tokens;
    std::vector<float> weight;
    const QuantizedActivations* in = nullptr;  // its tokens' quantized x
    QuantizedActivations gathered, ha;
    std::vector<float> h, y;
  };
  std::vector<int> slot(experts_.size(), -1);
  std::vector<Active> active;
  for (int64_t t = 0; t < n; ++t) {
    for (size_t i = 0; i < ids[t].size(); ++i) {
      const int e = ids[t][i];
      if (slot[static_cast<size_t>(e)] < 0) {
        slot[static_cast<size_t>(e)] = static_cast<int>(active.size());
        active.emplace_back();
        active.back().q = &experts_[static_cast<size_t>(e)];
      }
      Active& a = active[static_cast<size_t>(slot[static_cast<size_t>(e)])];
      a.tokens.push_back(t);
      a.weight.push_back(weights[t][i]);
    }
  }
  if (shared != nullptr) {
    active.emplace_back();
    Active& a = active.back();
    a.q = shared;
    for (int64_t t = 0; t < n; ++t) {
      a.tokens.push_back(t);
      a.weight.push_back(shared_weight != nullptr ? shared_weight[t] : 1.0f);
    }
  }
  if (active.empty()) return;
  const Isa isa = BestIsa();
  // The tiles of a node's active experts are shared by that node's workers
  // (ForMyTiles; one grab counter per node and dispatch).
  const int nodes = pool_->num_nodes();
  std::unique_ptr<std::atomic<int64_t>[]> next(new std::atomic<int64_t>[2 * static_cast<size_t>(nodes)]);
  for (int i = 0; i < 2 * nodes; ++i) next[i].store(0);
  const QuantExpert& first = *active[0].q;
  const int64_t grab_gate_up = GrabTiles(2 * first.gate.groups() * first.gate.group_bytes());
  const int64_t grab_down = GrabTiles(first.down.groups() * first.down.group_bytes());
  auto NodeSlice = [&](const PoolWorker& w, int pass, auto tiles_of, auto body) {
    ForMyTiles(
        next[static_cast<size_t>(pass * nodes + w.node)], pass == 0 ? grab_gate_up : grab_down, active.size(),
        w.index_in_node, w.threads_in_node,
        [&](size_t i) { return active[i].q->node == w.node ? tiles_of(*active[i].q) : int64_t{0}; },
        [&](size_t i, int64_t t0, int64_t t1) { body(active[i], *active[i].q, t0, t1); });
  };
  // Every token's x is quantized once; an expert that sees only some tokens
  // gets copies of their rows.
  QuantizedActivations all;
  QuantizeActivations(x, n, hidden_, active[0].q->gate.group_size, &all);
  uint64_t bytes = 0;
  for (Active& a : active) {
    bytes += a.q->bytes();
    if (static_cast<int64_t>(a.tokens.size()) == n && a.q->gate.group_size == all.group_size) {
      a.in = &all;
    } else if (a.q->gate.group_size == all.group_size) {
      QuantizedActivations& g = a.gathered;
      g.n = static_cast<int64_t>(a.tokens.size());
      g.cols = all.cols;
      g.group_size = all.group_size;
      const int64_t groups = all.groups();
      for (int64_t t : a.tokens) {
        g.q.insert(g.q.end(), all.q.begin() + t * all.cols, all.q.begin() + (t + 1) * all.cols);
        g.scale.insert(g.scale.end(), all.scale.begin() + t * groups, all.scale.begin() + (t + 1) * groups);
        g.sum.insert(g.sum.end(), all.sum.begin() + t * groups, all.sum.begin() + (t + 1) * groups);
      }
      a.in = &g;
    } else {
      std::vector<float> xs;
      for (int64_t t : a.tokens) xs.insert(xs.end(), x + t * hidden_, x + (t + 1) * hidden_);
      QuantizeActivations(xs.data(), static_cast<int64_t>(a.tokens.size()), hidden_, a.q->gate.group_size,
                          &a.gathered);
      a.in = &a.gathered;
    }
    a.h.resize(a.tokens.size() * static_cast<size_t>(a.q->gate.rows));
    a.y.resize(a.tokens.size() * static_cast<size_t>(hidden_));
  }
  g_bytes_read.fetch_add(bytes, std::memory_order_relaxed);
  auto gate_tiles = [](const QuantExpert& q) { return q.gate.tiles(); };
  auto down_tiles = [](const QuantExpert& q) { return q.down.tiles(); };
  auto gate_up = [&](Active& a, const QuantExpert& q, int64_t t0, int64_t t1) {
    QGateUpSilu(q.gate, q.up, *a.in, a.h.data(), q.gate.rows, t0, t1, isa);
  };
  auto quantize_h = [&](Active& a) {
    QuantizeActivations(a.h.data(), static_cast<int64_t>(a.tokens.size()), a.q->down.cols, a.q->down.group_size,
                        &a.ha);
  };
  auto down = [&](Active& a, const QuantExpert& q, int64_t t0, int64_t t1) {
    QMatMul(q.down, a.ha, a.y.data(), hidden_, t0, t1, isa);
  };
  if (dynamic_sched) {
    // One dispatch: workers take gate/up grabs until none are left, then down
    // grabs. The worker that finishes an expert's last gate/up tiles quantizes
    // its h and marks it ready; a down grab of an expert not ready yet waits for
    // that (its last gate/up tiles are being computed: every gate/up grab is
    // handed out before any down grab). So the down projections of the first
    // experts overlap the last gate/up tiles, and one dispatch barrier and the
    // serial quantization of h between two dispatches are gone.
    std::unique_ptr<std::atomic<int64_t>[]> done(new std::atomic<int64_t>[active.size()]);
    std::unique_ptr<std::atomic<bool>[]> ready(new std::atomic<bool>[active.size()]);
    for (size_t i = 0; i < active.size(); ++i) {
      done[i].store(0);
      ready[i].store(false);
    }
    const bool trace = g_trace_on.load(std::memory_order_relaxed);
    std::vector<WorkerTimes> times(trace ? static_cast<size_t>(pool_->num_threads()) : 0);
    const auto begin = trace ? TraceClock::now() : TraceClock::time_point{};
    // Adds the time since *mark to *field and moves the mark (tracing only).
    auto lap = [&](const PoolWorker& w, double WorkerTimes::*field, TraceClock::time_point* mark) {
      if (!trace) return;
      const auto now = TraceClock::now();
      times[static_cast<size_t>(w.global_index)].*field += Us(*mark, now);
      *mark = now;
    };
    pool_->Run([&](const PoolWorker& w) {
      TraceClock::time_point mark = trace ? TraceClock::now() : TraceClock::time_point{};
      if (trace) times[static_cast<size_t>(w.global_index)].first = mark;
      NodeSlice(w, 0, gate_tiles, [&](Active& a, const QuantExpert& q, int64_t t0, int64_t t1) {
        gate_up(a, q, t0, t1);
        const size_t i = static_cast<size_t>(&a - active.data());
        if (done[i].fetch_add(t1 - t0, std::memory_order_acq_rel) + (t1 - t0) == q.gate.tiles()) {
          quantize_h(a);
          ready[i].store(true, std::memory_order_release);
        }
        lap(w, &WorkerTimes::gate_up, &mark);
      });
      NodeSlice(w, 1, down_tiles, [&](Active& a, const QuantExpert& q, int64_t t0, int64_t t1) {
        const size_t i = static_cast<size_t>(&a - active.data());
        lap(w, &WorkerTimes::grabs, &mark);
        while (!ready[i].load(std::memory_order_acquire)) _mm_pause();
        lap(w, &WorkerTimes::wait, &mark);
        down(a, q, t0, t1);
        lap(w, &WorkerTimes::down, &mark);
      });
      if (trace) times[static_cast<size_t>(w.global_index)].last = TraceClock::now();
    });
    if (trace) {
      const auto end = TraceClock::now();
      std::lock_guard<std::mutex> lock(g_trace_mu);
      ++g_trace.dispatches;
      g_trace.total_us += Us(begin, end);
      for (const WorkerTimes& t : times) {
        ++g_trace.worker_slots;
        g_trace.wake_us += Us(begin, t.first);
        g_trace.gate_up_us += t.gate_up;
        g_trace.down_us += t.down;
        g_trace.wait_us += t.wait;
        g_trace.grabs_us += t.grabs;
        g_trace.idle_end_us += Us(t.last, end);
      }
    }
  } else {
    // Even static slices: a worker's down slice may need gate/up tiles of a
    // worker that runs after it (nested dispatches run the workers one by
    // one), so the two halves stay two dispatches.
    pool_->Run([&](const PoolWorker& w) { NodeSlice(w, 0, gate_tiles, gate_up); });
    for (Active& a : active) quantize_h(a);
    pool_->Run([&](const PoolWorker& w) { NodeSlice(w, 1, down_tiles, down); });
  }
  for (const Active& a : active) {
    for (size_t i = 0; i < a.tokens.size(); ++i) {
      AddScaled(a.weight[i], a.y.data() + i * static_cast<size_t>(hidden_), out + a.tokens[i] * hidden_, hidden_,
                isa);
    }
  }
}

void PoolMatMulMany(std::span<const QuantizedMatrix* const> ws, const float* x, int64_t n,
                    std::span<float* const> ys, NumaThreadPool& pool) {
  for (const QuantizedMatrix* w : ws) g_bytes_read.fetch_add(w->bytes(), std::memory_order_relaxed);
  QuantizedActivations a;
  QuantizeActivations(x, n, ws[0]->cols, ws[0]->group_size, &a);
  const Isa isa = BestIsa();
  std::atomic<int64_t> next{0};
  const int64_t grab = GrabTiles(ws[0]->groups() * ws[0]->group_bytes());
  pool.Run([&](const PoolWorker& worker) {
    ForMyTiles(
        next, grab, ws.size(), worker.global_index, pool.num_threads(), [&](size_t i) { return ws[i]->tiles(); },
        [&](size_t i, int64_t t0, int64_t t1) { QMatMul(*ws[i], a, ys[i], ws[i]->rows, t0, t1, isa); });
  });
}

void PoolMatMul(const QuantizedMatrix& w, const float* x, int64_t n, float* y, NumaThreadPool& pool) {
  const QuantizedMatrix* ws[] = {&w};
  float* ys[] = {y};
  PoolMatMulMany(ws, x, n, ys, pool);
}

}  // namespace krasis::quant
