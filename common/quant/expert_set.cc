// Execution of quantized routed experts (see expert_set.h).
#include "common/quant/expert_set.h"

#include <algorithm>
#include <atomic>

namespace krasis::quant {

namespace {
std::atomic<uint64_t> g_bytes_read{0};
}  // namespace

uint64_t QuantizedBytesRead() { return g_bytes_read.load(std::memory_order_relaxed); }

void QuantizedExperts::Run(const float* x, int64_t n, const std::vector<std::vector<int>>& ids,
                          const std::vector<std::vector<float>>& weights, float* out) const {
  struct Active {
    int expert = 0;
    std::vector<int64_t> tokens;
    std::vector<float> weight;
    QuantizedActivations a, ha;
    std::vector<float> h, y;
  };
  std::vector<int> slot(experts_.size(), -1);
  std::vector<Active> active;
  for (int64_t t = 0; t < n; ++t) {
    for (size_t i = 0; i < ids[t].size(); ++i) {
      const int e = ids[t][i];
      if (slot[static_cast<size_t>(e)] < 0) {
        slot[static_cast<size_t>(e)] = static_cast<int>(active.size());
        active.push_back(Active{e, {}, {}, {}, {}, {}, {}});
      }
      Active& a = active[static_cast<size_t>(slot[static_cast<size_t>(e)])];
      a.tokens.push_back(t);
      a.weight.push_back(weights[t][i]);
    }
  }
  const Isa isa = BestIsa();
  // The tiles of the node's active experts, laid end to end, cut into one even
  // slice per thread of the node (a slice may span experts): balanced to a tile
  // however many experts are active.
  auto ForMySlice = [&](std::vector<Active>& list, const PoolWorker& w, auto tiles_of, auto body) {
    int64_t total = 0;
    for (const Active& a : list) {
      const QuantExpert& q = experts_[static_cast<size_t>(a.expert)];
      if (q.node == w.node) total += tiles_of(q);
    }
    auto [begin, end] = SplitRange(total, w.index_in_node, w.threads_in_node);
    int64_t offset = 0;
    for (Active& a : list) {
      const QuantExpert& q = experts_[static_cast<size_t>(a.expert)];
      if (q.node != w.node) continue;
      const int64_t n = tiles_of(q);
      const int64_t t0 = std::max(begin, offset) - offset, t1 = std::min(end, offset + n) - offset;
      if (t0 < t1) body(a, q, t0, t1);
      offset += n;
    }
  };
  std::vector<float> xs;
  for (Active& a : active) {
    const QuantExpert& q = experts_[static_cast<size_t>(a.expert)];
    xs.resize(a.tokens.size() * static_cast<size_t>(hidden_));
    for (size_t i = 0; i < a.tokens.size(); ++i) {
      std::copy(x + a.tokens[i] * hidden_, x + (a.tokens[i] + 1) * hidden_, xs.begin() + i * hidden_);
    }
    QuantizeActivations(xs.data(), static_cast<int64_t>(a.tokens.size()), hidden_, q.gate.group_size, &a.a);
    a.h.resize(a.tokens.size() * static_cast<size_t>(q.gate.rows));
    a.y.resize(a.tokens.size() * static_cast<size_t>(hidden_));
  }
  uint64_t bytes = 0;
  for (const Active& a : active) bytes += experts_[static_cast<size_t>(a.expert)].bytes();
  g_bytes_read.fetch_add(bytes, std::memory_order_relaxed);
  pool_->Run([&](const PoolWorker& w) {
    ForMySlice(active, w, [](const QuantExpert& q) { return q.gate.tiles(); },
               [&](Active& a, const QuantExpert& q, int64_t t0, int64_t t1) {
                 QGateUpSilu(q.gate, q.up, a.a, a.h.data(), q.gate.rows, t0, t1, isa);
               });
  });
  for (Active& a : active) {
    const QuantExpert& q = experts_[static_cast<size_t>(a.expert)];
    QuantizeActivations(a.h.data(), static_cast<int64_t>(a.tokens.size()), q.down.cols, q.down.group_size,
                               &a.ha);
  }
  pool_->Run([&](const PoolWorker& w) {
    ForMySlice(active, w, [](const QuantExpert& q) { return q.down.tiles(); },
               [&](Active& a, const QuantExpert& q, int64_t t0, int64_t t1) {
                 QMatMul(q.down, a.ha, a.y.data(), hidden_, t0, t1, isa);
               });
  });
  for (const Active& a : active) {
    for (size_t i = 0; i < a.tokens.size(); ++i) {
      float* ot = out + a.tokens[i] * hidden_;
      const float* yt = a.y.data() + i * static_cast<size_t>(hidden_);
      for (int64_t d = 0; d < hidden_; ++d) ot[d] += a.weight[i] * yt[d];
    }
  }
}

void PoolMatMulMany(std::span<const QuantizedMatrix* const> ws, const float* x, int64_t n,
                    std::span<float* const> ys, NumaThreadPool& pool) {
  int64_t total = 0;
  for (const QuantizedMatrix* w : ws) {
    g_bytes_read.fetch_add(w->bytes(), std::memory_order_relaxed);
    total += w->tiles();
  }
  QuantizedActivations a;
  QuantizeActivations(x, n, ws[0]->cols, ws[0]->group_size, &a);
  const Isa isa = BestIsa();
  pool.Run([&](const PoolWorker& worker) {
    auto [begin, end] = SplitRange(total, worker.global_index, pool.num_threads());
    int64_t offset = 0;
    for (size_t i = 0; i < ws.size(); ++i) {
      const int64_t tiles = ws[i]->tiles();
      const int64_t t0 = std::max(begin, offset) - offset, t1 = std::min(end, offset + tiles) - offset;
      if (t0 < t1) QMatMul(*ws[i], a, ys[i], ws[i]->rows, t0, t1, isa);
      offset += tiles;
    }
  });
}

void PoolMatMul(const QuantizedMatrix& w, const float* x, int64_t n, float* y, NumaThreadPool& pool) {
  const QuantizedMatrix* ws[] = {&w};
  float* ys[] = {y};
  PoolMatMulMany(ws, x, n, ys, pool);
}

}  // namespace krasis::quant
