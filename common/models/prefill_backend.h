// How a prompt is computed, one chunk of one sequence at a time: on the CPU with
// the loaded model itself, or on a GPU with a copy of its weights there
// (common/cuda/cuda_model.h). The prefill worker and `krasis-cli logits
// --backend` choose one; both write the same KV rows into the same paged cache.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "common/models/model.h"

namespace krasis {

class PrefillBackend {
 public:
  virtual ~PrefillBackend() = default;
  virtual std::string name() const = 0;
  // Before the first chunk of a prompt of `total_tokens` tokens whose first
  // seq.num_tokens rows (a cached prefix) are already in `cache`.
  virtual absl::Status Begin(const SequenceState& seq, PagedKvCache& cache, int64_t total_tokens) {
    (void)seq, (void)cache, (void)total_tokens;
    return absl::OkStatus();
  }
  // Runs the next `tokens` of `seq`: writes their KV rows (and linear state)
  // into `cache`/`seq`, calling on_layer_done(layer) once each layer's rows are
  // there; advances seq.num_tokens. `logits` (if not null) gets the last
  // token's logits [vocab], or with all_positions every token's [n, vocab].
  // Fails cleanly on bad token ids or a full cache.
  virtual absl::Status Forward(std::span<const int32_t> tokens, SequenceState& seq, PagedKvCache& cache,
                               std::vector<float>* logits, bool all_positions,
                               const std::function<void(int layer)>& on_layer_done) = 0;
  // Milliseconds spent per stage since the last call (backends that profile;
  // empty otherwise), then zeroed.
  virtual std::vector<std::pair<std::string, double>> TakeProfile() { return {}; }
  // How many tokens a Forward should be given by a caller that would pass
  // chunk_tokens: more when the backend splits each Forward itself (a
  // pipeline over several cards, whose memory does not grow with it).
  virtual int64_t ForwardTokens(int64_t chunk_tokens) const { return chunk_tokens; }
};

// The CPU backend: DecoderModel::Forward (the model must outlive it).
std::unique_ptr<PrefillBackend> MakeCpuPrefillBackend(const DecoderModel& model);

// "auto" (CUDA when this build has it and a GPU is present, else CPU), "cpu" or
// "cuda" (kFailedPrecondition naming the reason when unavailable). Options of
// the CUDA backend come from `cuda_options` (see cuda_model.h); `why` (if
// given) receives a line saying what was chosen and why.
struct BackendChoice {
  std::string name = "auto";
  int device = 0;                   // CUDA device index
  int64_t vram_budget_bytes = 0;    // 0: what is free minus a margin
  std::string stream_pinning = "register";  // register or ring (cuda/expert_store.h)
  std::vector<int> devices;          // several: the model split across these cards (NCCL)
  std::string cuda_split = "layers";  // how: "layers" (a pipeline) or "experts" (cuda_model.h)
};
absl::StatusOr<std::unique_ptr<PrefillBackend>> MakePrefillBackend(const DecoderModel& model,
                                                                   const BackendChoice& choice,
                                                                   std::string* why = nullptr);

}  // namespace krasis
