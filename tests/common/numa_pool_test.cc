// The NUMA thread pool on synthetic 2- and 4-node machines (CI has one node):
// workers per node in proportion to cores, every worker runs each dispatch
// exactly once, thousands of back-to-back dispatches lose nothing; and the
// expert placement plan puts each expert on exactly one node, in proportion to
// the nodes' threads.
#include "common/threading/numa_pool.h"

#include <gtest/gtest.h>

#include <map>
#include <thread>

namespace krasis {
namespace {

std::unique_ptr<Topology> Synthetic(const char* description) {
  auto t = Topology::FromSynthetic(description);
  EXPECT_TRUE(t.ok()) << t.status();
  return std::move(*t);
}

TEST(NumaPoolTest, TwoNodesOneWorkerPerCore) {
  auto topo = Synthetic("pack:2 [numa(memory=64GiB)] core:8 pu:2");
  auto pool = NumaThreadPool::Create(*topo);
  ASSERT_TRUE(pool.ok()) << pool.status();
  EXPECT_EQ((*pool)->num_threads(), 16);
  EXPECT_EQ((*pool)->threads_per_node(), (std::vector<int>{8, 8}));
  std::vector<std::atomic<int>> runs(16);
  std::vector<int> node_of(16, -1);
  (*pool)->Run([&](const PoolWorker& w) {
    runs[static_cast<size_t>(w.global_index)].fetch_add(1);
    node_of[static_cast<size_t>(w.global_index)] = w.node;
    EXPECT_EQ(w.threads_in_node, 8);
    EXPECT_LT(w.index_in_node, 8);
  });
  for (int i = 0; i < 16; ++i) {
    EXPECT_EQ(runs[static_cast<size_t>(i)].load(), 1) << i;
    EXPECT_EQ(node_of[static_cast<size_t>(i)], i / 8) << i;
  }
}

TEST(NumaPoolTest, FourNodesCappedThreads) {
  auto topo = Synthetic("pack:4 [numa(memory=32GiB)] core:4 pu:1");
  PoolOptions options;
  options.max_threads = 6;
  auto pool = NumaThreadPool::Create(*topo, options);
  ASSERT_TRUE(pool.ok());
  EXPECT_EQ((*pool)->num_threads(), 6);
  EXPECT_EQ((*pool)->threads_per_node(), (std::vector<int>{2, 2, 1, 1}));
}

TEST(NumaPoolTest, BackToBackDispatchesLoseNothing) {
  auto topo = Synthetic("pack:2 [numa(memory=8GiB)] core:2 pu:1");
  auto pool = NumaThreadPool::Create(*topo);
  ASSERT_TRUE(pool.ok());
  std::atomic<int64_t> sum{0};
  for (int round = 0; round < 1000; ++round) {
    (*pool)->Run([&](const PoolWorker& w) { sum.fetch_add(w.global_index + 1); });
  }
  EXPECT_EQ(sum.load(), 1000 * (1 + 2 + 3 + 4));
}

TEST(NumaPoolTest, ConcurrentCallersTakeTurns) {
  auto topo = Synthetic("pack:1 core:4 pu:1");
  auto pool = NumaThreadPool::Create(*topo);
  ASSERT_TRUE(pool.ok()) << pool.status();
  std::atomic<int> inside{0}, max_inside{0};
  std::vector<std::atomic<int64_t>> sums(3);
  std::vector<std::thread> callers;
  for (int c = 0; c < 3; ++c) {
    callers.emplace_back([&, c] {
      for (int i = 0; i < 300; ++i) {
        (*pool)->Run([&](const PoolWorker& w) {
          if (w.global_index == 0) {
            const int now = inside.fetch_add(1) + 1;
            int seen = max_inside.load();
            while (now > seen && !max_inside.compare_exchange_weak(seen, now)) {
            }
          }
          sums[static_cast<size_t>(c)].fetch_add(w.global_index + 1);
          if (w.global_index == 0) inside.fetch_sub(1);
        });
      }
    });
  }
  for (auto& t : callers) t.join();
  EXPECT_EQ(max_inside.load(), 1);  // one dispatch at a time
  for (auto& s : sums) EXPECT_EQ(s.load(), 300 * (1 + 2 + 3 + 4));
}

TEST(NumaPoolTest, NestedRunDoesEveryShareOnTheCallingThread) {
  auto topo = Synthetic("pack:1 core:3 pu:1");
  auto pool = NumaThreadPool::Create(*topo);
  ASSERT_TRUE(pool.ok()) << pool.status();
  std::vector<std::atomic<int>> inner(3 * 3);
  (*pool)->Run([&](const PoolWorker& outer) {
    const auto me = std::this_thread::get_id();
    (*pool)->Run([&](const PoolWorker& w) {
      EXPECT_EQ(std::this_thread::get_id(), me);
      inner[static_cast<size_t>(outer.global_index * 3 + w.global_index)].fetch_add(1);
    });
  });
  for (auto& i : inner) EXPECT_EQ(i.load(), 1);
}

TEST(NumaPoolTest, SplitRangeCoversEverythingOnce) {
  for (int64_t count : {0, 1, 7, 16, 100}) {
    for (int parts : {1, 3, 8}) {
      int64_t next = 0;
      for (int i = 0; i < parts; ++i) {
        auto [b, e] = SplitRange(count, i, parts);
        EXPECT_EQ(b, next);
        EXPECT_LE(e - b, count / parts + 1);
        next = e;
      }
      EXPECT_EQ(next, count);
    }
  }
}

TEST(ExpertPlacementTest, EachExpertOnOneNodeInProportionToThreads) {
  auto count = [](const std::vector<int>& placement, int nodes) {
    std::vector<int> c(static_cast<size_t>(nodes), 0);
    for (int n : placement) {
      EXPECT_GE(n, 0);
      EXPECT_LT(n, nodes);
      ++c[static_cast<size_t>(n)];
    }
    return c;
  };
  EXPECT_EQ(count(PlaceExperts(64, {8, 8}), 2), (std::vector<int>{32, 32}));
  EXPECT_EQ(count(PlaceExperts(60, {2, 1}), 2), (std::vector<int>{40, 20}));
  EXPECT_EQ(count(PlaceExperts(256, {4, 4, 4, 4}), 4), (std::vector<int>{64, 64, 64, 64}));
  EXPECT_EQ(count(PlaceExperts(12, {2, 2, 1, 1}), 4), (std::vector<int>{4, 4, 2, 2}));
  EXPECT_EQ(count(PlaceExperts(8, {16}), 1), (std::vector<int>{8}));
  // The plan built from a synthetic 4-node pool.
  auto topo = Synthetic("pack:4 [numa(memory=32GiB)] core:4 pu:2");
  auto pool = NumaThreadPool::Create(*topo);
  ASSERT_TRUE(pool.ok());
  EXPECT_EQ(count(PlaceExperts(128, (*pool)->threads_per_node()), 4), (std::vector<int>{32, 32, 32, 32}));
}

TEST(NumaPoolTest, DefaultPoolRunsOnThisMachine) {
  NumaThreadPool& pool = NumaThreadPool::Default();
  EXPECT_GE(pool.num_threads(), 1);
  std::atomic<int> n{0};
  pool.Run([&](const PoolWorker&) { n.fetch_add(1); });
  EXPECT_EQ(n.load(), pool.num_threads());
}

}  // namespace
}  // namespace krasis
