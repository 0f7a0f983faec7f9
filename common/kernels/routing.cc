// MoE routing reference (see routing.h).
#include "common/kernels/routing.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <span>

#include "common/kernels/reference.h"

namespace krasis::ref {

void Route(const RouterParams& p, const float* logits, const float* correction_bias,
           std::vector<int>* ids, std::vector<float>* weights) {
  const int64_t per_group = p.num_experts / p.n_group;
  std::vector<float> scores(logits, logits + p.num_experts);
  std::vector<float> choice;
  if (p.kind == RouterKind::kSigmoidNoAuxTc) {
    for (auto& s : scores) s = Sigmoid(s);
    choice = scores;
    for (int64_t e = 0; e < p.num_experts; ++e) choice[e] += correction_bias[e];
  } else {
    Softmax(scores.data(), p.num_experts);
    choice = scores;
  }
  if (p.kind != RouterKind::kSoftmaxTopK && p.n_group > 1) {
    std::vector<float> group_score(static_cast<size_t>(p.n_group));
    for (int64_t g = 0; g < p.n_group; ++g) {
      std::span<const float> members(&choice[g * per_group], static_cast<size_t>(per_group));
      if (p.kind == RouterKind::kGroupLimited) {
        group_score[g] = *std::max_element(members.begin(), members.end());
      } else {
        auto top2 = TopK(members, 2);
        group_score[g] = 0.0f;
        for (int i : top2) group_score[g] += members[i];
      }
    }
    auto keep = TopK(group_score, static_cast<int>(p.topk_group));
    std::vector<bool> kept(static_cast<size_t>(p.n_group), false);
    for (int g : keep) kept[g] = true;
    // Experts of dropped groups score 0, as transformers' masked_fill does.
    for (int64_t e = 0; e < p.num_experts; ++e) {
      if (!kept[e / per_group]) choice[e] = 0.0f;
    }
  }
  *ids = TopK(choice, static_cast<int>(p.top_k));
  weights->clear();
  for (int id : *ids) weights->push_back(scores[id]);
  if (p.norm_topk_prob) {
    double sum = 0.0;
    for (float w : *weights) sum += w;
    if (p.kind == RouterKind::kSigmoidNoAuxTc) sum += 1e-20;
    for (float& w : *weights) w = static_cast<float>(w / sum);
  }
  for (float& w : *weights) w *= p.routed_scaling;
}

}  // namespace krasis::ref

namespace krasis {

void Route(const RouterParams& p, const float* logits, const float* correction_bias, std::vector<int>* ids,
           std::vector<float>* weights) {
  if (p.kind != RouterKind::kSoftmaxTopK) {
    ref::Route(p, logits, correction_bias, ids, weights);
    return;
  }
  // Softmax keeps the logits' order, so the k best logits (ties to the lower
  // index, as the reference's sort) are the k best probabilities.
  auto score = [&](int64_t e) { return std::isnan(logits[e]) ? -std::numeric_limits<float>::infinity() : logits[e]; };
  const int64_t k = std::clamp<int64_t>(p.top_k, 0, p.num_experts);
  ids->clear();
  for (int64_t e = 0; e < p.num_experts; ++e) {
    const float v = score(e);
    if (static_cast<int64_t>(ids->size()) == k) {
      if (k == 0 || !(v > score(ids->back()))) continue;
      ids->pop_back();
    }
    auto at = ids->end();
    while (at != ids->begin() && v > score(*(at - 1))) --at;
    ids->insert(at, static_cast<int>(e));
  }
  // The reference's softmax arithmetic (float exponentials, a double sum), so
  // the weights are bit-equal.
  float m = -std::numeric_limits<float>::infinity();
  for (int64_t e = 0; e < p.num_experts; ++e) m = std::max(m, score(e));
  double sum = 0.0;
  for (int64_t e = 0; e < p.num_experts; ++e) sum += std::exp(score(e) - m);
  weights->clear();
  for (int id : *ids) weights->push_back(static_cast<float>(std::exp(score(id) - m) / sum));
  if (p.norm_topk_prob) {
    double total = 0.0;
    for (float w : *weights) total += w;
    for (float& w : *weights) w = static_cast<float>(w / total);
  }
  for (float& w : *weights) w *= p.routed_scaling;
}

}  // namespace krasis
