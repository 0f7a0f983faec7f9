// QuantizedExperts::Run (one dispatch: gate/up tiles first, each expert's down
// projection as soon as its gate/up rows are done) against the same kernels run
// one expert at a time on one thread, on synthetic 1-, 2- and 4-node pools with
// experts placed on every node, for 1 to 9 tokens, with and without a shared
// expert, many times over (the hand-over between workers is what is tested).
#include "common/quant/expert_set.h"

#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "common/quant/quantize.h"

namespace krasis::quant {
namespace {

std::vector<float> Gaussian(size_t n, uint32_t seed, float sd) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(0.0f, sd);
  std::vector<float> v(n);
  for (float& x : v) x = d(rng);
  return v;
}

QuantExpert MakeExpert(int64_t hidden, int64_t inter, QuantFormat f, uint32_t seed, int node) {
  QuantExpert e;
  e.gate = *QuantizeMatrix(Gaussian(inter * hidden, seed, 0.05f).data(), inter, hidden, f, 128);
  e.up = *QuantizeMatrix(Gaussian(inter * hidden, seed + 1, 0.05f).data(), inter, hidden, f, 128);
  e.down = *QuantizeMatrix(Gaussian(hidden * inter, seed + 2, 0.05f).data(), hidden, inter, f, 128);
  e.node = node;
  return e;
}

// out[t] += w * down(silu(gate x_t) * up x_t), one expert and token at a time.
void AddExpert(const QuantExpert& e, const float* x, int64_t hidden, float w, float* out) {
  QuantizedActivations a, ha;
  QuantizeActivations(x, 1, hidden, e.gate.group_size, &a);
  std::vector<float> h(static_cast<size_t>(e.gate.rows)), y(static_cast<size_t>(hidden));
  QGateUpSilu(e.gate, e.up, a, h.data(), e.gate.rows, 0, e.gate.tiles(), BestIsa());
  QuantizeActivations(h.data(), 1, e.down.cols, e.down.group_size, &ha);
  QMatMul(e.down, ha, y.data(), hidden, 0, e.down.tiles(), BestIsa());
  for (int64_t d = 0; d < hidden; ++d) out[d] += w * y[static_cast<size_t>(d)];
}

TEST(QuantizedExpertsTest, OneDispatchComputesWhatEachExpertAloneDoes) {
  const int64_t hidden = 256, inter = 384;
  const int num_experts = 12, top_k = 3;
  std::mt19937 rng(11);
  for (const char* machine : {"pack:1 [numa(memory=8GiB)] core:3 pu:1", "pack:2 [numa(memory=8GiB)] core:4 pu:1",
                              "pack:4 [numa(memory=8GiB)] core:2 pu:1"}) {
    auto topo = Topology::FromSynthetic(machine);
    ASSERT_TRUE(topo.ok()) << topo.status();
    auto pool = NumaThreadPool::Create(**topo);
    ASSERT_TRUE(pool.ok()) << pool.status();
    const std::vector<int> placement = PlaceExperts(num_experts, (*pool)->threads_per_node());
    for (QuantFormat f : {QuantFormat::kInt4, QuantFormat::kInt8}) {
      std::vector<QuantExpert> experts;
      for (int e = 0; e < num_experts; ++e) {
        experts.push_back(MakeExpert(hidden, inter, f, 100u * static_cast<uint32_t>(e) + 1, placement[e]));
      }
      const QuantExpert shared = MakeExpert(hidden, inter, f, 7777, 0);
      QuantizedExperts set(experts, hidden, pool->get());
      for (int64_t n : {1, 2, 5, 9}) {
        for (bool with_shared : {false, true}) {
          for (int round = 0; round < 20; ++round) {
            SCOPED_TRACE(::testing::Message() << machine << " " << QuantFormatName(f) << " n=" << n
                                              << " shared=" << with_shared << " round " << round);
            const std::vector<float> x = Gaussian(static_cast<size_t>(n * hidden), rng(), 1.0f);
            std::vector<std::vector<int>> ids(static_cast<size_t>(n));
            std::vector<std::vector<float>> weights(static_cast<size_t>(n));
            std::vector<float> shared_w(static_cast<size_t>(n));
            for (int64_t t = 0; t < n; ++t) {
              while (static_cast<int>(ids[t].size()) < top_k) {
                const int e = static_cast<int>(rng() % num_experts);
                if (std::find(ids[t].begin(), ids[t].end(), e) == ids[t].end()) {
                  ids[t].push_back(e);
                  weights[t].push_back(0.1f + 0.2f * static_cast<float>(ids[t].size()));
                }
              }
              shared_w[static_cast<size_t>(t)] = 0.5f + 0.1f * static_cast<float>(t);
            }
            std::vector<float> out(x.size(), 0.25f), ref(x.size(), 0.25f);
            set.Run(x.data(), n, ids, weights, out.data(), with_shared ? &shared : nullptr,
                    with_shared ? shared_w.data() : nullptr);
            for (int64_t t = 0; t < n; ++t) {
              for (size_t i = 0; i < ids[t].size(); ++i) {
                AddExpert(experts[static_cast<size_t>(ids[t][i])], &x[t * hidden], hidden, weights[t][i],
                          &ref[t * hidden]);
              }
              if (with_shared) AddExpert(shared, &x[t * hidden], hidden, shared_w[t], &ref[t * hidden]);
            }
            double num = 0, den = 0;
            for (size_t i = 0; i < out.size(); ++i) {
              ASSERT_FALSE(std::isnan(out[i])) << i;
              num += (out[i] - ref[i]) * (out[i] - ref[i]);
              den += ref[i] * ref[i];
            }
            // Only the order of the weighted sums differs.
            ASSERT_LT(std::sqrt(num / den), 1e-6);
          }
        }
      }
    }
  }
}

}  // namespace
}  // namespace krasis::quant
