// The decode worker's thread pool, built from the machine topology: one worker
// per physical core (pinned to it on a real machine), grouped by NUMA node, and
// the placement of experts on nodes. Each expert lives on exactly one node, in
// memory first touched by that node's threads, and is computed by that node's
// workers only; nothing is copied to every node.
//
// Run(fn) runs fn once on every worker and returns when all are done; the
// calling thread serves as worker 0 of node 0 (and is pinned to its core on
// its first Run). Idle workers spin on the next dispatch for a while (decode
// steps come back to back; waking a sleeping thread costs tens of microseconds),
// then sleep. KRASIS_POOL_SPIN_US sets the spin (default 2000 us).
//
// Run is safe to call from several threads (callers take turns) and from inside
// a task (the nested call runs every worker's share on the calling thread).
#pragma once

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "common/topology.h"

namespace krasis {

struct PoolWorker {
  int node = 0;             // logical NUMA node
  int index_in_node = 0;    // 0 .. threads_in_node - 1
  int threads_in_node = 1;
  int global_index = 0;     // 0 .. num_threads - 1
};

struct PoolOptions {
  int max_threads = 0;  // 0: one per physical core
  bool pin = true;      // bind each worker to its core (real topologies only)
};

class NumaThreadPool {
 public:
  // Workers are spread over the nodes in proportion to their cores.
  static absl::StatusOr<std::unique_ptr<NumaThreadPool>> Create(const Topology& topology,
                                                                const PoolOptions& options = {});
  ~NumaThreadPool();
  NumaThreadPool(const NumaThreadPool&) = delete;
  NumaThreadPool& operator=(const NumaThreadPool&) = delete;

  int num_threads() const { return static_cast<int>(workers_.size()); }
  int num_nodes() const { return static_cast<int>(threads_per_node_.size()); }
  const std::vector<int>& threads_per_node() const { return threads_per_node_; }
  const std::vector<PoolWorker>& workers() const { return workers_; }

  // Runs fn on every worker; blocks until all returned.
  void Run(const std::function<void(const PoolWorker&)>& fn);

  // The process-wide pool of the machine (created on first use; KRASIS_THREADS
  // caps its size).
  static NumaThreadPool& Default();

 private:
  NumaThreadPool() = default;
  void WorkerLoop(int index);

  const Topology* topology_ = nullptr;
  std::vector<PoolWorker> workers_;
  std::vector<int> worker_core_;  // core logical index per worker (-1: unpinned)
  std::vector<int> threads_per_node_;
  std::vector<std::thread> threads_;
  const std::function<void(const PoolWorker&)>* task_ = nullptr;
  std::atomic<uint64_t> generation_{0};
  // Each worker's last finished generation, a cache line each: the caller
  // polls them instead of all workers decrementing one shared counter.
  struct alignas(64) Done {
    std::atomic<uint64_t> generation{0};
  };
  std::unique_ptr<Done[]> done_;
  std::atomic<int> sleepers_{0};  // workers in (or entering) wake_.wait
  std::atomic<bool> stop_{false};
  std::mutex mu_;
  std::condition_variable wake_;
  std::mutex run_mu_;  // one Run at a time
  int64_t spin_us_ = 2000;
};

// The node of each of `num_experts` experts: greedy, in proportion to the
// nodes' worker counts, so every node computes a share of the experts that
// matches its threads. Deterministic.
std::vector<int> PlaceExperts(int num_experts, const std::vector<int>& threads_per_node);

// Guided grabs of [0, total) from a counter shared by `parts` workers (start it
// at 0): each grab is 1/(2 parts) of what is left, between grab / 4 and 4 grab
// items, so the first grabs are long streams and the last ones short, and the
// workers finish within a short grab of each other even when one starts late
// or is held up. Calls run(begin, end) for each range this worker takes.
template <typename Run>
void TakeGuidedGrabs(std::atomic<int64_t>& next, int64_t total, int64_t grab, int parts, Run&& run) {
  const int64_t min_grab = std::max<int64_t>(1, grab / 4), max_grab = std::max<int64_t>(1, 4 * grab);
  int64_t begin = next.load(std::memory_order_relaxed);
  while (begin < total) {
    const int64_t take = std::clamp((total - begin) / (2 * parts), min_grab, max_grab);
    if (!next.compare_exchange_weak(begin, begin + take, std::memory_order_relaxed)) continue;
    run(begin, std::min(total, begin + take));
    begin = next.load(std::memory_order_relaxed);
  }
}

// [begin, end) of `count` items for part `index` of `parts` (as even as possible).
inline std::pair<int64_t, int64_t> SplitRange(int64_t count, int index, int parts) {
  const int64_t base = count / parts, extra = count % parts;
  const int64_t begin = index * base + std::min<int64_t>(index, extra);
  return {begin, begin + base + (index < extra ? 1 : 0)};
}

}  // namespace krasis
