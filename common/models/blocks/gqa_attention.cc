// Grouped-query attention (see gqa_attention.h). The cache slot of a token holds
// k [kv_heads, head_dim] then v [kv_heads, head_dim]; keys are stored after QK
// norm and RoPE, so attention reads them as they are.
#include "common/models/blocks/gqa_attention.h"

#include <algorithm>
#include <cmath>
#include <utility>
#include <vector>

#include "common/kernels/cpu_ops.h"
#include "common/kernels/reference.h"
#include "common/models/blocks/projection.h"
#include "common/models/model.h"
#include "common/status.h"

namespace krasis {
namespace {

class GqaAttention final : public Mixer {
 public:
  int64_t KvFloatsPerToken() const override { return 2 * kv_heads_ * head_dim_; }
  absl::Status Forward(const float* x, float* out, std::span<const SequenceRows> rows,
                       PagedKvCache& cache, int layer) const override;

  const Ops* ops = nullptr;
  GqaOptions options;
  int64_t hidden_ = 0, heads_ = 0, kv_heads_ = 0, head_dim_ = 0;
  float eps_ = 1e-6f;
  Rope rope;
  Projection q_proj, k_proj, v_proj, o_proj;  // [heads*hd(*2 with gate), hidden], [kvh*hd, hidden] x2, [hidden, heads*hd]
  TensorView q_norm, k_norm;                  // [hd] (optional)

  absl::Status SetWeightFormats(const WeightFormats& formats) override {
    for (auto [p, name] : {std::pair{&q_proj, "q_proj"}, std::pair{&k_proj, "k_proj"}, std::pair{&v_proj, "v_proj"},
                           std::pair{&o_proj, "o_proj"}}) {
      RETURN_IF_ERROR(p->Quantize(formats.attention, formats.group_size, formats.pool, name));
    }
    return absl::OkStatus();
  }

  std::optional<MixerDesc> Describe() const override {
    MixerDesc d;
    d.kind = MixerDesc::Kind::kGqa;
    GqaDesc& g = d.gqa;
    g.hidden = hidden_, g.heads = heads_, g.kv_heads = kv_heads_, g.head_dim = head_dim_, g.eps = eps_;
    g.qk_norm = options.qk_norm, g.zero_centred_qk_norm = options.zero_centred_qk_norm;
    g.output_gate = options.output_gate;
    g.rope = &rope;
    g.q = q_proj.weight, g.k = k_proj.weight, g.v = v_proj.weight, g.o = o_proj.weight;
    g.q_bias = q_proj.bias, g.k_bias = k_proj.bias, g.v_bias = v_proj.bias;
    g.q_norm = q_norm, g.k_norm = k_norm;
    return d;
  }

  friend absl::StatusOr<std::unique_ptr<Mixer>> LoadGqaAttention(const ModelConfig&, const Weights&,
                                                                 const std::string&,
                                                                 const GqaOptions&, const Ops&);
};

absl::Status GqaAttention::Forward(const float* x, float* out, std::span<const SequenceRows> rows,
                                   PagedKvCache& cache, int layer) const {
  const int64_t q_width = heads_ * head_dim_ * (options.output_gate ? 2 : 1);
  const int64_t kv_width = kv_heads_ * head_dim_;
  const float scale = 1.0f / std::sqrt(static_cast<float>(head_dim_));
  // The projections run over every row of the batch at once (each weight is
  // read once per step); only RoPE, the cache and attention are per sequence.
  const int64_t total = BatchRows(rows);
  std::vector<float> q(static_cast<size_t>(total * q_width));
  std::vector<float> k(static_cast<size_t>(total * kv_width));
  std::vector<float> v(static_cast<size_t>(total * kv_width));
  const Projection* qkv[] = {&q_proj, &k_proj, &v_proj};
  float* ys[] = {q.data(), k.data(), v.data()};
  ApplyAll(*ops, qkv, x, total, ys);
  // Split the gate out of q: per head, [query(head_dim), gate(head_dim)].
  std::vector<float> query(static_cast<size_t>(total * heads_ * head_dim_));
  std::vector<float> gate;
  if (options.output_gate) gate.resize(query.size());
  for (int64_t t = 0; t < total; ++t) {
    for (int64_t hh = 0; hh < heads_; ++hh) {
      const float* src = &q[t * q_width + hh * head_dim_ * (options.output_gate ? 2 : 1)];
      std::copy(src, src + head_dim_, &query[(t * heads_ + hh) * head_dim_]);
      if (options.output_gate) {
        std::copy(src + head_dim_, src + 2 * head_dim_, &gate[(t * heads_ + hh) * head_dim_]);
      }
    }
  }
  if (options.qk_norm) {
    ops->RmsNorm(query.data(), total * heads_, head_dim_, q_norm, eps_, options.zero_centred_qk_norm, query.data());
    ops->RmsNorm(k.data(), total * kv_heads_, head_dim_, k_norm, eps_, options.zero_centred_qk_norm, k.data());
  }
  std::vector<float> attn(static_cast<size_t>(total * heads_ * head_dim_));
  for (const SequenceRows& r : rows) {
    for (int64_t t = r.first_row; t < r.first_row + r.count; ++t) {
      const int64_t pos = r.start_pos + (t - r.first_row);
      rope.Apply(&query[t * heads_ * head_dim_], heads_, head_dim_, pos);
      rope.Apply(&k[t * kv_width], kv_heads_, head_dim_, pos);
      r.seq->StoreRow(cache, layer, pos, 0, &k[t * kv_width], kv_width);
      r.seq->StoreRow(cache, layer, pos, kv_width, &v[t * kv_width], kv_width);
    }
    AttentionArgs args = PagedAttentionArgs(cache, r, layer);
    args.q = &query[r.first_row * heads_ * head_dim_];
    args.heads = heads_;
    args.kv_heads = kv_heads_;
    args.head_dim = args.v_dim = head_dim_;
    args.scale = scale;
    args.k_offset = 0;
    args.v_offset = kv_width;
    args.out = &attn[r.first_row * heads_ * head_dim_];
    ProfileScope scope(&ForwardProfile::attention_core_ns, nullptr);
    ops->Attention(args);
  }
  if (options.output_gate) {
    cpu::SigmoidMul(gate.data(), static_cast<int64_t>(attn.size()), attn.data());
  }
  o_proj.Apply(*ops, attn.data(), total, out);
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::unique_ptr<Mixer>> LoadGqaAttention(const ModelConfig& config,
                                                        const Weights& weights,
                                                        const std::string& prefix,
                                                        const GqaOptions& options, const Ops& ops) {
  auto a = std::make_unique<GqaAttention>();
  a->ops = &ops;
  a->options = options;
  a->hidden_ = config.hidden_size;
  a->heads_ = config.num_attention_heads;
  a->kv_heads_ = config.num_key_value_heads;
  a->head_dim_ = config.head_dim;
  a->eps_ = static_cast<float>(config.rms_norm_eps);
  if (a->kv_heads_ <= 0 || a->heads_ % a->kv_heads_ != 0) {
    return InvalidArgumentError(config.source, ": num_attention_heads ", a->heads_,
                                " is not a multiple of num_key_value_heads ", a->kv_heads_);
  }
  const int64_t hd = a->head_dim_, h = a->hidden_;
  const int64_t q_out = a->heads_ * hd * (options.output_gate ? 2 : 1);
  ASSIGN_OR_RETURN(a->q_proj.weight, weights.Get(prefix + "q_proj.weight", {q_out, h}));
  ASSIGN_OR_RETURN(a->k_proj.weight, weights.Get(prefix + "k_proj.weight", {a->kv_heads_ * hd, h}));
  ASSIGN_OR_RETURN(a->v_proj.weight, weights.Get(prefix + "v_proj.weight", {a->kv_heads_ * hd, h}));
  ASSIGN_OR_RETURN(a->o_proj.weight, weights.Get(prefix + "o_proj.weight", {h, a->heads_ * hd}));
  if (config.attention_bias) {
    ASSIGN_OR_RETURN(a->q_proj.bias, weights.Get(prefix + "q_proj.bias", {q_out}));
    ASSIGN_OR_RETURN(a->k_proj.bias, weights.Get(prefix + "k_proj.bias", {a->kv_heads_ * hd}));
    ASSIGN_OR_RETURN(a->v_proj.bias, weights.Get(prefix + "v_proj.bias", {a->kv_heads_ * hd}));
  }
  if (options.qk_norm) {
    ASSIGN_OR_RETURN(a->q_norm, weights.Get(prefix + "q_norm.weight", {hd}));
    ASSIGN_OR_RETURN(a->k_norm, weights.Get(prefix + "k_norm.weight", {hd}));
  }
  ASSIGN_OR_RETURN(a->rope, MakeRope(config, config.RotaryDim(), options.interleaved_rope));
  return std::unique_ptr<Mixer>(std::move(a));
}

}  // namespace krasis
