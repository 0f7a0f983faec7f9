// Dense MLP and mixture of experts (see ffn.h).
#include "common/models/blocks/ffn.h"

#include <algorithm>
#include <vector>

#include "common/kernels/reference.h"
#include "common/logging.h"
#include "common/mapped_file.h"
#include "common/quant/expert_cache.h"
#include "common/quant/expert_set.h"
#include "common/status.h"

namespace krasis {
namespace {

struct ExpertWeights {
  TensorView gate, up;  // [inter, hidden]
  TensorView down;      // [hidden, inter]
  int64_t inter = 0;
  // Set by Quantize: the three matrices quantized, as a one-expert set on node 0
  // (dense weights are not placed per node: on a machine of several nodes, node
  // 0's threads compute them).
  std::shared_ptr<const quant::QuantizedExperts> quantized;

  absl::Status Quantize(ExpertFormat format, int64_t group_size, NumaThreadPool* pool) {
    quantized.reset();
    if (format == ExpertFormat::kBf16 || inter == 0) return absl::OkStatus();
    const quant::QuantFormat f = ToQuantFormat(format);
    quant::QuantExpert e;
    ASSIGN_OR_RETURN(e.gate, quant::QuantizeMatrix(gate, f, group_size, "gate_proj"));
    ASSIGN_OR_RETURN(e.up, quant::QuantizeMatrix(up, f, group_size, "up_proj"));
    ASSIGN_OR_RETURN(e.down, quant::QuantizeMatrix(down, f, group_size, "down_proj"));
    std::vector<quant::QuantExpert> one;
    one.push_back(std::move(e));
    quantized = std::make_shared<const quant::QuantizedExperts>(std::move(one), down.dim(0), pool);
    ReleaseSource();
    return absl::OkStatus();
  }
  MlpDesc Describe() const { return MlpDesc{gate, up, down, inter}; }
  // Unmaps the checkpoint pages of the three matrices (see ReleaseMappedPages).
  void ReleaseSource() const {
    for (const TensorView* v : {&gate, &up, &down}) ReleaseMappedPages({v->data, v->nbytes()});
  }
};

absl::StatusOr<ExpertWeights> LoadExpert(const Weights& w, const std::string& prefix, int64_t hidden,
                                         int64_t inter) {
  ExpertWeights e;
  e.inter = inter;
  ASSIGN_OR_RETURN(e.gate, w.Get(prefix + "gate_proj.weight", {inter, hidden}));
  ASSIGN_OR_RETURN(e.up, w.Get(prefix + "up_proj.weight", {inter, hidden}));
  ASSIGN_OR_RETURN(e.down, w.Get(prefix + "down_proj.weight", {hidden, inter}));
  return e;
}

// out[n, hidden] = down(silu(gate(x)) * up(x)).
void RunExpert(const Ops& ops, const ExpertWeights& e, const float* x, int64_t n, float* out) {
  if (e.quantized != nullptr) {
    const int64_t hidden = e.down.dim(0);
    std::fill(out, out + n * hidden, 0.0f);
    std::vector<std::vector<int>> ids(static_cast<size_t>(n), std::vector<int>{0});
    std::vector<std::vector<float>> weights(static_cast<size_t>(n), std::vector<float>{1.0f});
    e.quantized->Run(x, n, ids, weights, out);
    return;
  }
  std::vector<float> g(static_cast<size_t>(n * e.inter)), u(g.size());
  ops.MatMul(x, n, e.gate, g.data());
  ops.MatMul(x, n, e.up, u.data());
  ops.SiluMul(g.data(), u.data(), n * e.inter, g.data());
  ops.MatMul(g.data(), n, e.down, out);
}

class DenseMlp final : public FeedForward {
 public:
  void Forward(const float* x, int64_t n, float* out) const override {
    ProfileScope scope(&ForwardProfile::dense_ns, &ForwardProfile::dense_bytes);
    RunExpert(*ops, mlp, x, n, out);
  }
  absl::Status SetWeightFormats(const WeightFormats& formats) override {
    return mlp.Quantize(formats.dense_mlp, formats.group_size, formats.pool);
  }
  std::optional<FfnDesc> Describe() const override {
    FfnDesc d;
    d.kind = FfnDesc::Kind::kDense;
    d.dense = mlp.Describe();
    return d;
  }
  const Ops* ops = nullptr;
  ExpertWeights mlp;
};


class Moe final : public FeedForward {
 public:
  void Forward(const float* x, int64_t n, float* out) const override;
  absl::Status SetExpertFormat(const ExpertOptions& options) override;
  absl::Status SetWeightFormats(const WeightFormats& formats) override {
    return shared.Quantize(formats.shared_experts, formats.group_size, formats.pool);
  }

  const Ops* ops = nullptr;
  MoeOptions options;
  int64_t hidden = 0, num_experts = 0, top_k = 0, n_group = 1, topk_group = 1;
  bool norm_topk_prob = false;
  float routed_scaling = 1.0f;
  TensorView router;          // [experts, hidden]
  std::vector<float> correction_bias;  // [experts] (noaux_tc)
  std::vector<ExpertWeights> experts;
  ExpertWeights shared;
  TensorView shared_gate;     // [1, hidden]

  // Set by SetExpertFormat(int8|int4): experts[e] is then unused.
  quant::QuantizedExperts quantized;
  std::shared_ptr<quant::MappedExpertLayer> mapped;  // the cache file they view, if any
  std::string name;  // "model.layers.<l>.mlp": names the layer's cache file
  absl::StatusOr<quant::QuantizedMatrix> QuantizeFromGguf(const GgufFile& gguf, int64_t expert, ExpertProj which,
                                                          quant::QuantFormat format, int64_t group_size) const;
  uint64_t ExpertBytes() const override {
    uint64_t n = 0;
    for (const auto& e : quantized.experts()) n += e.bytes();
    return n;
  }
  // Chosen experts and their weights for one token's router logits.
  void Route(const float* logits, std::vector<int>* ids, std::vector<float>* weights) const;
  RouterParams Params() const {
    RouterParams p;
    p.kind = options.router;
    p.num_experts = num_experts;
    p.top_k = top_k;
    p.n_group = n_group;
    p.topk_group = topk_group;
    p.norm_topk_prob = norm_topk_prob;
    p.routed_scaling = routed_scaling;
    return p;
  }
  std::optional<FfnDesc> Describe() const override {
    FfnDesc d;
    d.kind = FfnDesc::Kind::kMoe;
    d.router = Params();
    d.router_weight = router;
    d.correction_bias = correction_bias;
    for (const ExpertWeights& e : experts) d.experts.push_back(e.Describe());
    if (!quantized.empty()) d.quantized = &quantized;
    if (shared.inter > 0) d.shared = shared.Describe();
    if (options.shared_gate) d.shared_gate = shared_gate;
    return d;
  }
};

absl::StatusOr<quant::QuantizedMatrix> Moe::QuantizeFromGguf(const GgufFile& gguf, int64_t expert,
                                                              ExpertProj which, quant::QuantFormat format,
                                                              int64_t group_size) const {
  // The layer index from "model.layers.<L>.mlp".
  const size_t dot = name.find('.', std::string("model.layers.").size());
  const int64_t layer = std::stoll(name.substr(std::string("model.layers.").size(), dot));
  ASSIGN_OR_RETURN(GgufMatrixView view, FindExpert(gguf, layer, expert, which));
  const int64_t inter = experts.empty() ? 0 : experts[0].inter;
  const int64_t rows = which == ExpertProj::kDown ? hidden : inter, cols = which == ExpertProj::kDown ? inter : hidden;
  if (view.rows != rows || view.cols != cols) {
    return InvalidArgumentError(gguf.name(), ": ", view.tensor, " holds [", view.rows, ", ", view.cols,
                                "] matrices; the model's ", ExpertProjName(which), " is [", rows, ", ", cols, "]");
  }
  std::vector<float> w(static_cast<size_t>(rows * cols));
  RETURN_IF_ERROR(DequantizeMatrix(view, w.data()));
  return quant::QuantizeMatrix(w.data(), rows, cols, format, group_size, view.tensor);
}

absl::Status Moe::SetExpertFormat(const ExpertOptions& options) {
  quantized = {};
  mapped.reset();
  if (options.format == ExpertFormat::kBf16) return absl::OkStatus();
  const quant::QuantFormat format = ToQuantFormat(options.format);
  NumaThreadPool* pool = options.pool != nullptr ? options.pool : &NumaThreadPool::Default();
  const std::vector<int> placement = PlaceExperts(static_cast<int>(num_experts), pool->threads_per_node());
  const quant::ExpertLayerShape shape{format, options.group_size, hidden, experts.empty() ? 0 : experts[0].inter,
                                      num_experts, options.fingerprint};
  const std::string path = options.cache_dir.empty() ? "" : StrCat(options.cache_dir, "/", name, ".kxq");
  if (!path.empty()) {
    auto cached = quant::MappedExpertLayer::Open(path, shape);
    if (cached.ok()) {
      mapped = std::move(*cached);
    } else if (!absl::IsNotFound(cached.status())) {
      KLOG_WARN("rebuilding the cache file: {}", std::string(cached.status().message()));
    }
  }
  std::vector<quant::QuantExpert> q;
  if (mapped == nullptr) {
    q.resize(static_cast<size_t>(num_experts));
    std::vector<absl::Status> errors(static_cast<size_t>(pool->num_threads()));
    // Each expert is quantized by a worker of its node, so (without a cache
    // file) its pages are first touched, and placed, there.
    pool->Run([&](const PoolWorker& w) {
      int k = 0;
      for (int64_t e = 0; e < num_experts; ++e) {
        if (placement[static_cast<size_t>(e)] != w.node) continue;
        if (k++ % w.threads_in_node != w.index_in_node) continue;
        quant::QuantExpert& dst = q[static_cast<size_t>(e)];
        absl::StatusOr<quant::QuantizedMatrix> gate, up, down;
        if (options.gguf != nullptr) {
          gate = QuantizeFromGguf(*options.gguf, e, ExpertProj::kGate, format, options.group_size);
          up = QuantizeFromGguf(*options.gguf, e, ExpertProj::kUp, format, options.group_size);
          down = QuantizeFromGguf(*options.gguf, e, ExpertProj::kDown, format, options.group_size);
        } else {
          const ExpertWeights& src = experts[static_cast<size_t>(e)];
          gate = quant::QuantizeMatrix(src.gate, format, options.group_size, "gate_proj");
          up = quant::QuantizeMatrix(src.up, format, options.group_size, "up_proj");
          down = quant::QuantizeMatrix(src.down, format, options.group_size, "down_proj");
        }
        for (const absl::Status& s : {gate.status(), up.status(), down.status()}) {
          if (!s.ok()) errors[static_cast<size_t>(w.global_index)] = s;
        }
        if (!gate.ok() || !up.ok() || !down.ok()) return;
        dst.gate = std::move(*gate);
        dst.up = std::move(*up);
        dst.down = std::move(*down);
        if (options.gguf == nullptr) experts[static_cast<size_t>(e)].ReleaseSource();
      }
    });
    for (const absl::Status& s : errors) {
      if (!s.ok()) return s;
    }
    if (!path.empty()) {
      RETURN_IF_ERROR(quant::WriteExpertLayer(path, shape, q));
      if (options.layers_built != nullptr) ++*options.layers_built;
      ASSIGN_OR_RETURN(mapped, quant::MappedExpertLayer::Open(path, shape));
    }
  }
  if (mapped != nullptr) {
    q = mapped->Experts();
    // Fault each expert's pages in from a worker of its node.
    pool->Run([&](const PoolWorker& w) {
      int k = 0;
      volatile uint8_t sink = 0;
      for (int64_t e = 0; e < num_experts; ++e) {
        if (placement[static_cast<size_t>(e)] != w.node || k++ % w.threads_in_node != w.index_in_node) continue;
        for (const quant::QuantizedMatrix* m : {&q[e].gate, &q[e].up, &q[e].down}) {
          for (size_t i = 0; i < m->data_bytes(); i += 4096) sink = sink + m->data[i];
        }
      }
    });
  }
  for (int64_t e = 0; e < num_experts; ++e) q[static_cast<size_t>(e)].node = placement[static_cast<size_t>(e)];
  quantized = quant::QuantizedExperts(std::move(q), hidden, pool);
  return absl::OkStatus();
}


void Moe::Route(const float* logits, std::vector<int>* ids, std::vector<float>* weights) const {
  krasis::Route(Params(), logits, correction_bias.data(), ids, weights);
}

void Moe::Forward(const float* x, int64_t n, float* out) const {
  ForwardTimer timer;
  std::vector<float> logits(static_cast<size_t>(n * num_experts));
  {
    ProfileScope scope(&ForwardProfile::router_ns, &ForwardProfile::router_bytes);
    ops->MatMul(x, n, router, logits.data());
  }
  std::fill(out, out + n * hidden, 0.0f);
  std::vector<float> y(static_cast<size_t>(hidden));
  std::vector<std::vector<int>> ids(static_cast<size_t>(n));
  std::vector<std::vector<float>> weights(static_cast<size_t>(n));
  for (int64_t t = 0; t < n; ++t) {
    Route(&logits[t * num_experts], &ids[t], &weights[t]);
  }
  timer.Lap(&ForwardProfile::routing_ns);
  // The shared expert's per-token scale: sigmoid(shared_expert_gate(x)) or 1.
  std::vector<float> shared_scale(static_cast<size_t>(n), 1.0f);
  if (shared.inter > 0 && options.shared_gate) {
    ops->MatMul(x, n, shared_gate, shared_scale.data());
    for (float& g : shared_scale) g = ref::Sigmoid(g);
  }
  // A quantized shared expert joins the routed experts' dispatches.
  const bool shared_joins = !quantized.empty() && shared.quantized != nullptr &&
                            shared.quantized->pool() == quantized.pool();
  if (!quantized.empty()) {
    ProfileScope scope(&ForwardProfile::experts_ns, &ForwardProfile::experts_bytes);
    quantized.Run(x, n, ids, weights, out, shared_joins ? &shared.quantized->experts()[0] : nullptr,
                  shared_scale.data());
  } else {
    for (int64_t t = 0; t < n; ++t) {
      for (size_t i = 0; i < ids[t].size(); ++i) {
        RunExpert(*ops, experts[ids[t][i]], x + t * hidden, 1, y.data());
        for (int64_t d = 0; d < hidden; ++d) out[t * hidden + d] += weights[t][i] * y[d];
      }
    }
  }
  if (shared.inter > 0 && !shared_joins) {
    std::vector<float> ys(static_cast<size_t>(n * hidden));
    RunExpert(*ops, shared, x, n, ys.data());
    for (int64_t t = 0; t < n; ++t) {
      for (int64_t d = 0; d < hidden; ++d) out[t * hidden + d] += shared_scale[t] * ys[t * hidden + d];
    }
  }
}

}  // namespace

absl::StatusOr<std::unique_ptr<FeedForward>> LoadDenseMlp(const Weights& weights,
                                                          const std::string& prefix, int64_t hidden,
                                                          int64_t intermediate, const Ops& ops) {
  auto mlp = std::make_unique<DenseMlp>();
  mlp->ops = &ops;
  ASSIGN_OR_RETURN(mlp->mlp, LoadExpert(weights, prefix, hidden, intermediate));
  return std::unique_ptr<FeedForward>(std::move(mlp));
}

absl::StatusOr<std::unique_ptr<FeedForward>> LoadMoe(const ModelConfig& config,
                                                     const Weights& weights,
                                                     const std::string& prefix,
                                                     const MoeOptions& options, const Ops& ops) {
  auto moe = std::make_unique<Moe>();
  moe->ops = &ops;
  moe->options = options;
  moe->name = prefix.substr(0, prefix.size() - (prefix.ends_with(".") ? 1 : 0));
  moe->hidden = config.hidden_size;
  moe->num_experts = config.num_experts;
  if (!config.num_experts_per_tok.has_value()) {
    return InvalidArgumentError(config.source, ": num_experts_per_tok is required for MoE layers");
  }
  moe->top_k = *config.num_experts_per_tok;
  moe->n_group = config.n_group.value_or(1);
  moe->topk_group = config.topk_group.value_or(1);
  if (moe->n_group < 1 || moe->num_experts % moe->n_group != 0 || moe->topk_group > moe->n_group ||
      moe->top_k < 1 || moe->top_k > moe->num_experts) {
    return InvalidArgumentError(config.source, ": inconsistent routing (", moe->num_experts,
                                " experts, top-k ", moe->top_k, ", n_group ", moe->n_group,
                                ", topk_group ", moe->topk_group, ")");
  }
  moe->norm_topk_prob = config.norm_topk_prob;
  moe->routed_scaling = static_cast<float>(config.routed_scaling_factor);
  const int64_t h = config.hidden_size, inter = config.moe_intermediate_size;
  ASSIGN_OR_RETURN(moe->router, weights.Get(prefix + "gate.weight", {moe->num_experts, h}));
  if (options.router == RouterKind::kSigmoidNoAuxTc) {
    ASSIGN_OR_RETURN(TensorView bias,
                     weights.Get(prefix + "gate.e_score_correction_bias", {moe->num_experts}));
    moe->correction_bias = ToFloatVector(bias);
  }
  for (int64_t e = 0; e < moe->num_experts; ++e) {
    ASSIGN_OR_RETURN(ExpertWeights ew,
                     LoadExpert(weights, StrCat(prefix, "experts.", e, "."), h, inter));
    moe->experts.push_back(ew);
  }
  if (!options.shared_prefix.empty() && options.shared_intermediate > 0) {
    ASSIGN_OR_RETURN(moe->shared, LoadExpert(weights, prefix + options.shared_prefix, h,
                                             options.shared_intermediate));
    if (options.shared_gate) {
      ASSIGN_OR_RETURN(moe->shared_gate, weights.Get(prefix + "shared_expert_gate.weight", {1, h}));
    }
  }
  return std::unique_ptr<FeedForward>(std::move(moe));
}

}  // namespace krasis
