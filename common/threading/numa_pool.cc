// NUMA-grouped thread pool and expert placement (see numa_pool.h).
#include "common/threading/numa_pool.h"

#include <immintrin.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>

#include "common/logging.h"
#include "common/status.h"

namespace krasis {

namespace {
// True while this thread runs a pool task (of any pool).
thread_local bool in_task = false;
}  // namespace

absl::StatusOr<std::unique_ptr<NumaThreadPool>> NumaThreadPool::Create(const Topology& topology,
                                                                       const PoolOptions& options) {
  std::unique_ptr<NumaThreadPool> pool(new NumaThreadPool());
  pool->topology_ = &topology;
  const int cores = topology.num_cores();
  if (cores < 1) return FailedPreconditionError("the topology has no cores");
  const int total = options.max_threads > 0 ? std::min(options.max_threads, cores) : cores;
  // Threads per node in proportion to cores (largest remainders), at least one
  // on every node that has cores when there are enough threads.
  const auto& nodes = topology.nodes();
  std::vector<int> share(nodes.size(), 0);
  int given = 0;
  for (size_t n = 0; n < nodes.size(); ++n) {
    share[n] = static_cast<int>(static_cast<int64_t>(total) * static_cast<int64_t>(nodes[n].cores.size()) / cores);
    given += share[n];
  }
  for (size_t n = 0; given < total; n = (n + 1) % nodes.size()) {
    if (share[n] < static_cast<int>(nodes[n].cores.size())) {
      ++share[n];
      ++given;
    }
  }
  for (size_t n = 0; n < nodes.size(); ++n) {
    if (share[n] == 0) continue;
    pool->threads_per_node_.push_back(share[n]);
    const int node = static_cast<int>(pool->threads_per_node_.size()) - 1;
    for (int i = 0; i < share[n]; ++i) {
      PoolWorker w;
      w.node = node;
      w.index_in_node = i;
      w.threads_in_node = share[n];
      w.global_index = static_cast<int>(pool->workers_.size());
      pool->workers_.push_back(w);
      pool->worker_core_.push_back(options.pin && !topology.is_synthetic() ? nodes[n].cores[i].logical_index : -1);
    }
  }
  if (const char* env = std::getenv("KRASIS_POOL_SPIN_US")) pool->spin_us_ = std::max(0L, std::atol(env));
  pool->done_.reset(new Done[static_cast<size_t>(pool->num_threads())]);
  // Worker 0 is the calling thread of Run(); the others get threads.
  for (int i = 1; i < pool->num_threads(); ++i) {
    pool->threads_.emplace_back([p = pool.get(), i] { p->WorkerLoop(i); });
  }
  return pool;
}

NumaThreadPool::~NumaThreadPool() {
  stop_.store(true);
  {
    std::lock_guard<std::mutex> lock(mu_);
    generation_.fetch_add(1);
  }
  wake_.notify_all();
  for (auto& t : threads_) t.join();
}

// A dispatch's cost is mostly how soon the workers see it and how soon the
// caller sees them finish (the GPU host measured 4-8 us for an empty dispatch
// of 16 workers with one shared counter, a clock read every spin and a
// sched_yield every 64). So: workers spin on the generation with pause alone,
// reading the clock and yielding only every kSpinCheck turns; the wake takes
// the mutex only when some worker sleeps; each worker reports completion in its
// own cache line.
namespace {
constexpr int kSpinCheck = 1024;
}  // namespace

void NumaThreadPool::WorkerLoop(int index) {
  if (worker_core_[static_cast<size_t>(index)] >= 0) {
    absl::Status s = topology_->BindCurrentThreadToCore(worker_core_[static_cast<size_t>(index)]);
    if (!s.ok()) KLOG_WARN("pool worker {}: {}", index, s.ToString());
  }
  uint64_t seen = 0;
  for (;;) {
    // Spin a while for the next dispatch, then sleep.
    const auto spin_until = std::chrono::steady_clock::now() + std::chrono::microseconds(spin_us_);
    for (int i = 1; generation_.load(std::memory_order_acquire) == seen; ++i) {
      if (i % kSpinCheck != 0) {
        _mm_pause();
        continue;
      }
      if (std::chrono::steady_clock::now() >= spin_until) break;
      std::this_thread::yield();  // an oversubscribed machine still progresses
    }
    if (generation_.load(std::memory_order_acquire) == seen) {
      std::unique_lock<std::mutex> lock(mu_);
      sleepers_.fetch_add(1);  // seq_cst: ordered against Run's generation bump
      wake_.wait(lock, [&] { return generation_.load() != seen; });
      sleepers_.fetch_sub(1);
    }
    seen = generation_.load(std::memory_order_acquire);
    if (stop_.load()) return;
    in_task = true;
    (*task_)(workers_[static_cast<size_t>(index)]);
    in_task = false;
    done_[static_cast<size_t>(index)].generation.store(seen, std::memory_order_release);
  }
}

void NumaThreadPool::Run(const std::function<void(const PoolWorker&)>& fn) {
  if (in_task) {
    // Called from inside a task: every worker is busy, so this thread does all
    // the shares itself.
    for (const PoolWorker& w : workers_) fn(w);
    return;
  }
  std::lock_guard<std::mutex> turn(run_mu_);
  // The calling thread is worker 0: pin it to worker 0's core once, so it does
  // not land on (and fight with) another worker's core.
  thread_local const NumaThreadPool* bound_to = nullptr;
  if (bound_to != this && worker_core_[0] >= 0) {
    absl::Status s = topology_->BindCurrentThreadToCore(worker_core_[0]);
    if (!s.ok()) KLOG_WARN("pool caller: {}", s.ToString());
    bound_to = this;
  }
  task_ = &fn;
  // seq_cst, as is the sleepers_ read: a worker about to sleep either sees the
  // new generation or is counted here (and then woken under the mutex).
  const uint64_t generation = generation_.fetch_add(1) + 1;
  if (sleepers_.load() > 0) {
    { std::lock_guard<std::mutex> lock(mu_); }
    wake_.notify_all();
  }
  in_task = true;
  fn(workers_[0]);
  in_task = false;
  for (int w = 1; w < num_threads(); ++w) {
    for (int i = 1; done_[static_cast<size_t>(w)].generation.load(std::memory_order_acquire) != generation; ++i) {
      if (i % kSpinCheck == 0) std::this_thread::yield();
      else _mm_pause();
    }
  }
  task_ = nullptr;
}

NumaThreadPool& NumaThreadPool::Default() {
  // Both live until the process ends and are never destroyed: workers may
  // still be starting (binding themselves through the topology) when main
  // returns, and a topology destroyed under them crashed `krasis-cli` at exit.
  static NumaThreadPool* pool = [] {
    auto t = Topology::Detect();
    if (!t.ok()) {
      KLOG_WARN("topology detection failed ({}); using one NUMA node", t.status().ToString());
      t = Topology::FromSynthetic("pack:1 core:1 pu:1");
    }
    Topology* topology = t->release();
    PoolOptions options;
    if (const char* env = std::getenv("KRASIS_THREADS")) options.max_threads = std::atoi(env);
    auto p = Create(*topology, options);
    return p.ok() ? p->release() : nullptr;
  }();
  return *pool;
}

std::vector<int> PlaceExperts(int num_experts, const std::vector<int>& threads_per_node) {
  std::vector<int> placement(static_cast<size_t>(num_experts), 0);
  std::vector<int> count(threads_per_node.size(), 0);
  for (int e = 0; e < num_experts; ++e) {
    size_t best = 0;
    for (size_t n = 1; n < threads_per_node.size(); ++n) {
      // Fewest experts per thread after adding this one.
      if (static_cast<int64_t>(count[n] + 1) * threads_per_node[best] <
          static_cast<int64_t>(count[best] + 1) * threads_per_node[n]) {
        best = n;
      }
    }
    placement[static_cast<size_t>(e)] = static_cast<int>(best);
    ++count[best];
  }
  return placement;
}

}  // namespace krasis
