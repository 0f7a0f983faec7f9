// The CUDA prefill backend: a copy of a loaded DecoderModel's weights on one GPU
// and a forward pass over a chunk of one sequence's tokens built from cuBLAS
// GEMMs and the kernels of prefill_kernels.h. Non-expert weights are uploaded
// once as BF16 (from the checkpoint's tensors, as each block describes them:
// block_desc.h). Routed experts go to the card in their stored form -- the
// checkpoint's BF16, or the INT4/INT8 experts the model uses for CPU decode
// (the conversion cache's files) -- and are dequantized just before their GEMM;
// under a VRAM budget the experts of some layers stream from host RAM each
// chunk (expert_store.h, placement: models/gpu_placement.h). The sequence's keys
// and values stay on the card for the whole prompt (so later chunks attend to
// earlier ones without copying them back); each layer's new rows are copied
// into the host paged cache as soon as the layer has them.
//
// Supported: GQA (Qwen3-MoE, GLM-4.x; QK norm, bias, partial RoPE, Qwen3-Next's
// output gate), MLA (DeepSeek-V2/V3) and Gated DeltaNet (Qwen3-Next; its state
// goes back into the sequence after each chunk) token mixers, dense and MoE
// feed-forward blocks (every router kind, gated or plain shared experts).
//
// Several cards of one host (options.devices, NCCL), split one of two ways:
// - by layers (the default): card r holds layers [r L / cards, (r + 1) L / cards)
//   (rounded) with their experts, as a pipeline: a Forward's tokens go through
//   in micro-chunks, card r sending each one's hidden states to card r + 1
//   (NCCL send/receive) and starting the next, so the cards work at once on
//   successive micro-chunks. Nothing is computed twice, and each card's budget
//   holds only its layers (far more of their experts stay resident). Every card
//   writes its own layers' KV rows and state; the last computes the logits.
// - by experts: every card runs the whole forward pass except the routed
//   experts, which are split -- card r holds and streams experts
//   [r E / cards, (r + 1) E / cards) of every layer -- and each MoE block's
//   partial outputs are summed across the cards with an NCCL all-reduce. Each
//   card moves 1/cards of the expert bytes over its own PCIe link, but repeats
//   the attention and everything else; the first card writes the KV rows,
//   state and logits.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/cuda/expert_store.h"
#include "common/models/prefill_backend.h"

namespace krasis {

struct CudaBackendOptions {
  int device = 0;
  // kBf16: weights and GEMM inputs in BF16 (what prefill runs with). kF32:
  // weights and GEMM inputs in fp32, no TF32 -- the checking mode, which must
  // match the CPU model to fp32 rounding (twice the weight memory).
  enum class Precision { kBf16, kF32 } precision = Precision::kBf16;
  // Synchronise after each stage and add its time to TakeProfile() (benchmarks).
  bool profile = false;
  // With profile: also synchronise after each step inside a stage (a GEMM, a
  // kernel) and report the steps too, as "stage.step" ("stage.rest": the
  // stage's time after its last step). More syncs, so a slower pass.
  bool profile_steps = false;
  // What the backend may allocate on the card; 0: what is free at start minus
  // 1 GiB. When the model does not fit, the routed experts of the layers that
  // do not fit stream from host RAM every chunk.
  int64_t vram_budget_bytes = 0;
  // The placement reserves room for chunks of this many tokens and KV of a
  // prompt this long (longer ones allocate more, and fail cleanly if it is not there).
  int64_t plan_chunk_tokens = 4096;
  int64_t plan_context_tokens = 16384;
  // How streamed experts reach the card (expert_store.h).
  cuda::Pinning pinning = cuda::Pinning::kRegister;
  // At most this many MoE layers keep their experts resident, whatever the
  // budget allows (-1: no limit); the rest stream. For tests and benchmarks.
  int max_resident_expert_layers = -1;
  // Several cards (NCCL), e.g. {0, 1}: routed experts split across them, each
  // with this VRAM budget. Empty or one entry: one card (`device`, or that entry).
  std::vector<int> devices;
  // How several cards share the model (see above). By layers measured faster
  // on 2 x H200 (DeepSeek-V2-Lite shapes; README).
  enum class Split { kLayers, kExperts } split = Split::kLayers;
  // Split by layers: tokens per micro-chunk of the pipeline; 0: chosen per
  // Forward by PipelineMicroChunks.
  int64_t micro_chunk_tokens = 0;
  // Routed experts through the grouped expert GEMM (one launch per matrix for
  // all of a layer's experts) where the weight form allows it; false: one cuBLAS
  // GEMM per expert (for comparisons).
  bool grouped_experts = true;
  // Streamed layers move in this many parts (groups of experts); 0: the
  // placement's choice (parts when two buffers of a whole layer do not fit, or
  // when smaller buffers leave room for more resident layers).
  int expert_parts = 0;
  // Gated DeltaNet's delta rule chunk by chunk in the WY form
  // (cuda::LaunchGdnChunked) instead of token by token. Off by default: it
  // agrees with the token-by-token kernel but measured about 20% slower on the
  // H200 (attention_bench --only gdn).
  bool chunked_delta_rule = false;
};

// Where the backend put the routed experts (for logs and benchmarks).
struct CudaBackendInfo {
  int64_t budget_bytes = 0;
  int moe_layers = 0, streamed_layers = 0;
  int64_t resident_expert_bytes = 0, streamed_expert_bytes = 0, staging_bytes = 0;
  std::string expert_format;  // "bf16", "int4", ...
  std::string pinning;        // "register" or "ring" (when something streams)
  int cards = 1;              // several: the expert bytes and layers above are summed over the cards
  int grouped_layers = 0;     // MoE layers whose experts run through the grouped GEMM
  int stream_parts = 1;       // streamed layers move in this many parts
  std::string split;          // several cards: "layers" or "experts"
};

// Split by layers: the micro-chunks a Forward of n tokens goes through in, in
// order (they sum to n; all but the last of one size):
// - `option` tokens each, when set;
// - when some card streams experts (which cross PCIe again for every
//   micro-chunk): as few as the plan allows, plan_chunk tokens each;
// - else 2048 tokens each (at most plan_chunk, the chunk the VRAM plan holds
//   workspace for).
// Measured on 2 x H200, DeepSeek-V2-Lite INT4 experts, 16K tokens (one card:
// 0.511 s): 2048 each 0.322 s, 4096 each 0.323 s; a half-sized first and last
// around 2048s 0.334-0.339 s, a 1024-token first then 4096s 0.341 s, sizes
// from 2816 down to 1664 of equal estimated cost (attention included)
// 0.372-0.381 s. (Every new size also costs cuBLAS a new choice of kernels.)
std::vector<int64_t> PipelineMicroChunks(int64_t n, int64_t plan_chunk, int64_t option, bool streams);

absl::StatusOr<std::unique_ptr<PrefillBackend>> MakeCudaPrefillBackend(const DecoderModel& model,
                                                                       const CudaBackendOptions& options,
                                                                       CudaBackendInfo* info = nullptr);

}  // namespace krasis
