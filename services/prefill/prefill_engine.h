// The prefill worker's engine: runs the uncached part of a prompt through the
// model in chunks, on a PrefillBackend (the CPU model, or its copy on a GPU:
// common/models/prefill_backend.h), and hands each
// layer's new KV rows to an output as soon as the layer finishes, so a sender
// can ship them to the decode worker while later layers compute. A cached
// prefix fetched from a decode worker seeds the computation. One prefill runs
// at a time (the real backend owns the GPU); others wait their turn.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <span>
#include <vector>

#include "absl/status/statusor.h"
#include "common/models/model.h"
#include "common/models/prefill_backend.h"

namespace krasis {

// The KV of a cached prefix, as fetched from a decode worker (ExportKv).
struct PrefixKv {
  int64_t num_tokens = 0;
  std::vector<std::vector<float>> rows;  // [layer]: num_tokens * LayerFloats(layer)
  std::vector<LinearState> linear;       // [layer]: state after the prefix (hybrid models)
};

// Where computed KV goes. Either callback may fail; the prefill then stops.
struct KvOutput {
  std::function<absl::Status(int layer, int64_t first, int64_t count, std::span<const float> rows)> rows;
  std::function<absl::Status(int layer, const LinearState& state)> linear;
};

struct PrefillResult {
  std::vector<float> last_logits;  // [vocab] after the last prompt token
  int64_t computed_tokens = 0;
  double compute_ms = 0.0;
  int smaller_chunk_retries = 0;  // chunks that ran out of memory and were redone smaller
};

class PrefillEngine {
 public:
  // kv_dtype: what the engine's own cache stores while it prefills (BF16, F16
  // or F32), and so the rounding of the rows it ships. The same dtype as the
  // decode worker's cache makes a prompt prefilled here bit-identical to one
  // prefilled there.
  // backend: null runs on the CPU model itself; otherwise one made for *model
  // (MakePrefillBackend), which the engine keeps alive with it.
  explicit PrefillEngine(std::unique_ptr<DecoderModel> model, DType kv_dtype = DType::kBF16,
                         std::unique_ptr<PrefillBackend> backend = nullptr)
      : model_(std::move(model)),
        kv_dtype_(kv_dtype),
        backend_(backend != nullptr ? std::move(backend) : MakeCpuPrefillBackend(*model_)) {}
  DType kv_dtype() const { return kv_dtype_; }
  const PrefillBackend& backend() const { return *backend_; }

  const ModelConfig& config() const { return model_->config(); }
  int num_layers() const { return static_cast<int>(model_->layers.size()); }
  int64_t LayerFloats(int layer) const { return model_->layers[layer].mixer->KvFloatsPerToken(); }
  // An empty prefix of the right shape for this model.
  PrefixKv EmptyPrefix() const;

  // Computes tokens [prefix.num_tokens, tokens.size()) in chunks of
  // `chunk_tokens` (rounded down to a multiple of `align`, so every chunk but
  // the last covers whole blocks of that size), streaming each layer's rows to
  // `out` and finally the linear-attention states. `cancelled` is polled
  // between chunks (kCancelled). A chunk that runs out of memory
  // (kResourceExhausted) before any of its rows went out is redone in halves,
  // down to `align` tokens; only then does the prefill fail.
  absl::StatusOr<PrefillResult> Run(std::span<const int32_t> tokens, const PrefixKv& prefix,
                                    const KvOutput& out, int64_t chunk_tokens, int64_t align,
                                    const std::atomic<bool>* cancelled = nullptr);

 private:
  std::unique_ptr<DecoderModel> model_;
  DType kv_dtype_;
  std::unique_ptr<PrefillBackend> backend_;
  std::mutex run_mu_;  // one prefill at a time
};

}  // namespace krasis
