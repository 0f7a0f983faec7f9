// The routed experts of GPU prefill: where each layer's experts live on the card
// and how they get there.
//
// A layer's experts go to the card exactly as the host holds them -- BF16 (or
// F16/F32) as the checkpoint stores them, or the CPU decode worker's INT4/INT8
// tile-interleaved layout (common/quant/quant_format.h), typically mapped from
// the conversion cache -- so INT4 moves a quarter of BF16's bytes over PCIe, and
// on one host the prefill and decode workers read the same mapped files (one
// copy in the page cache). The backend turns a matrix into the GEMM's input form
// just before its GEMM (LaunchDequantTiled / LaunchMaterializeDense).
//
// Host ranges are coalesced (a cache file's layer is one range; checkpoint
// tensors that sit together in a shard merge) and laid end to end on the card,
// each keeping its host address modulo 256 so alignments carry over.
//
// Layers are resident (uploaded once) or streamed: a streamed layer is copied,
// on a copy stream of its own, into one of two staging buffers while the layer
// before it computes, in the cyclic order of the streamed layers (so the next
// chunk's first layers load during this chunk's last ones). A streamed layer
// may move in parts (SplitLayout), each part a unit of that cycle: the backend
// computes a part's experts while the next part loads, so the staging buffers
// need only hold a part. Streaming reads the
// host bytes either straight from their pages, pinned in place with
// cudaHostRegister (kRegister), or through a ring of pinned buffers that host
// threads fill with memcpy (kRing); kRegister falls back to kRing where the
// driver refuses to pin the mapping.
#pragma once

#include <cuda_runtime.h>

#include <array>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "common/cuda/device_memory.h"
#include "common/dtype.h"
#include "common/models/block_desc.h"

namespace krasis::cuda {

// One expert matrix as stored: dense (quant == 0, `dtype`) or group-quantized
// (quant 1 = INT8, 2 = INT4: quant::QuantFormat's values; codes then scales).
struct StoredMatrix {
  int64_t rows = 0, cols = 0;
  DType dtype = DType::kBF16;
  int quant = 0;
  int64_t group = 0;
  const void* host = nullptr;
  size_t bytes = 0;
  const float* host_scales = nullptr;
  size_t scale_bytes = 0;
  size_t offset = 0, scales_offset = 0;  // on the card, from the layer's base
};

struct HostRange {
  const char* host = nullptr;
  size_t bytes = 0;
  size_t offset = 0;  // on the card
};

// One MoE layer's routed experts: gate, up and down of each, and the host
// ranges that hold them.
struct ExpertLayout {
  int64_t hidden = 0, inter = 0;
  std::vector<std::array<StoredMatrix, 3>> experts;  // every expert of the layer
  int64_t first = 0, end = 0;  // the experts this card holds: [first, end) (the others have no bytes)
  std::vector<HostRange> ranges;
  size_t bytes = 0;  // on the card
  std::string format;  // "bf16", "int4", ... (for messages and benchmarks)
};

// The layout of `ffn`'s routed experts: its quantized experts when it has them,
// else the checkpoint's tensors. Several cards split a layer's E experts: card
// `share` of `shares` holds experts [share E / shares, (share + 1) E / shares).
absl::StatusOr<ExpertLayout> LayoutExperts(const FfnDesc& ffn, int64_t hidden, int share = 0, int shares = 1);

// `layout` cut into `parts` layouts of contiguous groups of its experts (as
// even as whole experts allow; at most one per expert), each laid out on its own:
// a part's matrices have offsets from the part's own start, and the experts
// outside it have no bytes.
std::vector<ExpertLayout> SplitLayout(const ExpertLayout& layout, int parts);

enum class Pinning { kRegister, kRing };
const char* PinningName(Pinning p);

class ExpertStore {
 public:
  ExpertStore() = default;
  ~ExpertStore();
  ExpertStore(const ExpertStore&) = delete;
  ExpertStore& operator=(const ExpertStore&) = delete;

  // layouts[l] (empty experts for layers without routed experts) and whether
  // each stays resident. Uploads the resident ones; sets up streaming for the
  // rest, in `stream_parts` parts each, through StagesFor(stream_parts) buffers.
  absl::Status Init(std::vector<ExpertLayout> layouts, const std::vector<bool>& resident, Pinning pinning,
                    int stream_parts = 1);

  static int StagesFor(int stream_parts) { return stream_parts <= 1 ? 2 : stream_parts + 1; }

  const ExpertLayout& layout(size_t layer) const { return layouts_[layer]; }
  bool streamed(size_t layer) const { return position_[layer] >= 0; }
  // A layer's parts: one (the layout itself) unless it streams in parts.
  int parts(size_t layer) const { return static_cast<int>(parts_[layer].size()); }
  const ExpertLayout& part(size_t layer, int p) const { return parts_[layer][static_cast<size_t>(p)]; }
  // The streaming mode in use (kRing when kRegister fell back).
  Pinning pinning() const { return pinning_; }
  // Bytes crossing PCIe per forward pass (the streamed layers' experts).
  size_t streamed_bytes() const;
  size_t staging_bytes() const { return stage_bytes_ * stage_.size(); }  // all buffers
  int streamed_layers() const { return streamed_layers_; }

  // Starts loading the next streamed layers (call before a forward pass).
  absl::Status Prefetch();
  // The card address of part `p` of `layer`'s experts (the base of
  // part(layer, p)'s offsets), valid for work enqueued on `stream` from now
  // until Release(layer, p, stream). Parts are taken in order.
  absl::StatusOr<const char*> Acquire(size_t layer, int p, cudaStream_t stream);
  // Everything on `stream` that reads that part is enqueued.
  absl::Status Release(size_t layer, int p, cudaStream_t stream);

 private:
  absl::Status Issue(uint64_t use);            // starts the copy of use `use` into its stage
  absl::Status CopyUnit(int stage, size_t unit);  // kRegister: enqueue the copies
  void RingLoop();
  absl::Status RingCopy(int stage, size_t unit);
  const ExpertLayout& Unit(size_t unit) const { return part(order_[unit].first, order_[unit].second); }
  absl::Status Drain();                        // waits for every copy and the ring
  absl::Status RegisterRanges();

  std::vector<ExpertLayout> layouts_;
  std::vector<DeviceMemory> resident_;
  std::vector<std::vector<ExpertLayout>> parts_;  // per layer
  std::vector<int> position_;  // index in order_ of the layer's first part, or -1 (resident or no experts)
  std::vector<std::pair<size_t, int>> order_;  // streamed units: (layer, part)
  int streamed_layers_ = 0;
  Pinning pinning_ = Pinning::kRegister;
  cudaStream_t copy_stream_ = nullptr;
  // Staging buffers, each the size of the largest streamed unit: two for whole
  // layers; parts + 1 when layers move in parts (so a whole layer's parts can
  // load while the part before them computes).
  std::vector<DeviceMemory> stage_;
  size_t stage_bytes_ = 0;
  std::vector<cudaEvent_t> copied_, consumed_;
  std::vector<int64_t> stage_holds_;  // per stage: the unit whose copy into it was issued last
  uint64_t next_use_ = 0, issued_ = 0;  // uses numbered in streaming order; stage = use % stages
  std::vector<uintptr_t> registered_;  // pinned spans this store uses (process-wide registry)
  std::vector<uintptr_t> span_bounds_;  // their starts and ends, sorted: copies are cut there

  // kRing: a copier thread, jobs of (use, stage, layer), pinned slots.
  struct Job {
    uint64_t use;
    int stage;
    int64_t unit;  // -1: nothing to copy (the stage already holds it)
  };
  std::thread ring_thread_;
  std::mutex ring_mu_;
  std::condition_variable ring_cv_;
  std::deque<Job> jobs_;
  uint64_t ring_done_ = 0;  // uses whose copies are enqueued (copied_ recorded)
  bool ring_stop_ = false;
  absl::Status ring_error_;
  std::vector<std::unique_ptr<PinnedMemory>> slots_;
  std::vector<cudaEvent_t> slot_free_;
};

}  // namespace krasis::cuda
