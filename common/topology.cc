// hwloc-backed topology (see topology.h).
#include "common/topology.h"

#include <hwloc.h>

#include "absl/strings/str_format.h"
#include "common/status.h"

namespace krasis {

struct Topology::Impl {
  hwloc_topology_t topo = nullptr;
  ~Impl() {
    if (topo != nullptr) hwloc_topology_destroy(topo);
  }
};

Topology::~Topology() = default;

absl::StatusOr<std::unique_ptr<Topology>> Topology::Detect() { return Load(""); }

absl::StatusOr<std::unique_ptr<Topology>> Topology::FromSynthetic(std::string_view description) {
  if (description.empty()) return InvalidArgumentError("empty synthetic topology description");
  return Load(description);
}

absl::StatusOr<std::unique_ptr<Topology>> Topology::Load(std::string_view synthetic) {
  std::unique_ptr<Topology> t(new Topology());
  t->impl_ = std::make_unique<Impl>();
  t->synthetic_ = !synthetic.empty();
  if (hwloc_topology_init(&t->impl_->topo) != 0) return InternalError("hwloc_topology_init failed");
  hwloc_topology_t topo = t->impl_->topo;
  if (t->synthetic_) {
    std::string desc(synthetic);
    if (hwloc_topology_set_synthetic(topo, desc.c_str()) != 0) {
      return InvalidArgumentError("invalid hwloc synthetic topology '", synthetic, "'");
    }
  }
  if (hwloc_topology_load(topo) != 0) return InternalError("hwloc_topology_load failed");

  int num_numa = hwloc_get_nbobjs_by_type(topo, HWLOC_OBJ_NUMANODE);
  for (int n = 0; n < num_numa; ++n) {
    hwloc_obj_t node = hwloc_get_obj_by_type(topo, HWLOC_OBJ_NUMANODE, static_cast<unsigned>(n));
    NumaNodeInfo info;
    info.logical_index = n;
    info.os_index = static_cast<int>(node->os_index);
    info.memory_bytes = node->attr != nullptr ? node->attr->numanode.local_memory : 0;
    hwloc_obj_t core = nullptr;
    while ((core = hwloc_get_next_obj_inside_cpuset_by_type(topo, node->cpuset, HWLOC_OBJ_CORE,
                                                             core)) != nullptr) {
      CoreInfo c;
      c.logical_index = static_cast<int>(core->logical_index);
      unsigned pu;
      hwloc_bitmap_foreach_begin(pu, core->cpuset) { c.pus.push_back(static_cast<int>(pu)); }
      hwloc_bitmap_foreach_end();
      info.cores.push_back(std::move(c));
    }
    t->nodes_.push_back(std::move(info));
  }
  if (t->nodes_.empty()) return InternalError("hwloc reported no NUMA node");
  return t;
}

int Topology::num_cores() const {
  int n = 0;
  for (const auto& node : nodes_) n += static_cast<int>(node.cores.size());
  return n;
}

int Topology::num_pus() const {
  int n = 0;
  for (const auto& node : nodes_)
    for (const auto& core : node.cores) n += static_cast<int>(core.pus.size());
  return n;
}

uint64_t Topology::total_memory_bytes() const {
  uint64_t n = 0;
  for (const auto& node : nodes_) n += node.memory_bytes;
  return n;
}

std::string Topology::Describe() const {
  std::string out;
  for (const auto& node : nodes_) {
    absl::StrAppendFormat(&out, "node %d (os %d): %d cores, %.1f GiB\n", node.logical_index,
                          node.os_index, static_cast<int>(node.cores.size()),
                          static_cast<double>(node.memory_bytes) / (1ull << 30));
  }
  return out;
}

absl::Status Topology::BindCurrentThreadToCore(int core_logical_index) const {
  if (synthetic_) return FailedPreconditionError("cannot bind threads on a synthetic topology");
  hwloc_obj_t core = hwloc_get_obj_by_type(impl_->topo, HWLOC_OBJ_CORE,
                                           static_cast<unsigned>(core_logical_index));
  if (core == nullptr) {
    return InvalidArgumentError("no core with logical index ", core_logical_index, " (machine has ",
                                num_cores(), ")");
  }
  if (hwloc_set_cpubind(impl_->topo, core->cpuset, HWLOC_CPUBIND_THREAD) != 0) {
    return InternalError("hwloc_set_cpubind to core ", core_logical_index, " failed");
  }
  return absl::OkStatus();
}

}  // namespace krasis
