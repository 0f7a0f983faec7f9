// Where a model's weights live during GPU prefill under a VRAM budget
// (`--vram-budget`): everything on the card when it fits; otherwise every
// non-expert weight (attention, norms, routers, shared experts, dense MLPs,
// lm_head), the prompt's KV and the workspace stay resident, as many layers'
// routed experts as fit stay resident too, and the other layers' routed
// experts stream from pinned host RAM through two buffers (one filling over
// PCIe while the other's layer computes). When two buffers of a whole layer's
// experts would not fit (or when less buffer memory leaves room for more
// resident layers), streamed layers move in P parts -- contiguous groups of
// their experts, each computed as soon as it is on the card -- through P + 1
// buffers of a part (a whole layer's parts load while the part before computes). Pure arithmetic, no CUDA:
// the CUDA backend applies the plan; tests check it anywhere.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/models/model.h"

namespace krasis {

struct GpuLayerBytes {
  int64_t resident = 0;  // norms, token mixer, router, shared expert or dense MLP
  int64_t experts = 0;   // all routed experts of the layer (0 for dense layers)
  int64_t expert_count = 0;  // how many (0: the layer cannot be cut into parts)
};

struct GpuPlacementInput {
  int64_t budget_bytes = 0;     // what the backend may allocate on the card
  int64_t fixed_bytes = 0;      // embedding-free extras: lm_head, KV of the longest prompt, workspace
  std::vector<GpuLayerBytes> layers;
};

struct GpuPlacement {
  bool all_resident = false;
  std::vector<bool> experts_resident;  // per layer: its routed experts stay on the card
  int64_t stream_buffer_bytes = 0;     // each streaming buffer (0 when nothing streams)
  int stream_parts = 1;                // streamed layers move in this many parts (groups of experts)
  int stream_buffers = 2;              // 2 for whole layers, parts + 1 for parts
  int64_t streamed_bytes = 0;          // routed-expert bytes that cross PCIe per chunk
  int64_t device_bytes = 0;            // what the plan allocates in all
};

// The plan for `input`; kResourceExhausted saying how much is needed when even
// the non-expert weights plus the streaming buffers of the smallest parts do
// not fit. Layers whose experts stay resident are chosen largest first (each
// saves its bytes of PCIe traffic on every chunk), spread over the stack among
// equals (so streamed layers alternate with resident ones); the number of parts (1, 2,
// 4 or 8) is the one that streams the fewest bytes, the fewest among equals.
// `parts` > 0 imposes that number instead.
absl::StatusOr<GpuPlacement> PlanGpuPlacement(const GpuPlacementInput& input, int parts = 0);

// The bytes of the largest part when a layer of `experts` bytes and `count`
// experts is cut into `parts` groups of whole experts (with room for the
// alignment of the group's ranges on the card).
int64_t ExpertPartBytes(int64_t experts, int64_t count, int parts);

// The bytes each layer of `model` needs on the card with its matrices in BF16
// (norm vectors and biases in F32), as the CUDA backend uploads them.
std::vector<GpuLayerBytes> GpuLayerSizes(const DecoderModel& model);

// "24G", "16000M", "512K", "1073741824" (binary units, optional "B"/"iB") ->
// bytes; kInvalidArgument naming `flag` otherwise.
absl::StatusOr<int64_t> ParseByteSize(const std::string& text, const std::string& flag);

// "0,1" -> {0, 1}: CUDA device indices, distinct, non-negative; kInvalidArgument
// naming `flag` otherwise.
absl::StatusOr<std::vector<int>> ParseDeviceList(const std::string& text, const std::string& flag);

}  // namespace krasis
