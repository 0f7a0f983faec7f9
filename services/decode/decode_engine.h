// The decode worker's engine: continuous batching over the reference model.
//
// Requests join a waiting queue; a scheduler thread admits them while KV blocks
// and batch slots allow (reusing any cached prefix), then runs steps: each step
// is one batched forward pass in which running sequences either prefill their
// next prompt chunk or decode one token. After every step the engine samples,
// streams one event per new token to the request's sink, publishes newly full
// KV blocks to the prefix cache, and retires finished or cancelled sequences
// (their blocks stay cached for follow-up turns). No gRPC here; the adapter
// (decode_service.cc) turns events into GenerateResponse messages.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/models/model.h"
#include "services/decode/kv_manager.h"
#include "services/decode/sampler.h"

namespace krasis {

enum class FinishReason { kStop, kLength, kCancelled, kError };

struct GenerationRequest {
  std::string id;
  std::vector<int32_t> prompt;
  SamplingOptions sampling;
  int32_t max_tokens = 0;  // 0: until EOS or the context limit
  int32_t min_tokens = 0;  // EOS and stop tokens are banned until this many
  std::vector<int32_t> stop_token_ids;
  bool ignore_eos = false;
  // When set, the prompt's KV was imported under this id (BeginImport ...
  // FinishImport) and the first token is sampled from the imported logits.
  std::string kv_import_id;
};

// Receives a cached prefix's KV, one layer's rows of a token range at a time,
// then the linear-attention states (hybrid models).
struct ExportSink {
  std::function<absl::Status(int layer, int64_t first, int64_t count, std::span<const float> rows)> rows;
  std::function<absl::Status(int layer, const LinearState& state)> linear;
};

struct TokenUsage {
  int64_t prompt_tokens = 0;
  int64_t cached_tokens = 0;  // prompt tokens served from the prefix cache
  int64_t completion_tokens = 0;
};

// One token, or (final) the end of a generation.
struct GenerationEvent {
  int32_t token = -1;
  int32_t index = 0;  // 0-based position in the output
  float logprob = 0.0f;
  std::vector<std::pair<int32_t, float>> top_logprobs;
  double step_ms = 0.0;
  int32_t batch_size = 0;

  bool final = false;
  FinishReason finish_reason = FinishReason::kStop;
  std::optional<int32_t> stop_token_id;
  TokenUsage usage;
  absl::Status error;  // set with kError
  double queue_ms = 0.0, prefill_ms = 0.0, first_token_ms = 0.0, decode_ms = 0.0;
};

// Called from the scheduler thread; must not block for long.
using EventSink = std::function<void(const GenerationEvent&)>;

struct EngineOptions {
  KvManagerOptions kv;
  int32_t max_batch = 32;       // sequences per step
  int32_t prefill_chunk = 256;  // prompt tokens per sequence per step
};

struct EngineStats {
  int64_t running = 0, waiting = 0;
  KvStats kv;
  int64_t prefix_query_tokens = 0, prefix_hit_tokens = 0;
  int64_t prompt_tokens = 0, generated_tokens = 0, requests_finished = 0, imports = 0;
  double uptime_s = 0.0;
};

class DecodeEngine {
 public:
  // eos_token_ids: tokens that end a generation unless ignore_eos.
  DecodeEngine(std::unique_ptr<DecoderModel> model, const EngineOptions& options,
               std::vector<int32_t> eos_token_ids);
  ~DecodeEngine();  // cancels everything and joins the scheduler

  const ModelConfig& config() const { return model_->config(); }
  int64_t block_size() const { return options_.kv.block_size; }

  // Queues a request. Errors (nothing queued, the sink is never called):
  // kInvalidArgument for a bad request, kAlreadyExists for a duplicate id,
  // kResourceExhausted when the prompt can never fit the cache.
  absl::Status Submit(GenerationRequest request, EventSink sink);

  // Cancels a queued or running request; its final event says kCancelled.
  // False when the id is unknown (or already finished).
  bool Cancel(const std::string& id);

  // Longest prefix of `tokens` this engine can resume from, in tokens; fills
  // `hashes` with the matched blocks' hashes when given.
  int64_t LookupPrefix(std::span<const int32_t> tokens, std::vector<BlockHash>* hashes = nullptr);

  EngineStats Stats();

  // KV import from a prefill worker. `tokens` is the whole prompt; tokens
  // [0, start_token) must be cached here already (a block-aligned prefix, as
  // LookupPrefix reported), the rest arrive through ImportRows (and, for hybrid
  // models, ImportLinearState for every linear-attention layer), then
  // FinishImport with the last position's logits. Errors: kAlreadyExists,
  // kFailedPrecondition (prefix no longer cached), kResourceExhausted,
  // kInvalidArgument (rows out of range or of the wrong width), kNotFound.
  absl::Status BeginImport(const std::string& import_id, std::vector<int32_t> tokens,
                           int64_t start_token);
  absl::Status ImportRows(const std::string& import_id, int layer, int64_t first, int64_t count,
                          std::span<const float> rows);
  absl::Status ImportLinearState(const std::string& import_id, int layer, LinearState state);
  absl::Status FinishImport(const std::string& import_id, std::vector<float> last_logits);
  void DropImport(const std::string& import_id);
  // Imports not claimed by a Generate within this time are dropped.
  static constexpr std::chrono::seconds kImportExpiry{60};

  // Sends the KV (and linear state) of the first `num_tokens` of `tokens`, which
  // must be a cached, block-aligned prefix (kNotFound otherwise).
  absl::Status ExportPrefix(std::span<const int32_t> tokens, int64_t num_tokens, const ExportSink& sink);

  // Floats per token that layer `layer` keeps (0 for linear-attention layers).
  int64_t LayerFloats(int layer) const { return kv_.cache().LayerFloats(layer); }
  // What the KV cache stores (BF16, F16 or F32).
  DType kv_dtype() const { return kv_.cache().dtype(); }
  int num_layers() const { return static_cast<int>(model_->layers.size()); }

 private:
  struct Sequence;
  struct Import;
  void ExpireImports();
  // Names newly full blocks of `seq` in the prefix cache (and snapshots state).
  void PublishBlocks(Sequence& seq);
  // Samples the next token from `logits`, emits its event, and finishes the
  // sequence when it ends.
  void SampleAndEmit(Sequence& seq, std::vector<float>& logits, double step_ms, int32_t batch_size,
                     std::vector<std::pair<EventSink, GenerationEvent>>& out);
  void Loop();
  // Admits waiting requests; returns events for requests that failed admission.
  void Admit(std::vector<std::pair<EventSink, GenerationEvent>>& out);
  void Finish(Sequence& seq, FinishReason reason, std::optional<int32_t> stop_token,
              std::vector<std::pair<EventSink, GenerationEvent>>& out, absl::Status error = {});

  std::unique_ptr<DecoderModel> model_;
  EngineOptions options_;
  std::vector<int32_t> eos_;
  KvManager kv_;

  std::mutex mu_;
  std::condition_variable wake_;
  bool stopping_ = false;
  std::deque<std::unique_ptr<Sequence>> waiting_;
  std::vector<std::unique_ptr<Sequence>> running_;
  std::unordered_map<std::string, Sequence*> by_id_;
  std::unordered_map<std::string, std::unique_ptr<Import>> imports_;
  EngineStats stats_;
  std::chrono::steady_clock::time_point started_;
  std::thread thread_;
};

}  // namespace krasis
