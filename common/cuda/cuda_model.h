// The CUDA prefill backend: a copy of a loaded DecoderModel's weights on one GPU
// (BF16, uploaded once from the checkpoint's tensors, as each block describes
// them: block_desc.h) and a forward pass over a chunk of one sequence's tokens
// built from cuBLAS GEMMs and the kernels of prefill_kernels.h. The sequence's
// keys and values stay on the card for the whole prompt (so later chunks attend
// to earlier ones without copying them back); each layer's new rows are copied
// into the host paged cache as soon as the layer has them.
//
// Supported now: GQA token mixers (Qwen3-MoE, GLM-4.x; QK norm, bias, partial
// RoPE) and dense / MoE feed-forward blocks (every router kind, shared experts).
// Models with MLA or Gated DeltaNet layers, or Qwen3-Next's output-gated
// attention, are refused with kUnimplemented naming the layer.
#pragma once

#include <memory>

#include "absl/status/statusor.h"
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
};

absl::StatusOr<std::unique_ptr<PrefillBackend>> MakeCudaPrefillBackend(const DecoderModel& model,
                                                                       const CudaBackendOptions& options);

}  // namespace krasis
