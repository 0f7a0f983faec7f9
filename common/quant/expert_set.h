// Routed experts quantized for the CPU (quant_format.h), each on one NUMA node,
// and their execution for a decode step: out[t] += sum_i w[t][i] * E_ids[t][i](x_t)
// with E(x) = down(silu(gate x) * up x). One pool dispatch per call: the fused
// gate/up + SiLU tiles of every active expert are handed out first, then the
// down projections, each expert's as soon as its gate/up rows are done; an
// expert's rows are split among the threads of its node only.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "common/quant/qgemm.h"
#include "common/threading/numa_pool.h"

namespace krasis::quant {

struct QuantExpert {
  QuantizedMatrix gate, up;  // [inter, hidden]
  QuantizedMatrix down;      // [hidden, inter]
  int node = 0;              // the NUMA node (pool node index) holding and computing it
  size_t bytes() const { return gate.bytes() + up.bytes() + down.bytes(); }
};

class QuantizedExperts {
 public:
  QuantizedExperts() = default;
  QuantizedExperts(std::vector<QuantExpert> experts, int64_t hidden, NumaThreadPool* pool)
      : experts_(std::move(experts)), hidden_(hidden), pool_(pool) {}

  bool empty() const { return experts_.empty(); }
  NumaThreadPool* pool() const { return pool_; }
  const std::vector<QuantExpert>& experts() const { return experts_; }

  // x: [n, hidden]; ids/weights: per token, the chosen experts and their weights.
  // Adds into out: [n, hidden]. `shared`, when given, is one more expert every
  // token uses (a shared expert, on node 0's threads), with weight
  // shared_weight[t] (null: 1), computed in the same dispatch.
  void Run(const float* x, int64_t n, const std::vector<std::vector<int>>& ids,
           const std::vector<std::vector<float>>& weights, float* out, const QuantExpert* shared = nullptr,
           const float* shared_weight = nullptr) const;

 private:
  std::vector<QuantExpert> experts_;
  int64_t hidden_ = 0;
  NumaThreadPool* pool_ = nullptr;
};

// Bytes of quantized weights read by Run and PoolMatMul since the process
// started (each matrix counted once per call): for benchmarks.
uint64_t QuantizedBytesRead();

// Where the workers' time in QuantizedExperts::Run's dispatches goes, summed
// over dispatches and workers (for benchmarks; off by default, and then free):
// from the dispatch's start to a worker's first grab, computing gate/up tiles,
// computing down tiles, waiting for an expert's h, between gate/up and down
// tiles (taking grabs), and from a worker's last tile to the dispatch's end.
struct DispatchTrace {
  uint64_t dispatches = 0, worker_slots = 0;  // worker_slots: dispatches x workers
  double wake_us = 0, gate_up_us = 0, down_us = 0, wait_us = 0, grabs_us = 0, idle_end_us = 0, total_us = 0;
};
void EnableDispatchTrace(bool on);
DispatchTrace TakeDispatchTrace();

// y[n, rows] = x[n, cols] W^T with W's row tiles split over every worker of the
// pool (for weights that are not placed per node: lm_head, dense layers).
void PoolMatMul(const QuantizedMatrix& w, const float* x, int64_t n, float* y, NumaThreadPool& pool);

// ys[i][n, ws[i]->rows] = x W_i^T for several matrices of the same columns and
// group size (q, k and v): x is quantized once and one dispatch computes them
// all, their tiles laid end to end and split evenly over the pool.
void PoolMatMulMany(std::span<const QuantizedMatrix* const> ws, const float* x, int64_t n,
                    std::span<float* const> ys, NumaThreadPool& pool);

}  // namespace krasis::quant
