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
    std::vector<float> z(static_cast<size_t>(total * d_.value_dim));
    for (const SequenceRows& r : rows) {
      if (r.count == 0) continue;
      RunSequence(&qkvz[r.first_row * d_.qkvz_dim], &ba[r.first_row * 2 * d_.nv], r.count, r.seq->linear[layer],
                  &core[r.first_row * d_.value_dim], &z[r.first_row * d_.value_dim]);
    }
    // Gated RMSNorm per value head: norm(o) * w * silu(z); then out_proj.
    ops_->RmsNorm(core.data(), total * d_.nv, d_.dv, norm_, norm_eps_, /*zero_centred=*/false, core.data());
    ops_->SiluMul(z.data(), core.data(), total * d_.value_dim, core.data());
    out_proj_.Apply(*ops_, core.data(), total, out);
    return absl::OkStatus();
  }

 private:
  // Runs the recurrence over `count` consecutive tokens of one sequence, from
  // their projections qkvz [count, qkvz_dim] and ba [count, 2 nv], into core
  // [count, value_dim] (before the gated norm) and z [count, value_dim].
  void RunSequence(const float* qkvz, const float* ba, int64_t count, LinearState& state, float* core,
                   float* z) const {
    std::vector<float> mixed(static_cast<size_t>(d_.conv_dim));
    std::vector<float> b(static_cast<size_t>(d_.nv));
    std::vector<float> a(static_cast<size_t>(d_.nv));
    for (int64_t t = 0; t < count; ++t) {
      Regroup(qkvz + t * d_.qkvz_dim, ba + t * 2 * d_.nv, mixed.data(), z + t * d_.value_dim, b.data(), a.data());
      Conv(mixed.data(), state.conv.data());
      DeltaRule(mixed.data(), b.data(), a.data(), state.recurrent.data(), core + t * d_.value_dim);
    }
  }

  // fix_query_key_value_ordering + cat(q, k, v): from the per-group projections of
  // one token to mixed [conv_dim], z [value_dim], b [nv], a [nv].
  void Regroup(const float* qkvz, const float* ba, float* mixed, float* z, float* b,
               float* a) const {
    const int64_t rdv = d_.ratio * d_.dv;
    for (int64_t g = 0; g < d_.nk; ++g) {
      const float* src = qkvz + g * d_.group_dim;
      std::copy(src, src + d_.dk, mixed + g * d_.dk);                          // q
      std::copy(src + d_.dk, src + 2 * d_.dk, mixed + d_.key_dim + g * d_.dk);  // k
      std::copy(src + 2 * d_.dk, src + 2 * d_.dk + rdv,
                mixed + 2 * d_.key_dim + g * rdv);                              // v
      std::copy(src + 2 * d_.dk + rdv, src + 2 * d_.dk + 2 * rdv, z + g * rdv);  // z
      const float* src_ba = ba + g * 2 * d_.ratio;
      std::copy(src_ba, src_ba + d_.ratio, b + g * d_.ratio);
      std::copy(src_ba + d_.ratio, src_ba + 2 * d_.ratio, a + g * d_.ratio);
    }
  }

  // Causal depthwise conv1d + SiLU of one token, in place on mixed [conv_dim];
  // conv_state [conv_dim, K-1] (oldest first) shifts in the raw input.
  void Conv(float* mixed, float* conv_state) const {
    const int64_t hist = d_.kernel - 1;
    ops_->ParallelFor(d_.conv_dim, [&](int64_t c0, int64_t c1) {
      for (int64_t c = c0; c < c1; ++c) {
        const float* w = conv_weight_.data() + c * d_.kernel;
        float* s = conv_state + c * hist;
        const float input = mixed[c];
        float acc = conv_bias_.empty() ? 0.0f : conv_bias_[c];
        for (int64_t j = 0; j < hist; ++j) acc += w[j] * s[j];
        acc += w[hist] * input;
        if (hist > 0) {
          std::copy(s + 1, s + hist, s);
          s[hist - 1] = input;
        }
        mixed[c] = ref::Silu(acc);
      }
    });
  }

  // The gated delta rule for one token. qkv: conv output [q | k | v]; b, a [nv];
  // s: recurrent state [nv, dk, dv], updated; o: [nv, dv].
  void DeltaRule(float* qkv, const float* b, const float* a, float* s, float* o) const {
    float* q = qkv;
    float* k = qkv + d_.key_dim;
    const float* v = qkv + 2 * d_.key_dim;
    const float scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(d_.dk)));
    for (int64_t h = 0; h < d_.nk; ++h) {
      ref::L2Normalize(q + h * d_.dk, d_.dk, kL2NormEps);
      ref::L2Normalize(k + h * d_.dk, d_.dk, kL2NormEps);
      for (int64_t i = 0; i < d_.dk; ++i) q[h * d_.dk + i] *= scale;
    }
    // Value heads are independent: split them over the pool.
    ops_->ParallelFor(d_.nv, [&](int64_t h0, int64_t h1) {
      std::vector<float> delta(static_cast<size_t>(d_.dv));
      for (int64_t h = h0; h < h1; ++h) {
        const float* qh = q + (h / d_.ratio) * d_.dk;
        const float* kh = k + (h / d_.ratio) * d_.dk;
        const float* vh = v + h * d_.dv;
        float* sh = s + h * d_.dk * d_.dv;
        const float beta = ref::Sigmoid(b[h]);
        const float decay = std::exp(neg_a_[h] * ref::Softplus(a[h] + dt_bias_[h]));
        // S *= exp(g); kv_mem = k^T S (into delta).
        std::fill(delta.begin(), delta.end(), 0.0f);
        for (int64_t i = 0; i < d_.dk; ++i) {
          float* row = sh + i * d_.dv;
          for (int64_t j = 0; j < d_.dv; ++j) row[j] *= decay;
          cpu::Axpy(kh[i], row, delta.data(), d_.dv);
        }
        // delta = (v - kv_mem) * beta; S += k delta^T; o = q^T S, in one pass.
        for (int64_t j = 0; j < d_.dv; ++j) delta[j] = (vh[j] - delta[j]) * beta;
        float* oh = o + h * d_.dv;
        std::fill(oh, oh + d_.dv, 0.0f);
        for (int64_t i = 0; i < d_.dk; ++i) {
          float* row = sh + i * d_.dv;
          cpu::Axpy(kh[i], delta.data(), row, d_.dv);
          cpu::Axpy(qh[i], row, oh, d_.dv);
        }
      }
    });
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
