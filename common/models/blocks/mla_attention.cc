// Multi-head Latent Attention (see mla_attention.h) in the absorbed form: the
// cache keeps only the compressed latent and the shared rope key, and the
// per-head up-projections are folded into the query and the output, so a step
// never expands the cached latents. For one sequence and a new token at
// position p (transformers' DeepseekV2Attention / DeepseekV3Attention compute
// the same thing in the plain form, with k_nope and v expanded for every j):
//
//   q        = q_proj(x)  or  q_b_proj(rms(q_a_proj(x)))        [heads, nope + rope]
//   q_nope, q_pe = split(q)                  q_pe = rope(q_pe, p)
//   latent, k_pe = split(kv_a_proj_with_mqa(x))   latent = rms(latent), k_pe = rope(k_pe, p)
//   cache[p] = [latent | k_pe]
//   kv_b_proj per head h = [W_uk[h] (nope x kv_lora) ; W_uv[h] (v x kv_lora)]
//   q_abs[h] = W_uk[h]^T q_nope[h]                                [kv_lora]
//   score_j  = scale * ([q_abs | q_pe] . cache[j])   (MQA: one kv head, dim kv_lora + rope)
//   ctx[h]   = sum_j softmax(score)_j latent_j                    [kv_lora]
//   out      = o_proj(concat_h W_uv[h] ctx[h])
//
// W_uk[h]^T is laid out once at load time (wuk_t_), in kv_b_proj's dtype.
//
// RoPE pairs dims (2i, 2i+1) as DeepSeek's complex form does (V2); V3's
// de-interleave + rotate_half gives the same dot products, so the cache keeps the
// interleaved order either way. A deepseek_v3 config with "rope_interleave": false
// uses rotate_half pairing instead, as transformers does.
//
// scale = (nope + rope)^-0.5, times mscale^2 (mscale = YarnMscale(factor,
// mscale_all_dim)) when rope_scaling has a non-zero mscale_all_dim, as
// transformers' V3 and DeepSeek's own code do (transformers' V2 omits it; real V2
// configs also set mscale_all_dim, so we follow DeepSeek).
#include "common/models/blocks/mla_attention.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <utility>
#include <vector>

#include "common/models/blocks/projection.h"
#include "common/models/model.h"
#include "common/models/rope.h"
#include "common/models/scratch.h"
#include "common/status.h"

namespace krasis {
namespace {

// transformers builds q_a_layernorm and kv_a_layernorm with the RMSNorm default
// eps (1e-6), not config.rms_norm_eps; DeepSeek's own code does the same.
constexpr float kLatentNormEps = 1e-6f;

// deepseek_v3's "rope_interleave" (default true); deepseek_v2 is always interleaved.
bool RopeInterleaved(const ModelConfig& config) {
  if (config.architecture != Architecture::kDeepseekV3) return true;
  const nlohmann::json* j = &config.raw;
  if (j->is_object() && j->contains("text_config") && (*j)["text_config"].is_object() &&
      (*j)["text_config"].contains("rope_interleave")) {
    j = &(*j)["text_config"];
  }
  if (j->is_object() && j->contains("rope_interleave") && (*j)["rope_interleave"].is_boolean()) {
    return (*j)["rope_interleave"].get<bool>();
  }
  return true;
}

class MlaAttention final : public Mixer {
 public:
  explicit MlaAttention(const Ops& ops) : ops_(&ops) {}
  std::optional<MixerDesc> Describe() const override {
    MixerDesc d;
    d.kind = MixerDesc::Kind::kMla;
    MlaDesc& m = d.mla;
    m.hidden = hidden_, m.heads = heads_, m.q_lora = q_lora_, m.kv_lora = kv_lora_;
    m.nope = nope_, m.rope_dim = rope_dim_, m.v_dim = v_dim_, m.scale = scale_, m.latent_eps = kLatentNormEps;
    m.rope = &rope_;
    m.q = q_proj_.weight;
    m.q_a = q_a_proj_.weight, m.q_a_bias = q_a_proj_.bias, m.q_a_norm = q_a_norm_, m.q_b = q_b_proj_.weight;
    m.kv_a = kv_a_proj_.weight, m.kv_a_bias = kv_a_proj_.bias, m.kv_a_norm = kv_a_norm_;
    m.kv_b = kv_b_proj_;
    m.o = o_proj_.weight, m.o_bias = o_proj_.bias;
    return d;
  }

  int64_t KvFloatsPerToken() const override { return kv_lora_ + rope_dim_; }

  absl::Status Forward(const float* x, float* out, std::span<const SequenceRows> rows,
                       PagedKvCache& cache, int layer) const override;

 private:
  friend absl::StatusOr<std::unique_ptr<Mixer>> krasis::LoadMlaAttention(const ModelConfig&,
                                                                         const Weights&,
                                                                         const std::string&,
                                                                         const Ops&);


  absl::Status SetWeightFormats(const WeightFormats& formats) override {
    for (auto [p, name] : {std::pair{&q_proj_, "q_proj"}, std::pair{&q_a_proj_, "q_a_proj"},
                           std::pair{&q_b_proj_, "q_b_proj"}, std::pair{&kv_a_proj_, "kv_a_proj_with_mqa"},
                           std::pair{&o_proj_, "o_proj"}}) {
      if (p->weight.data == nullptr) continue;
      RETURN_IF_ERROR(p->Quantize(formats.attention, formats.group_size, formats.pool, name));
    }
    return absl::OkStatus();
  }

  const Ops* ops_;
  std::string prefix_;  // for error messages
  int64_t hidden_ = 0;
  int64_t heads_ = 0;
  int64_t q_lora_ = 0;  // 0: no q compression (q_proj)
  int64_t kv_lora_ = 0;
  int64_t nope_ = 0;      // qk_nope_head_dim
  int64_t rope_dim_ = 0;  // qk_rope_head_dim
  int64_t v_dim_ = 0;     // v_head_dim
  int64_t qk_dim_ = 0;    // nope + rope
  float scale_ = 1.0f;
  Rope rope_;

  Projection q_proj_;         // [heads * qk_dim, hidden]  (q_lora_ == 0)
  Projection q_a_proj_;       // [q_lora, hidden] (+ optional bias)  (q_lora_ > 0)
  TensorView q_a_norm_;       // [q_lora]
  Projection q_b_proj_;       // [heads * qk_dim, q_lora]
  Projection kv_a_proj_;      // [kv_lora + rope, hidden] (+ optional bias)
  TensorView kv_a_norm_;      // [kv_lora]
  TensorView kv_b_proj_;      // [heads * (nope + v), kv_lora]: read per head (absorbed), kept as stored
  Projection o_proj_;         // [hidden, heads * v] (+ optional bias)
  std::vector<std::byte> wuk_t_;  // [heads, kv_lora, nope]: W_uk[h]^T, kv_b_proj's dtype

  // Views of head h's W_uk^T [kv_lora, nope] and W_uv [v, kv_lora].
  TensorView WukT(int64_t h) const {
    const size_t bytes = static_cast<size_t>(kv_lora_ * nope_) * DTypeSize(kv_b_proj_.dtype);
    return TensorView{kv_b_proj_.dtype, {kv_lora_, nope_}, wuk_t_.data() + h * bytes};
  }
  TensorView Wuv(int64_t h) const {
    const size_t row = static_cast<size_t>(kv_lora_) * DTypeSize(kv_b_proj_.dtype);
    return TensorView{kv_b_proj_.dtype, {v_dim_, kv_lora_},
                      kv_b_proj_.data + static_cast<size_t>(h * (nope_ + v_dim_) + nope_) * row};
  }
};

absl::Status MlaAttention::Forward(const float* x, float* out, std::span<const SequenceRows> rows,
                                   PagedKvCache& cache, int layer) const {
  for (const SequenceRows& r : rows) {
    if (r.seq == nullptr || r.count < 0 || r.start_pos < 0 || r.first_row < 0) {
      return InvalidArgumentError(prefix_, ": bad sequence rows (first_row ", r.first_row, ", count ", r.count,
                                  ", start_pos ", r.start_pos, ")");
    }
    const int64_t capacity = static_cast<int64_t>(r.seq->block_table.size()) * cache.block_size();
    if (capacity < r.start_pos + r.count) {
      return FailedPreconditionError(prefix_, ": sequence has cache room for ", capacity, " tokens but needs ",
                                     r.start_pos + r.count, " (Reserve first)");
    }
  }
  const int64_t n = BatchRows(rows);
  if (n == 0) return absl::OkStatus();
  // Everything but the cache and the attention itself runs over all rows of
  // the batch at once, so each weight is read once per step.

  // Queries [n, heads, qk_dim] and the compressed KV [n, kv_lora + rope]: the
  // projections of x in one dispatch when quantized.
  // Buffers from this thread's scratch (a decode step allocates nothing).
  thread_local struct {
    std::vector<float> q, kva, qa, latent, q_mqa, ctx, attn;
  } scratch;
  const int64_t kva_dim = kv_lora_ + rope_dim_;
  std::vector<float>& q = scratch.q;
  std::vector<float>& kva = scratch.kva;
  q.resize(static_cast<size_t>(n * heads_ * qk_dim_));
  kva.resize(static_cast<size_t>(n * kva_dim));
  if (q_lora_ > 0) {
    std::vector<float>& qa = scratch.qa;
    qa.resize(static_cast<size_t>(n * q_lora_));
    const Projection* in[] = {&q_a_proj_, &kv_a_proj_};
    float* ys[] = {qa.data(), kva.data()};
    ApplyAll(*ops_, in, x, n, ys);
    ops_->RmsNorm(qa.data(), n, q_lora_, q_a_norm_, kLatentNormEps, false, qa.data());
    q_b_proj_.Apply(*ops_, qa.data(), n, q.data());
  } else {
    const Projection* in[] = {&q_proj_, &kv_a_proj_};
    float* ys[] = {q.data(), kva.data()};
    ApplyAll(*ops_, in, x, n, ys);
  }

  // The latent normed, k_pe roped, both into the cache.
  std::vector<float>& latent = scratch.latent;
  latent.resize(static_cast<size_t>(n * kv_lora_));
  for (int64_t i = 0; i < n; ++i) {
    std::memcpy(&latent[i * kv_lora_], &kva[i * kva_dim], sizeof(float) * kv_lora_);
  }
  ops_->RmsNorm(latent.data(), n, kv_lora_, kv_a_norm_, kLatentNormEps, false, latent.data());
  for (const SequenceRows& r : rows) {
    for (int64_t i = r.first_row; i < r.first_row + r.count; ++i) {
      const int64_t pos = r.start_pos + (i - r.first_row);
      float* k_pe = &kva[i * kva_dim + kv_lora_];
      const std::vector<float> cos_sin = rope_.Table(pos, 1);  // for k_pe and every head's q_pe
      rope_.Apply(k_pe, 1, rope_dim_, cos_sin.data());
      r.seq->StoreRow(cache, layer, pos, 0, &latent[i * kv_lora_], kv_lora_);
      r.seq->StoreRow(cache, layer, pos, kv_lora_, k_pe, rope_dim_);
      rope_.Apply(&q[i * heads_ * qk_dim_ + nope_], heads_, qk_dim_, cos_sin.data());
    }
  }

  // Absorbed query [n, heads, kv_lora + rope]: W_uk^T q_nope, then q_pe; it
  // meets the cached [latent | k_pe] rows, kva_dim wide.
  const int64_t mqa_dim = kva_dim;
  std::vector<float>& q_mqa = scratch.q_mqa;
  std::vector<float>& ctx = scratch.ctx;
  std::vector<float>& attn = scratch.attn;
  q_mqa.resize(static_cast<size_t>(n * heads_ * mqa_dim));
  ctx.resize(static_cast<size_t>(n * heads_ * kv_lora_));
  attn.resize(static_cast<size_t>(n * heads_ * v_dim_));
  {
    ProfileScope scope(&ForwardProfile::absorbed_ns, &ForwardProfile::absorbed_bytes);
    ops_->HeadsMatMul(q.data(), n, heads_, qk_dim_, [&](int64_t h) { return WukT(h); }, q_mqa.data(), mqa_dim);
  }
  for (int64_t i = 0; i < n * heads_; ++i) {
    std::copy(&q[i * qk_dim_ + nope_], &q[(i + 1) * qk_dim_], &q_mqa[i * mqa_dim + kv_lora_]);
  }

  for (const SequenceRows& r : rows) {
    if (r.count == 0) continue;
    AttentionArgs args = PagedAttentionArgs(cache, r, layer);
    args.q = &q_mqa[r.first_row * heads_ * mqa_dim];
    args.heads = heads_;
    args.kv_heads = 1;
    args.head_dim = mqa_dim;
    args.v_dim = kv_lora_;
    args.scale = scale_;
    args.out = &ctx[r.first_row * heads_ * kv_lora_];
    ProfileScope scope(&ForwardProfile::attention_core_ns, nullptr);
    ops_->Attention(args);
  }

  // attn[i, h] = W_uv[h] ctx[i, h].
  {
    ProfileScope scope(&ForwardProfile::absorbed_ns, &ForwardProfile::absorbed_bytes);
    ops_->HeadsMatMul(ctx.data(), n, heads_, kv_lora_, [&](int64_t h) { return Wuv(h); }, attn.data(), v_dim_);
  }

  o_proj_.Apply(*ops_, attn.data(), n, out);
  ReleaseLargeScratch({&q, &kva, &scratch.qa, &latent, &q_mqa, &ctx, &attn});
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::unique_ptr<Mixer>> LoadMlaAttention(const ModelConfig& config,
                                                        const Weights& weights,
                                                        const std::string& prefix,
                                                        const Ops& ops) {
  auto need = [&](const std::optional<int64_t>& v, const char* key) -> absl::StatusOr<int64_t> {
    if (!v.has_value() || *v <= 0) {
      return InvalidArgumentError(config.source, ": ", prefix, " is multi-head latent attention but ",
                                  key, " is ", v.has_value() ? StrCat(*v) : "missing");
    }
    return *v;
  };
  auto m = std::make_unique<MlaAttention>(ops);
  m->prefix_ = prefix;
  m->hidden_ = config.hidden_size;
  m->heads_ = config.num_attention_heads;
  if (m->hidden_ <= 0 || m->heads_ <= 0) {
    return InvalidArgumentError(config.source, ": hidden_size ", m->hidden_,
                                " and num_attention_heads ", m->heads_, " must be positive");
  }
  ASSIGN_OR_RETURN(m->kv_lora_, need(config.kv_lora_rank, "kv_lora_rank"));
  ASSIGN_OR_RETURN(m->nope_, need(config.qk_nope_head_dim, "qk_nope_head_dim"));
  ASSIGN_OR_RETURN(m->rope_dim_, need(config.qk_rope_head_dim, "qk_rope_head_dim"));
  ASSIGN_OR_RETURN(m->v_dim_, need(config.v_head_dim, "v_head_dim"));
  if (config.q_lora_rank.has_value()) {
    ASSIGN_OR_RETURN(m->q_lora_, need(config.q_lora_rank, "q_lora_rank"));
  }
  m->qk_dim_ = m->nope_ + m->rope_dim_;
  const int64_t hidden = m->hidden_, heads = m->heads_, q_lora = m->q_lora_;
  const int64_t kv_lora = m->kv_lora_, rope = m->rope_dim_, qk = m->qk_dim_;

  // Softmax scale, with DeepSeek's YaRN mscale^2 correction.
  double scale = 1.0 / std::sqrt(static_cast<double>(qk));
  if (config.rope_scaling.has_value()) {
    const double mscale_all_dim = config.rope_scaling->mscale_all_dim.value_or(0.0);
    if (mscale_all_dim != 0.0) {
      const double mscale = YarnMscale(config.rope_scaling->factor.value_or(1.0), mscale_all_dim);
      scale *= mscale * mscale;
    }
  }
  m->scale_ = static_cast<float>(scale);

  auto rope_or = MakeRope(config, rope, RopeInterleaved(config));
  if (!rope_or.ok()) return Annotate(rope_or.status(), prefix);
  m->rope_ = *std::move(rope_or);

  auto get = [&](const std::string& name, const Shape& shape) {
    return weights.Get(prefix + name, shape);
  };
  auto get_optional = [&](const std::string& name, const Shape& shape) {
    return weights.GetOptional(prefix + name, shape);
  };
  if (q_lora > 0) {
    ASSIGN_OR_RETURN(m->q_a_proj_.weight, get("q_a_proj.weight", {q_lora, hidden}));
    ASSIGN_OR_RETURN(m->q_a_proj_.bias, get_optional("q_a_proj.bias", {q_lora}));
    ASSIGN_OR_RETURN(m->q_a_norm_, get("q_a_layernorm.weight", {q_lora}));
    ASSIGN_OR_RETURN(m->q_b_proj_.weight, get("q_b_proj.weight", {heads * qk, q_lora}));
  } else {
    ASSIGN_OR_RETURN(m->q_proj_.weight, get("q_proj.weight", {heads * qk, hidden}));
  }
  ASSIGN_OR_RETURN(m->kv_a_proj_.weight, get("kv_a_proj_with_mqa.weight", {kv_lora + rope, hidden}));
  ASSIGN_OR_RETURN(m->kv_a_proj_.bias, get_optional("kv_a_proj_with_mqa.bias", {kv_lora + rope}));
  ASSIGN_OR_RETURN(m->kv_a_norm_, get("kv_a_layernorm.weight", {kv_lora}));
  ASSIGN_OR_RETURN(m->kv_b_proj_,
                   get("kv_b_proj.weight", {heads * (m->nope_ + m->v_dim_), kv_lora}));
  ASSIGN_OR_RETURN(m->o_proj_.weight, get("o_proj.weight", {hidden, heads * m->v_dim_}));
  // W_uk[h]^T for the absorbed query.
  {
    const size_t es = DTypeSize(m->kv_b_proj_.dtype);
    const int64_t nope = m->nope_, rows_per_head = m->nope_ + m->v_dim_;
    m->wuk_t_.resize(static_cast<size_t>(heads * kv_lora * nope) * es);
    for (int64_t h = 0; h < heads; ++h) {
      for (int64_t d = 0; d < nope; ++d) {
        const std::byte* src = m->kv_b_proj_.data + static_cast<size_t>((h * rows_per_head + d) * kv_lora) * es;
        for (int64_t c = 0; c < kv_lora; ++c) {
          std::memcpy(&m->wuk_t_[static_cast<size_t>((h * kv_lora + c) * nope + d) * es], src + c * es, es);
        }
      }
    }
  }
  ASSIGN_OR_RETURN(m->o_proj_.bias, get_optional("o_proj.bias", {hidden}));
  return std::unique_ptr<Mixer>(std::move(m));
}

}  // namespace krasis
