// Tests for the hwloc topology wrapper, on this machine and on synthetic 2- and
// 4-node machines (CI has a single NUMA node).
#include "common/topology.h"

#include <gtest/gtest.h>
#include <sched.h>

#include <set>
#include <thread>

namespace krasis {
namespace {

TEST(TopologyTest, DetectsThisMachine) {
  auto topo = Topology::Detect();
  ASSERT_TRUE(topo.ok()) << topo.status();
  EXPECT_GE((*topo)->num_nodes(), 1);
  EXPECT_GE((*topo)->num_cores(), 1);
  EXPECT_GE((*topo)->num_pus(), (*topo)->num_cores());
  EXPECT_FALSE((*topo)->is_synthetic());
  EXPECT_NE((*topo)->Describe().find("node 0"), std::string::npos);
}

TEST(TopologyTest, TwoNodeSynthetic) {
  auto topo = Topology::FromSynthetic("pack:2 [numa(memory=64GiB)] core:8 pu:2");
  ASSERT_TRUE(topo.ok()) << topo.status();
  const auto& t = **topo;
  ASSERT_EQ(t.num_nodes(), 2);
  EXPECT_EQ(t.num_cores(), 16);
  EXPECT_EQ(t.num_pus(), 32);
  EXPECT_EQ(t.total_memory_bytes(), 128ull << 30);
  std::set<int> pus;
  for (int n = 0; n < 2; ++n) {
    const auto& node = t.nodes()[n];
    EXPECT_EQ(node.logical_index, n);
    EXPECT_EQ(node.memory_bytes, 64ull << 30);
    ASSERT_EQ(node.cores.size(), 8u);
    for (const auto& core : node.cores) {
      // Node n owns cores 8n..8n+7, two hardware threads each, none shared.
      EXPECT_GE(core.logical_index, 8 * n);
      EXPECT_LT(core.logical_index, 8 * n + 8);
      EXPECT_EQ(core.pus.size(), 2u);
      for (int pu : core.pus) EXPECT_TRUE(pus.insert(pu).second) << "PU " << pu << " twice";
    }
  }
  EXPECT_TRUE(t.is_synthetic());
  EXPECT_FALSE(t.BindCurrentThreadToCore(0).ok());
}

TEST(TopologyTest, FourNodeSyntheticWithNodesInsidePackages) {
  auto topo = Topology::FromSynthetic("pack:2 group:2 [numa(memory=32GiB)] core:6 pu:1");
  ASSERT_TRUE(topo.ok()) << topo.status();
  ASSERT_EQ((*topo)->num_nodes(), 4);
  EXPECT_EQ((*topo)->num_cores(), 24);
  for (const auto& node : (*topo)->nodes()) {
    EXPECT_EQ(node.cores.size(), 6u);
    EXPECT_EQ(node.memory_bytes, 32ull << 30);
  }
}

TEST(TopologyTest, BadSyntheticDescriptionIsAnError) {
  auto topo = Topology::FromSynthetic("pack:banana");
  EXPECT_EQ(topo.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(topo.status().message().find("pack:banana"), std::string::npos);
  EXPECT_FALSE(Topology::FromSynthetic("").ok());
}

TEST(TopologyTest, BindsThreadToARealCore) {
  auto topo = Topology::Detect();
  ASSERT_TRUE(topo.ok());
  const auto& core = (*topo)->nodes()[0].cores.back();
  std::thread worker([&] {
    ASSERT_TRUE((*topo)->BindCurrentThreadToCore(core.logical_index).ok());
    int cpu = sched_getcpu();
    bool on_core = false;
    for (int pu : core.pus) on_core |= (pu == cpu);
    EXPECT_TRUE(on_core) << "running on cpu " << cpu;
  });
  worker.join();
  EXPECT_EQ((*topo)->BindCurrentThreadToCore(100000).code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace krasis
