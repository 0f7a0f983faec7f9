// Gated DeltaNet linear attention (see gated_deltanet.h).
//
// Per token, following transformers' Qwen3NextGatedDeltaNet:
//   1. qkvz = in_proj_qkvz(x), ba = in_proj_ba(x). Both are laid out per key-head
//      group: qkvz as [nk][q dk | k dk | v r*dv | z r*dv] and ba as [nk][b r | a r],
//      r = nv / nk (fix_query_key_value_ordering). They are regrouped into
//      mixed_qkv = [q (nk*dk) | k (nk*dk) | v (nv*dv)], z [nv*dv], b [nv], a [nv].
//   2. mixed_qkv goes through the causal depthwise conv1d (kernel K, its left
//      context the conv state: the previous K-1 inputs, zeros at the start) and SiLU.
//   3. beta = sigmoid(b); g = -exp(A_log) * softplus(a + dt_bias).
//   4. q and k are L2-normalised per head (eps 1e-6), q scaled by dk^-1/2, and
//      value head h reads key head h / r (repeat_interleave).
//   5. Gated delta rule, per value head with state S [dk, dv]:
//        S *= exp(g); delta = (v - k^T S) * beta; S += k delta^T; o = q^T S.
//   6. o is RMS-normalised per value head over dv, multiplied by norm.weight (plain
//      w, not 1 + w: Qwen3NextRMSNormGated) and by silu(z), then out_proj.
#include "common/models/blocks/gated_deltanet.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "common/kernels/cpu_ops.h"
#include "common/kernels/reference.h"
#include "common/models/blocks/projection.h"
#include "common/status.h"

namespace krasis {
namespace {

constexpr float kL2NormEps = 1e-6f;  // l2norm(..., eps=1e-6) in transformers

struct Dims {
  int64_t hidden = 0;
  int64_t nk = 0;          // linear_num_key_heads
  int64_t nv = 0;          // linear_num_value_heads
  int64_t dk = 0;          // linear_key_head_dim
  int64_t dv = 0;          // linear_value_head_dim
  int64_t kernel = 0;      // linear_conv_kernel_dim
  int64_t ratio = 0;       // nv / nk
  int64_t key_dim = 0;     // nk * dk
  int64_t value_dim = 0;   // nv * dv
  int64_t conv_dim = 0;    // 2 * key_dim + value_dim
  int64_t qkvz_dim = 0;    // 2 * key_dim + 2 * value_dim
  int64_t group_dim = 0;   // one key-head group of qkvz: 2 * dk + 2 * ratio * dv
  int64_t conv_state = 0;  // conv_dim * (kernel - 1)
  int64_t recurrent = 0;   // nv * dk * dv
};

absl::StatusOr<int64_t> RequirePositive(const ModelConfig& config,
                                        const std::optional<int64_t>& value,
                                        const char* field) {
  if (!value.has_value()) {
    return InvalidArgumentError(config.source, ": Gated DeltaNet (linear_attention) layer needs '",
                                field, "' in the config");
  }
  if (*value <= 0) {
    return InvalidArgumentError(config.source, ": '", field, "' must be positive, got ", *value);
  }
  return *value;
}

absl::StatusOr<Dims> MakeDims(const ModelConfig& config) {
  Dims d;
  d.hidden = config.hidden_size;
  if (d.hidden <= 0) {
    return InvalidArgumentError(config.source, ": 'hidden_size' must be positive, got ", d.hidden);
  }
  ASSIGN_OR_RETURN(d.nk, RequirePositive(config, config.linear_num_key_heads, "linear_num_key_heads"));
  ASSIGN_OR_RETURN(d.nv,
                   RequirePositive(config, config.linear_num_value_heads, "linear_num_value_heads"));
  ASSIGN_OR_RETURN(d.dk, RequirePositive(config, config.linear_key_head_dim, "linear_key_head_dim"));
  ASSIGN_OR_RETURN(d.dv,
                   RequirePositive(config, config.linear_value_head_dim, "linear_value_head_dim"));
  ASSIGN_OR_RETURN(d.kernel,
                   RequirePositive(config, config.linear_conv_kernel_dim, "linear_conv_kernel_dim"));
  if (d.nv % d.nk != 0) {
    return InvalidArgumentError(config.source, ": 'linear_num_value_heads' (", d.nv,
                                ") must be a multiple of 'linear_num_key_heads' (", d.nk, ")");
  }
  d.ratio = d.nv / d.nk;
  d.key_dim = d.nk * d.dk;
  d.value_dim = d.nv * d.dv;
  d.conv_dim = 2 * d.key_dim + d.value_dim;
  d.qkvz_dim = 2 * d.key_dim + 2 * d.value_dim;
  d.group_dim = 2 * d.dk + 2 * d.ratio * d.dv;
  d.conv_state = d.conv_dim * (d.kernel - 1);
  d.recurrent = d.nv * d.dk * d.dv;
  return d;
}

class GatedDeltaNet final : public Mixer {
 public:
  GatedDeltaNet(const Dims& dims, float norm_eps, const Ops& ops)
      : d_(dims), norm_eps_(norm_eps), ops_(&ops) {}
  std::optional<MixerDesc> Describe() const override {
    MixerDesc d;
    d.kind = MixerDesc::Kind::kGatedDeltaNet;
    GdnDesc& g = d.gdn;
    g.hidden = d_.hidden, g.nk = d_.nk, g.nv = d_.nv, g.dk = d_.dk, g.dv = d_.dv, g.kernel = d_.kernel;
    g.norm_eps = norm_eps_;
    g.in_qkvz = in_proj_qkvz_.weight;
    g.in_ba = in_proj_ba_.weight;
    g.conv_weight = conv_weight_;
    g.conv_bias = conv_bias_;
    g.dt_bias = dt_bias_;
    g.neg_a = neg_a_;
    g.norm = norm_;
    g.out = out_proj_.weight;
    return d;
  }

  absl::Status Load(const Weights& weights, const std::string& prefix) {
    ASSIGN_OR_RETURN(in_proj_qkvz_.weight,
                     weights.Get(prefix + "in_proj_qkvz.weight", {d_.qkvz_dim, d_.hidden}));
    ASSIGN_OR_RETURN(in_proj_ba_.weight, weights.Get(prefix + "in_proj_ba.weight", {2 * d_.nv, d_.hidden}));
    ASSIGN_OR_RETURN(TensorView conv_w,
                     weights.Get(prefix + "conv1d.weight", {d_.conv_dim, 1, d_.kernel}));
    conv_weight_ = ToFloatVector(conv_w);
    ASSIGN_OR_RETURN(TensorView conv_b, weights.GetOptional(prefix + "conv1d.bias", {d_.conv_dim}));
    if (conv_b.data != nullptr) conv_bias_ = ToFloatVector(conv_b);
    ASSIGN_OR_RETURN(TensorView dt_bias, weights.Get(prefix + "dt_bias", {d_.nv}));
    dt_bias_ = ToFloatVector(dt_bias);
    ASSIGN_OR_RETURN(TensorView a_log, weights.Get(prefix + "A_log", {d_.nv}));
    neg_a_ = ToFloatVector(a_log);
    for (float& v : neg_a_) v = -std::exp(v);  // -A_log.float().exp()
    ASSIGN_OR_RETURN(norm_, weights.Get(prefix + "norm.weight", {d_.dv}));
    ASSIGN_OR_RETURN(out_proj_.weight, weights.Get(prefix + "out_proj.weight", {d_.hidden, d_.value_dim}));
    return absl::OkStatus();
  }

  int64_t KvFloatsPerToken() const override { return 0; }

  void InitSequence(SequenceState& seq, int layer) const override {
    if (seq.linear.size() <= static_cast<size_t>(layer)) seq.linear.resize(static_cast<size_t>(layer) + 1);
    LinearState& state = seq.linear[layer];
    state.conv.assign(static_cast<size_t>(d_.conv_state), 0.0f);
    state.recurrent.assign(static_cast<size_t>(d_.recurrent), 0.0f);
  }

  absl::Status Forward(const float* x, float* out, std::span<const SequenceRows> rows,
                       PagedKvCache& cache, int layer) const override {
    (void)cache;  // all state lives in the sequence
    // Check every sequence before touching any state, so a bad call changes nothing.
    for (const SequenceRows& r : rows) {
      if (r.seq == nullptr || r.count < 0 || r.first_row < 0) {
        return InvalidArgumentError("Gated DeltaNet layer ", layer,
                                    ": bad batch entry (null sequence or negative rows)");
      }
      if (layer < 0 || r.seq->linear.size() <= static_cast<size_t>(layer) ||
          static_cast<int64_t>(r.seq->linear[layer].conv.size()) != d_.conv_state ||
          static_cast<int64_t>(r.seq->linear[layer].recurrent.size()) != d_.recurrent) {
        return FailedPreconditionError("Gated DeltaNet layer ", layer,
                                       ": sequence state not initialised (InitSequence)");
      }
    }
    // Projections over every row of the batch at once (each weight read once
    // per step); the recurrence per sequence.
    const int64_t total = BatchRows(rows);
    std::vector<float> qkvz(static_cast<size_t>(total * d_.qkvz_dim));
    std::vector<float> ba(static_cast<size_t>(total * 2 * d_.nv));
    const Projection* in[] = {&in_proj_qkvz_, &in_proj_ba_};
    float* ys[] = {qkvz.data(), ba.data()};
    ApplyAll(*ops_, in, x, total, ys);
    std::vector<float> core(static_cast<size_t>(total * d_.value_dim));
    // The recurrence: key-head groups are independent (their q/k channels, the
    // v channels and recurrent state of their value heads), tokens within a
    // group are sequential, so one dispatch covers every (sequence, group) pair.
    std::vector<std::pair<const SequenceRows*, int64_t>> work;
    for (const SequenceRows& r : rows) {
      for (int64_t g = 0; r.count > 0 && g < d_.nk; ++g) work.emplace_back(&r, g);
    }
    {
      ProfileScope scope(&ForwardProfile::recurrence_ns, nullptr);
      ops_->ParallelFor(static_cast<int64_t>(work.size()), [&](int64_t w0, int64_t w1) {
        for (int64_t w = w0; w < w1; ++w) {
          const auto [r, g] = work[static_cast<size_t>(w)];
          RunGroup(&qkvz[r->first_row * d_.qkvz_dim], &ba[r->first_row * 2 * d_.nv], r->count,
                   r->seq->linear[layer], g, &core[r->first_row * d_.value_dim]);
        }
      });
    }
    out_proj_.Apply(*ops_, core.data(), total, out);
    return absl::OkStatus();
  }

 private:
  // Runs key-head group g of one sequence over `count` consecutive tokens, from
  // their projections qkvz [count, qkvz_dim] and ba [count, 2 nv] (laid out per
  // group, see the top), into the group's value heads of core [count, value_dim]
  // (after the gated norm: ready for out_proj).
  void RunGroup(const float* qkvz, const float* ba, int64_t count, LinearState& state, int64_t g,
                float* core) const {
    const int64_t rdv = d_.ratio * d_.dv;
    std::vector<float> q(static_cast<size_t>(d_.dk)), k(static_cast<size_t>(d_.dk)), v(static_cast<size_t>(rdv));
    const float scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(d_.dk)));
    for (int64_t t = 0; t < count; ++t) {
      const float* src = qkvz + t * d_.qkvz_dim + g * d_.group_dim;
      const float* src_ba = ba + t * 2 * d_.nv + g * 2 * d_.ratio;
      // The group's channels of mixed_qkv through the conv and SiLU.
      Conv(src, g * d_.dk, d_.dk, state.conv.data(), q.data());
      Conv(src + d_.dk, d_.key_dim + g * d_.dk, d_.dk, state.conv.data(), k.data());
      Conv(src + 2 * d_.dk, 2 * d_.key_dim + g * rdv, rdv, state.conv.data(), v.data());
      ref::L2Normalize(q.data(), d_.dk, kL2NormEps);
      ref::L2Normalize(k.data(), d_.dk, kL2NormEps);
      for (float& x : q) x *= scale;
      const float* z = src + 2 * d_.dk + rdv;
      for (int64_t j = 0; j < d_.ratio; ++j) {
        const int64_t h = g * d_.ratio + j;
        float* o = core + t * d_.value_dim + h * d_.dv;
        DeltaRule(q.data(), k.data(), v.data() + j * d_.dv, src_ba[j], src_ba[d_.ratio + j], h,
                  state.recurrent.data() + h * d_.dk * d_.dv, o);
        // Gated RMSNorm of the head: norm(o) * w * silu(z).
        ops_->RmsNorm(o, 1, d_.dv, norm_, norm_eps_, /*zero_centred=*/false, o);
        ops_->SiluMul(z + j * d_.dv, o, d_.dv, o);
      }
    }
  }

  // Causal depthwise conv1d + SiLU of one token for `count` channels starting at
  // channel c0 of mixed_qkv: in [count] raw inputs, out [count]; the channels'
  // rows of conv_state [conv_dim, K-1] (oldest first) shift in the raw input.
  void Conv(const float* in, int64_t c0, int64_t count, float* conv_state, float* out) const {
    const int64_t hist = d_.kernel - 1;
    for (int64_t i = 0; i < count; ++i) {
      const int64_t c = c0 + i;
      const float* w = conv_weight_.data() + c * d_.kernel;
      float* s = conv_state + c * hist;
      const float input = in[i];
      float acc = conv_bias_.empty() ? 0.0f : conv_bias_[c];
      for (int64_t j = 0; j < hist; ++j) acc += w[j] * s[j];
      acc += w[hist] * input;
      if (hist > 0) {
        std::copy(s + 1, s + hist, s);
        s[hist - 1] = input;
      }
      out[i] = acc;
    }
    cpu::SiluMul(out, nullptr, count, out);
  }

  // The gated delta rule for value head h and one token: q, k [dk] (normalised,
  // q scaled), v [dv], the head's raw b and a; sh: its state [dk, dv], updated;
  // o: [dv].
  void DeltaRule(const float* q, const float* k, const float* v, float b, float a, int64_t h, float* sh,
                 float* o) const {
    const float beta = ref::Sigmoid(b);
    const float decay = std::exp(neg_a_[h] * ref::Softplus(a + dt_bias_[h]));
    cpu::GatedDeltaRule(q, k, v, beta, decay, sh, d_.dk, d_.dv, o);
  }

  Dims d_;
  float norm_eps_;
  const Ops* ops_;

  Projection in_proj_qkvz_;        // [2*nk*dk + 2*nv*dv, hidden], per key-head group
  Projection in_proj_ba_;          // [2*nv, hidden], per key-head group
  std::vector<float> conv_weight_;  // [conv_dim, kernel] (checkpoint [conv_dim, 1, kernel])
  std::vector<float> conv_bias_;    // [conv_dim], or empty when the checkpoint has none
  std::vector<float> dt_bias_;      // [nv]
  std::vector<float> neg_a_;        // [nv]: -exp(A_log)
  TensorView norm_;                 // [dv], used as plain w
  Projection out_proj_;             // [hidden, nv*dv]

 public:
  absl::Status SetWeightFormats(const WeightFormats& formats) override {
    for (auto [p, name] : {std::pair{&in_proj_qkvz_, "in_proj_qkvz"}, std::pair{&in_proj_ba_, "in_proj_ba"},
                           std::pair{&out_proj_, "out_proj"}}) {
      RETURN_IF_ERROR(p->Quantize(formats.attention, formats.group_size, formats.pool, name));
    }
    return absl::OkStatus();
  }
};

}  // namespace

absl::StatusOr<std::unique_ptr<Mixer>> LoadGatedDeltaNet(const ModelConfig& config,
                                                         const Weights& weights,
                                                         const std::string& prefix,
                                                         const Ops& ops) {
  ASSIGN_OR_RETURN(Dims dims, MakeDims(config));
  auto mixer =
      std::make_unique<GatedDeltaNet>(dims, static_cast<float>(config.rms_norm_eps), ops);
  RETURN_IF_ERROR(mixer->Load(weights, prefix));
  return std::unique_ptr<Mixer>(std::move(mixer));
}

}  // namespace krasis
