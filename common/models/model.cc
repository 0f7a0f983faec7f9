// The shared decoder forward pass and the architecture dispatch (see model.h).
#include "common/models/model.h"
#include "common/models/scratch.h"
#include "common/models/quantize_experts.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <mutex>
#include <filesystem>
#include <tuple>

#include "common/kernels/cpu_ops.h"
#include "common/models/architectures.h"
#include "common/quant/expert_cache.h"
#include "common/quant/expert_set.h"
#include "common/status.h"

namespace krasis {

namespace {
std::atomic<bool> profiling{false};
// DecoderModel::Forward's per-thread buffers (see there).
struct ForwardScratch {
  std::vector<float> x, h, delta, normed, logits;
  // Buffers of a long prompt's size are not kept for the next call.
  void ReleaseLarge() { ReleaseLargeScratch({&x, &h, &delta, &normed, &logits}); }
};
ForwardProfile profile_totals;
std::mutex profile_mu;

}  // namespace

void EnableForwardProfile(bool on) { profiling.store(on); }

ForwardTimer::ForwardTimer()
    : on_(profiling.load(std::memory_order_relaxed)), last_(std::chrono::steady_clock::now()) {}

void ForwardTimer::Lap(uint64_t ForwardProfile::*field) {
  if (!on_) return;
  const auto now = std::chrono::steady_clock::now();
  std::lock_guard<std::mutex> lock(profile_mu);
  profile_totals.*field += static_cast<uint64_t>(std::chrono::nanoseconds(now - last_).count());
  last_ = now;
}

namespace {
uint64_t WeightBytesRead() { return quant::QuantizedBytesRead() + DenseBytesRead(); }
}  // namespace

ProfileScope::ProfileScope(uint64_t ForwardProfile::*ns, uint64_t ForwardProfile::*bytes)
    : on_(profiling.load(std::memory_order_relaxed)), ns_(ns), bytes_(bytes) {
  if (!on_) return;
  bytes0_ = WeightBytesRead();
  start_ = std::chrono::steady_clock::now();
}

ProfileScope::~ProfileScope() {
  if (!on_) return;
  const auto now = std::chrono::steady_clock::now();
  std::lock_guard<std::mutex> lock(profile_mu);
  profile_totals.*ns_ += static_cast<uint64_t>(std::chrono::nanoseconds(now - start_).count());
  if (bytes_ != nullptr) profile_totals.*bytes_ += WeightBytesRead() - bytes0_;
}

ForwardProfile TakeForwardProfile() {
  std::lock_guard<std::mutex> lock(profile_mu);
  return std::exchange(profile_totals, ForwardProfile{});
}

int64_t BatchRows(std::span<const SequenceRows> rows) {
  int64_t total = 0;
  for (const SequenceRows& r : rows) total = std::max(total, r.first_row + r.count);
  return total;
}

AttentionArgs PagedAttentionArgs(PagedKvCache& cache, const SequenceRows& r, int layer) {
  AttentionArgs args;
  args.n = r.count;
  args.start_pos = r.start_pos;
  args.block_size = cache.block_size();
  args.slot_stride = cache.SlotStride();
  args.kv_dtype = cache.dtype();
  const SequenceState* seq = r.seq;
  args.block_row = [&cache, seq, layer](int64_t b) -> const std::byte* {
    return cache.Slot(seq->block_table[static_cast<size_t>(b)], layer, 0);
  };
  return args;
}

const Ops& DefaultOps() {
  static const CpuOps ops;
  return ops;
}

std::unique_ptr<PagedKvCache> DecoderModel::MakeCache(int64_t num_blocks, int64_t block_size,
                                                      DType kv_dtype) const {
  std::vector<int64_t> floats;
  for (const auto& layer : layers) floats.push_back(layer.mixer->KvFloatsPerToken());
  return std::make_unique<PagedKvCache>(num_blocks, block_size, std::move(floats), kv_dtype);
}

void DecoderModel::InitSequence(SequenceState& seq) const {
  seq.num_tokens = 0;
  seq.block_table.clear();
  seq.linear.assign(layers.size(), LinearState{});
  for (size_t l = 0; l < layers.size(); ++l) layers[l].mixer->InitSequence(seq, static_cast<int>(l));
}

absl::Status DecoderModel::Forward(std::span<const BatchItem> batch, PagedKvCache& cache,
                                   std::vector<std::vector<float>>* logits,
                                   const std::function<void(int layer)>& on_layer_done) const {
  const int64_t hidden = config_.hidden_size;
  const int64_t vocab = config_.vocab_size;
  ForwardTimer timer;
  std::vector<SequenceRows> rows;
  int64_t total = 0;
  for (const auto& item : batch) {
    if (item.seq == nullptr || item.tokens.empty()) {
      return InvalidArgumentError("every batch item needs a sequence and at least one token");
    }
    for (int32_t t : item.tokens) {
      if (t < 0 || t >= vocab) {
        return InvalidArgumentError("token id ", t, " is out of range [0, ", vocab, ")");
      }
    }
    if (item.seq->linear.size() != layers.size()) {
      return FailedPreconditionError("sequence was not initialised for this model (InitSequence)");
    }
    int64_t count = static_cast<int64_t>(item.tokens.size());
    RETURN_IF_ERROR(item.seq->Reserve(cache, item.seq->num_tokens + count));
    rows.push_back(SequenceRows{total, count, item.seq->num_tokens, item.seq});
    total += count;
  }

  // The step's activations live in this thread's scratch, which keeps its
  // capacity from step to step: a decode step allocates (and page-faults)
  // nothing of the size of the vocabulary.
  thread_local ForwardScratch scratch;
  std::vector<float>& x = scratch.x;
  x.resize(static_cast<size_t>(total * hidden));
  for (size_t i = 0; i < batch.size(); ++i) {
    for (int64_t t = 0; t < rows[i].count; ++t) {
      ref::EmbeddingRow(embed, batch[i].tokens[t], &x[(rows[i].first_row + t) * hidden]);
    }
  }
  std::vector<float>& h = scratch.h;
  std::vector<float>& delta = scratch.delta;
  h.resize(x.size());
  delta.resize(x.size());
  const float eps = static_cast<float>(config_.rms_norm_eps);
  timer.Lap(&ForwardProfile::setup_ns);
  for (size_t l = 0; l < layers.size(); ++l) {
    const DecoderLayer& layer = layers[l];
    ops_->RmsNorm(x.data(), total, hidden, layer.input_norm, eps, zero_centred_norms, h.data());
    RETURN_IF_ERROR(layer.mixer->Forward(h.data(), delta.data(), rows, cache, static_cast<int>(l)));
    timer.Lap(config_.GetLayerType(static_cast<int>(l)) == LayerType::kLinearAttention ? &ForwardProfile::linear_ns
                                                                                         : &ForwardProfile::attention_ns);
    if (on_layer_done) on_layer_done(static_cast<int>(l));
    for (size_t i = 0; i < x.size(); ++i) x[i] += delta[i];
    ops_->RmsNorm(x.data(), total, hidden, layer.post_norm, eps, zero_centred_norms, h.data());
    layer.ffn->Forward(h.data(), total, delta.data());
    for (size_t i = 0; i < x.size(); ++i) x[i] += delta[i];
    timer.Lap(&ForwardProfile::ffn_ns);
  }

  // Final norm and lm_head over the rows that want logits, of every item at once
  // (lm_head is read once per step, not once per sequence).
  std::vector<int64_t> first(batch.size()), wanted(batch.size() + 1, 0);
  for (size_t i = 0; i < batch.size(); ++i) {
    first[i] = batch[i].all_logits ? 0 : rows[i].count - 1;
    wanted[i + 1] = wanted[i] + rows[i].count - first[i];
  }
  std::vector<float>& normed = scratch.normed;
  normed.resize(static_cast<size_t>(wanted.back() * hidden));
  for (size_t i = 0; i < batch.size(); ++i) {
    ops_->RmsNorm(&x[(rows[i].first_row + first[i]) * hidden], wanted[i + 1] - wanted[i], hidden, final_norm, eps,
                  zero_centred_norms, &normed[wanted[i] * hidden]);
  }
  // The caller's vectors are resized, not replaced, so a caller that passes the
  // same ones every step reuses their memory; one item's logits are written
  // there directly, several items' are split from one product.
  logits->resize(batch.size());
  std::vector<float>& all = batch.size() == 1 ? (*logits)[0] : scratch.logits;
  all.resize(static_cast<size_t>(wanted.back() * vocab));
  {
    ProfileScope scope(&ForwardProfile::lm_head_proj_ns, &ForwardProfile::lm_head_bytes);
    lm_head.Apply(*ops_, normed.data(), wanted.back(), all.data());
  }
  for (size_t i = 0; i < batch.size(); ++i) {
    if (batch.size() > 1) (*logits)[i].assign(all.begin() + wanted[i] * vocab, all.begin() + wanted[i + 1] * vocab);
    rows[i].seq->num_tokens += rows[i].count;
  }
  timer.Lap(&ForwardProfile::lm_head_ns);
  scratch.ReleaseLarge();
  return absl::OkStatus();
}

absl::Status LoadLayerNorms(const Weights& weights, const ModelConfig& config, int layer,
                            DecoderLayer& out) {
  std::string p = StrCat("model.layers.", layer, ".");
  ASSIGN_OR_RETURN(out.input_norm, weights.Get(p + "input_layernorm.weight", {config.hidden_size}));
  ASSIGN_OR_RETURN(out.post_norm,
                   weights.Get(p + "post_attention_layernorm.weight", {config.hidden_size}));
  return absl::OkStatus();
}

absl::Status BuildLayers(const Weights& weights, DecoderModel& model, const MoeOptions& moe,
                         const MixerFactory& make_mixer) {
  const ModelConfig& c = model.config();
  for (int l = 0; l < c.num_hidden_layers; ++l) {
    DecoderLayer layer;
    std::string p = StrCat("model.layers.", l, ".");
    RETURN_IF_ERROR(LoadLayerNorms(weights, c, l, layer));
    ASSIGN_OR_RETURN(layer.mixer, make_mixer(l, p));
    if (c.IsMoeLayer(l)) {
      ASSIGN_OR_RETURN(layer.ffn, LoadMoe(c, weights, p + "mlp.", moe, model.ops()));
    } else {
      ASSIGN_OR_RETURN(layer.ffn, LoadDenseMlp(weights, p + "mlp.", c.hidden_size, c.intermediate_size, model.ops()));
    }
    model.layers.push_back(std::move(layer));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<DecoderModel>> LoadModel(const std::string& dir, const Ops& ops) {
  ASSIGN_OR_RETURN(ModelConfig config, LoadModelConfig(dir));
  ASSIGN_OR_RETURN(auto st, SafetensorsModel::Open(dir));
  auto weights = std::make_shared<Weights>(std::move(st));
  auto model = std::make_unique<DecoderModel>(config, weights, ops);
  const int64_t hidden = config.hidden_size, vocab = config.vocab_size;
  ASSIGN_OR_RETURN(model->embed, weights->Get("model.embed_tokens.weight", {vocab, hidden}));
  ASSIGN_OR_RETURN(model->final_norm, weights->Get("model.norm.weight", {hidden}));
  if (config.tie_word_embeddings && !weights->Contains("lm_head.weight")) {
    model->lm_head.weight = model->embed;
  } else {
    ASSIGN_OR_RETURN(model->lm_head.weight, weights->Get("lm_head.weight", {vocab, hidden}));
  }
  switch (config.architecture) {
    case Architecture::kQwen3Moe:
      RETURN_IF_ERROR(BuildQwen3Moe(*weights, *model));
      break;
    case Architecture::kQwen3Next:
      RETURN_IF_ERROR(BuildQwen3Next(*weights, *model));
      break;
    case Architecture::kDeepseekV2:
    case Architecture::kDeepseekV3:
      RETURN_IF_ERROR(BuildDeepseek(*weights, *model));
      break;
    case Architecture::kGlm4Moe:
      RETURN_IF_ERROR(BuildGlm4Moe(*weights, *model));
      break;
  }
  return model;
}

std::string_view ExpertFormatName(ExpertFormat format) {
  switch (format) {
    case ExpertFormat::kInt8: return "int8";
    case ExpertFormat::kInt4: return "int4";
    default: return "bf16";
  }
}

quant::QuantFormat ToQuantFormat(ExpertFormat format) {
  return format == ExpertFormat::kInt8 ? quant::QuantFormat::kInt8 : quant::QuantFormat::kInt4;
}

std::optional<ExpertFormat> ParseExpertFormat(std::string_view name) {
  for (ExpertFormat f : {ExpertFormat::kBf16, ExpertFormat::kInt8, ExpertFormat::kInt4}) {
    if (name == ExpertFormatName(f)) return f;
  }
  return std::nullopt;
}

absl::Status SetExpertFormat(DecoderModel& model, const ExpertOptions& options) {
  std::optional<quant::CacheLock> lock;
  if (!options.cache_dir.empty() && options.format != ExpertFormat::kBf16) {
    ASSIGN_OR_RETURN(quant::CacheLock l, quant::CacheLock::Acquire(options.cache_dir, 24 * 3600.0));
    lock.emplace(std::move(l));
  }
  int total = 0, done = 0;
  for (int l = 0; l < model.config().num_hidden_layers; ++l) total += model.config().IsMoeLayer(l) ? 1 : 0;
  for (size_t l = 0; l < model.layers.size(); ++l) {
    absl::Status s = model.layers[l].ffn->SetExpertFormat(options);
    if (!s.ok()) return absl::Status(s.code(), StrCat("layer ", l, ": ", s.message()));
    if (model.config().IsMoeLayer(static_cast<int>(l)) && options.progress) {
      options.progress(++done, total, model.layers[l].ffn->ExpertBytes());
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<WeightFormats> ParseWeightFormats(const std::string& attention, const std::string& lm_head,
                                                 const std::string& dense_mlp, const std::string& shared_experts) {
  WeightFormats f;
  for (auto [flag, value, out] : {std::tuple{"--attention", &attention, &f.attention},
                                  std::tuple{"--lm-head", &lm_head, &f.lm_head},
                                  std::tuple{"--dense-mlp", &dense_mlp, &f.dense_mlp},
                                  std::tuple{"--shared-experts", &shared_experts, &f.shared_experts}}) {
    auto parsed = ParseExpertFormat(*value);
    if (!parsed) return InvalidArgumentError(flag, " must be bf16, int8 or int4, not '", *value, "'");
    *out = *parsed;
  }
  return f;
}

absl::Status SetWeightFormats(DecoderModel& model, const WeightFormats& formats) {
  WeightFormats f = formats;
  if (f.pool == nullptr) f.pool = &NumaThreadPool::Default();
  RETURN_IF_ERROR(model.lm_head.Quantize(f.lm_head, f.group_size, f.pool, "lm_head"));
  for (size_t l = 0; l < model.layers.size(); ++l) {
    RETURN_IF_ERROR(model.layers[l].mixer->SetWeightFormats(f));
    absl::Status s = model.layers[l].ffn->SetWeightFormats(f);
    if (!s.ok()) return absl::Status(s.code(), StrCat("layer ", l, ": ", s.message()));
  }
  return absl::OkStatus();
}

absl::StatusOr<ExpertOptions> CachedExpertOptions(const std::string& model_dir, const std::string& cache_root,
                                                  ExpertFormat format, int64_t group_size,
                                                  const std::string& gguf_path) {
  ExpertOptions o;
  o.format = format;
  o.group_size = group_size;
  if (!gguf_path.empty()) {
    ASSIGN_OR_RETURN(auto gguf, GgufFile::Open(gguf_path));
    o.gguf = std::move(gguf);
  }
  if (format == ExpertFormat::kBf16) return o;
  ASSIGN_OR_RETURN(o.fingerprint, quant::SourceFingerprint(model_dir));
  o.cache_dir = quant::ExpertCacheDir(
      cache_root, model_dir, ToQuantFormat(format),
      group_size);
  if (o.gguf != nullptr) {
    std::error_code ec;
    const auto size = std::filesystem::file_size(gguf_path, ec);
    const auto mtime = std::filesystem::last_write_time(gguf_path, ec).time_since_epoch().count();
    const std::string name = std::filesystem::path(gguf_path).filename().string();
    uint64_t h = o.fingerprint;
    for (char c : StrCat(name, "/", size, "/", mtime)) h = (h ^ static_cast<uint8_t>(c)) * 1099511628211ull;
    o.fingerprint = h;
    o.cache_dir += "-gguf";
  }
  return o;
}

}  // namespace krasis

namespace krasis {

absl::Status QuantizeExperts(DecoderModel& model, const std::string& model_dir, ExpertFormat format,
                             int64_t group_size, const std::string& cache_root, const std::string& gguf_path) {
  if (format == ExpertFormat::kBf16) return absl::OkStatus();
  ExpertOptions options;
  options.format = format;
  options.group_size = group_size;
  if (!cache_root.empty() || !gguf_path.empty()) {
    ASSIGN_OR_RETURN(options, CachedExpertOptions(model_dir, cache_root, format, group_size, gguf_path));
    if (cache_root.empty()) options.cache_dir.clear();
  }
  return SetExpertFormat(model, options);
}

}  // namespace krasis
