// What GPUs this host has, as the CUDA runtime sees them. Used to pick the
// prefill backend at start (CUDA when a GPU is present, CPU otherwise) and by the
// GPU tests to say plainly when they cannot run.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace krasis {

struct GpuInfo {
  int index = 0;
  std::string name;
  int compute_major = 0;
  int compute_minor = 0;
  uint64_t total_memory_bytes = 0;
  uint64_t free_memory_bytes = 0;
  int multiprocessors = 0;
};

// Lists the GPUs. No GPU, or no driver, is not an error: the list is empty and
// `why_none` (if given) says why.
absl::StatusOr<std::vector<GpuInfo>> ListGpus(std::string* why_none = nullptr);

}  // namespace krasis
