// Machine topology for placing work: NUMA nodes, their physical cores and memory.
//
// A thin wrapper over hwloc. The decode worker builds its thread pool from this
// (one pinned worker per physical core, grouped by node) and places each expert on
// exactly one node. Tests model 2- and 4-node machines with hwloc's synthetic
// topologies, e.g. "pack:2 [numa(memory=64GiB)] core:8 pu:2", since CI has one node.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace krasis {

struct CoreInfo {
  int logical_index = 0;     // hwloc's logical core index, machine-wide
  std::vector<int> pus;      // OS indices of its hardware threads (what affinity uses)
};

struct NumaNodeInfo {
  int logical_index = 0;     // 0..N-1
  int os_index = 0;          // the kernel's node number (what mbind/numactl use)
  uint64_t memory_bytes = 0; // local memory
  std::vector<CoreInfo> cores;
};

class Topology {
 public:
  // The machine this process runs on.
  static absl::StatusOr<std::unique_ptr<Topology>> Detect();
  // A synthetic machine described in hwloc's synthetic syntax.
  static absl::StatusOr<std::unique_ptr<Topology>> FromSynthetic(std::string_view description);

  ~Topology();
  Topology(const Topology&) = delete;
  Topology& operator=(const Topology&) = delete;

  const std::vector<NumaNodeInfo>& nodes() const { return nodes_; }
  int num_nodes() const { return static_cast<int>(nodes_.size()); }
  int num_cores() const;
  int num_pus() const;
  uint64_t total_memory_bytes() const;
  bool is_synthetic() const { return synthetic_; }

  // One line per node: "node 0 (os 0): 8 cores, 64.0 GiB".
  std::string Describe() const;

  // Pins the calling thread to the hardware threads of core `core_logical_index`.
  // Fails on a synthetic topology (there is nothing real to bind to).
  absl::Status BindCurrentThreadToCore(int core_logical_index) const;

 private:
  Topology() = default;
  static absl::StatusOr<std::unique_ptr<Topology>> Load(std::string_view synthetic);

  struct Impl;
  std::unique_ptr<Impl> impl_;
  std::vector<NumaNodeInfo> nodes_;
  bool synthetic_ = false;
};

}  // namespace krasis
