// The decoder-only MoE model: embedding, a stack of layers (each a token mixer
// -- attention or linear attention -- and a feed-forward block -- dense MLP or
// MoE -- with pre-norms and residuals), final norm and lm_head. Architectures
// (qwen3_moe.cc, qwen3_next.cc, deepseek.cc, glm4_moe.cc) only choose and load
// the blocks; the forward pass here is shared.
//
// Forward runs any batch of sequences, each with any number of new tokens
// (prefill is many, decode is one), over a paged KV cache: mixers write the new
// tokens' keys/values (or recurrent state) and attend over everything cached.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/kernels/ops.h"
#include "common/model_config.h"
#include "common/models/block_desc.h"
#include "common/models/blocks/projection.h"
#include "common/models/kv_cache.h"
#include "common/models/weight_format.h"
#include "common/gguf.h"
#include "common/models/weights.h"
#include "common/threading/numa_pool.h"

namespace krasis {

// Where one sequence's new tokens sit in a batch's activation rows.
struct SequenceRows {
  int64_t first_row = 0;   // row of its first new token in the [T, hidden] batch
  int64_t count = 0;       // new tokens
  int64_t start_pos = 0;   // position of its first new token (= tokens cached before)
  SequenceState* seq = nullptr;
};

// Activation rows a batch spans: one past the last row of any of its sequences.
int64_t BatchRows(std::span<const SequenceRows> rows);

// The cache half of Ops::Attention's arguments for sequence `r` over layer
// `layer` of `cache`: its new tokens and start position, and its paged rows.
// The caller adds q, out, head counts and sizes, offsets and scale.
AttentionArgs PagedAttentionArgs(PagedKvCache& cache, const SequenceRows& r, int layer);

// Formats of the non-expert weights for decode, per component. Quantized ones
// run on the CPU kernels with their rows split over the whole pool. `attention`
// covers every projection of the token mixers: GQA q/k/v/o, MLA q (or q_a and
// q_b), kv_a and o (kv_b stays as stored: it is read per head in the absorbed
// form), and Gated DeltaNet's in_proj_qkvz, in_proj_ba and out_proj.
struct WeightFormats {
  ExpertFormat attention = ExpertFormat::kBf16;
  ExpertFormat lm_head = ExpertFormat::kBf16;
  ExpertFormat dense_mlp = ExpertFormat::kBf16;       // dense (non-MoE) layers' MLP
  ExpertFormat shared_experts = ExpertFormat::kBf16;  // MoE layers' shared expert(s)
  int64_t group_size = 128;
  NumaThreadPool* pool = nullptr;  // null: NumaThreadPool::Default()
};

// The --attention, --lm-head, --dense-mlp and --shared-experts flag values
// (bf16|int8|int4) as WeightFormats; kInvalidArgument naming the flag otherwise.
absl::StatusOr<WeightFormats> ParseWeightFormats(const std::string& attention, const std::string& lm_head,
                                                 const std::string& dense_mlp, const std::string& shared_experts);

// Attention-like block of one layer: mixes information across positions.
class Mixer {
 public:
  virtual ~Mixer() = default;
  // Floats this layer keeps per token in the paged cache (0: none).
  virtual int64_t KvFloatsPerToken() const = 0;
  // Sets up per-sequence state (linear attention); default none.
  virtual void InitSequence(SequenceState& seq, int layer) const { (void)seq, (void)layer; }
  // x: normed hidden [T, hidden]; out: [T, hidden]. Appends the new tokens to
  // the cache for `layer` and attends causally over everything cached.
  virtual absl::Status Forward(const float* x, float* out, std::span<const SequenceRows> rows,
                               PagedKvCache& cache, int layer) const = 0;
  // Switches the projections to formats.attention (layers that support it).
  virtual absl::Status SetWeightFormats(const WeightFormats& formats) {
    (void)formats;
    return absl::OkStatus();
  }
  // What this block computes, for other backends (block_desc.h); nullopt when
  // no other backend runs it.
  virtual std::optional<MixerDesc> Describe() const { return std::nullopt; }
};

// Position-wise block of one layer: dense MLP or mixture of experts.

struct ExpertOptions {
  ExpertFormat format = ExpertFormat::kBf16;
  int64_t group_size = 128;
  NumaThreadPool* pool = nullptr;  // null: NumaThreadPool::Default()
  // The conversion cache (common/quant/expert_cache.h): when set, each layer's
  // quantized experts are mapped from <cache_dir>/<layer>.kxq, built there
  // first when missing or stale. Empty: quantized in memory at every start.
  std::string cache_dir;
  uint64_t fingerprint = 0;  // SourceFingerprint of the model directory
  // Called after each MoE layer: (layers done, MoE layers in all, bytes of that layer).
  std::function<void(int, int, uint64_t)> progress;
  // Take the routed experts from this GGUF file (merged ffn_*_exps or per-expert
  // tensors, any type DequantizeRow reads) instead of the safetensors.
  std::shared_ptr<const GgufFile> gguf;
  // When set, counts the layers whose cache file had to be (re)built.
  int* layers_built = nullptr;
};


class FeedForward {
 public:
  virtual ~FeedForward() = default;
  // x: [n, hidden]; out: [n, hidden].
  virtual void Forward(const float* x, int64_t n, float* out) const = 0;
  // Switches the routed experts to `options.format` (MoE blocks; others ignore it).
  virtual absl::Status SetExpertFormat(const ExpertOptions& options) {
    (void)options;
    return absl::OkStatus();
  }
  // Switches the dense MLP or the shared expert to `formats` (bf16: as stored).
  virtual absl::Status SetWeightFormats(const WeightFormats& formats) {
    (void)formats;
    return absl::OkStatus();
  }
  // Bytes of the quantized routed experts (0 when none).
  virtual uint64_t ExpertBytes() const { return 0; }
  // What this block computes, for other backends (block_desc.h).
  virtual std::optional<FfnDesc> Describe() const { return std::nullopt; }
};

struct DecoderLayer {
  TensorView input_norm;  // [hidden]
  TensorView post_norm;   // [hidden]
  std::unique_ptr<Mixer> mixer;
  std::unique_ptr<FeedForward> ffn;
};

// One sequence's new tokens in a Forward call.
struct BatchItem {
  SequenceState* seq = nullptr;
  std::vector<int32_t> tokens;
  bool all_logits = false;  // logits at every new position, not just the last
};

class DecoderModel {
 public:
  DecoderModel(ModelConfig config, std::shared_ptr<Weights> weights, const Ops& ops)
      : config_(std::move(config)), weights_(std::move(weights)), ops_(&ops) {}

  const ModelConfig& config() const { return config_; }
  const Ops& ops() const { return *ops_; }

  // A cache sized for this model, storing `kv_dtype` elements (F32, BF16, F16).
  std::unique_ptr<PagedKvCache> MakeCache(int64_t num_blocks, int64_t block_size,
                                          DType kv_dtype = DType::kF32) const;
  // Prepares an empty sequence (linear-attention state).
  void InitSequence(SequenceState& seq) const;

  // Runs the new tokens of every item; logits->at(i) gets [rows, vocab] for item
  // i (rows = its new tokens if all_logits, else 1). Fails cleanly (nothing
  // half-written counts: num_tokens advances only on success) for token ids out
  // of range, an empty item, or a full cache.
  // `on_layer_done`, when given, is called after each layer's mixer has written
  // that layer's KV for the new tokens (a prefill worker ships it to the decode
  // worker while the next layers compute).
  absl::Status Forward(std::span<const BatchItem> batch, PagedKvCache& cache,
                       std::vector<std::vector<float>>* logits,
                       const std::function<void(int layer)>& on_layer_done = nullptr) const;

  // For architecture builders.
  TensorView embed;     // [vocab, hidden]
  TensorView final_norm;  // [hidden]
  Projection lm_head;   // [vocab, hidden]; quantized by SetWeightFormats
  bool zero_centred_norms = false;  // Qwen3-Next: norm weight is used as 1 + w
  std::vector<DecoderLayer> layers;

 private:
  ModelConfig config_;
  std::shared_ptr<Weights> weights_;
  const Ops* ops_;
};

// Where DecoderModel::Forward spent its time (for benchmarks): token mixers of
// full-attention and linear-attention layers (incl. the input norm), the
// feed-forward blocks (incl. the post norm), and the final norm + lm_head.
// MoE blocks split their time into routing (router matmul and top-k) and the rest.
struct ForwardProfile {
  uint64_t attention_ns = 0, linear_ns = 0, ffn_ns = 0, routing_ns = 0, lm_head_ns = 0;
  uint64_t setup_ns = 0;  // before the first layer: checks, cache blocks, embedding
  // Finer (ProfileScope): every Projection applied (lm_head included), the lm_head
  // product alone, the router product, and the routed experts' dispatch (with a
  // shared expert that joins it); each with the weight bytes it read.
  uint64_t proj_ns = 0, proj_bytes = 0, lm_head_proj_ns = 0, lm_head_bytes = 0;
  uint64_t router_ns = 0, router_bytes = 0, experts_ns = 0, experts_bytes = 0;
  uint64_t recurrence_ns = 0;  // Gated DeltaNet: conv, norms and the delta rule (no weights)
  uint64_t attention_core_ns = 0;  // softmax attention over the KV cache (GQA, MLA)
  uint64_t absorbed_ns = 0, absorbed_bytes = 0;  // MLA's per-head W_uk / W_uv products
  uint64_t dense_ns = 0, dense_bytes = 0;        // dense MLP layers
};
// Adds the time since construction or the last Lap to a field of the totals
// (when profiling is on).
class ForwardTimer {
 public:
  ForwardTimer();
  void Lap(uint64_t ForwardProfile::*field);

 private:
  bool on_;
  std::chrono::steady_clock::time_point last_;
};
// Adds the time from construction to destruction, and the weight bytes the
// kernels counted meanwhile (quant::QuantizedBytesRead + DenseBytesRead), to
// two fields of the totals (when profiling is on; bytes may be null). Call from
// the forward thread only: pool workers count bytes into the same global
// counters.
class ProfileScope {
 public:
  ProfileScope(uint64_t ForwardProfile::*ns, uint64_t ForwardProfile::*bytes);
  ~ProfileScope();
  ProfileScope(const ProfileScope&) = delete;
  ProfileScope& operator=(const ProfileScope&) = delete;

 private:
  bool on_;
  uint64_t ForwardProfile::*ns_;
  uint64_t ForwardProfile::*bytes_;
  std::chrono::steady_clock::time_point start_;
  uint64_t bytes0_ = 0;
};
// Turns the accounting on or off (off by default: no clock reads).
void EnableForwardProfile(bool on);
// The totals since the last call, reset to zero.
ForwardProfile TakeForwardProfile();

// Loads a Hugging Face model directory (config.json + safetensors) of any
// supported architecture. Errors name the file and tensor at fault.
absl::StatusOr<std::unique_ptr<DecoderModel>> LoadModel(const std::string& dir,
                                                        const Ops& ops = DefaultOps());

// Converts every MoE layer's routed experts to `options.format` (see ExpertOptions).
absl::Status SetExpertFormat(DecoderModel& model, const ExpertOptions& options);

// Converts lm_head, the dense MLPs and the shared experts to `formats`.
absl::Status SetWeightFormats(DecoderModel& model, const WeightFormats& formats);

// ExpertOptions for `format` with the conversion cache of `model_dir` under
// `cache_root` (e.g. ~/.krasis/cache): cache_dir and fingerprint filled in.
// `gguf_path` (optional): experts from that GGUF file (opened into .gguf; its
// name, size and mtime join the fingerprint and the cache directory's name).
absl::StatusOr<ExpertOptions> CachedExpertOptions(const std::string& model_dir, const std::string& cache_root,
                                                  ExpertFormat format, int64_t group_size,
                                                  const std::string& gguf_path = "");

}  // namespace krasis
