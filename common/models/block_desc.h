// What a layer's blocks are, for backends that run the same loaded model
// elsewhere (the CUDA prefill backend): each block's kind, hyperparameters and
// views of its checkpoint tensors (BF16/F16/F32 as stored; the views stay valid
// while the model lives and its weights are not quantized for decode). The CPU
// forward pass does not use these; they only describe what it computes.
#pragma once

#include <cstdint>
#include <vector>

#include "common/kernels/routing.h"
#include "common/models/rope.h"
#include "common/tensor.h"

namespace krasis {
namespace quant {
class QuantizedExperts;
}

// Grouped-query attention (blocks/gqa_attention.h).
struct GqaDesc {
  int64_t hidden = 0, heads = 0, kv_heads = 0, head_dim = 0;
  float eps = 1e-6f;
  bool qk_norm = false, zero_centred_qk_norm = false, output_gate = false;
  const Rope* rope = nullptr;
  TensorView q, k, v, o;                  // [heads*hd (x2 with output_gate), hidden], [kvh*hd, hidden] x2, [hidden, heads*hd]
  TensorView q_bias, k_bias, v_bias;      // optional (data == nullptr)
  TensorView q_norm, k_norm;              // [hd] (qk_norm)
};

// Multi-head latent attention (blocks/mla_attention.h). The cache row of a
// token is [latent (kv_a_norm'ed) | k_pe (roped)], kv_lora + rope_dim floats.
struct MlaDesc {
  int64_t hidden = 0, heads = 0, q_lora = 0, kv_lora = 0, nope = 0, rope_dim = 0, v_dim = 0;
  float scale = 1.0f;      // softmax scale (with YaRN's mscale^2)
  float latent_eps = 1e-6f;  // q_a_layernorm / kv_a_layernorm eps
  const Rope* rope = nullptr;
  TensorView q;            // [heads * (nope + rope), hidden] (q_lora == 0)
  TensorView q_a, q_a_bias, q_a_norm, q_b;  // [q_lora, hidden], [q_lora], [q_lora], [heads * (nope + rope), q_lora]
  TensorView kv_a, kv_a_bias;               // [kv_lora + rope, hidden], [kv_lora + rope]
  TensorView kv_a_norm;                     // [kv_lora]
  TensorView kv_b;                          // [heads * (nope + v), kv_lora]
  TensorView o, o_bias;                     // [hidden, heads * v], [hidden]
};

// Gated DeltaNet linear attention (blocks/gated_deltanet.h). The projections
// are laid out per key-head group as the checkpoint stores them: in_qkvz rows
// [nk][q dk | k dk | v r*dv | z r*dv], in_ba rows [nk][b r | a r], r = nv / nk.
struct GdnDesc {
  int64_t hidden = 0, nk = 0, nv = 0, dk = 0, dv = 0, kernel = 0;
  float norm_eps = 1e-6f;
  TensorView in_qkvz, in_ba;           // [2 nk dk + 2 nv dv, hidden], [2 nv, hidden]
  std::vector<float> conv_weight;      // [conv_dim, kernel], conv_dim = 2 nk dk + nv dv
  std::vector<float> conv_bias;        // [conv_dim], or empty
  std::vector<float> dt_bias, neg_a;   // [nv]; neg_a = -exp(A_log)
  TensorView norm;                     // [dv], used as plain w
  TensorView out;                      // [hidden, nv dv]
};

struct MixerDesc {
  enum class Kind { kGqa, kMla, kGatedDeltaNet } kind = Kind::kGqa;
  GqaDesc gqa;  // kGqa
  MlaDesc mla;  // kMla
  GdnDesc gdn;  // kGatedDeltaNet
};

// One SwiGLU MLP: down(silu(gate x) * up x).
struct MlpDesc {
  TensorView gate, up;  // [inter, hidden]
  TensorView down;      // [hidden, inter]
  int64_t inter = 0;
};

struct FfnDesc {
  enum class Kind { kDense, kMoe } kind = Kind::kDense;
  MlpDesc dense;  // kDense
  // kMoe
  RouterParams router;
  TensorView router_weight;             // [experts, hidden]
  std::vector<float> correction_bias;   // [experts] (kSigmoidNoAuxTc)
  std::vector<MlpDesc> experts;
  // The routed experts quantized for the CPU (INT4/INT8, quant_format.h's layout,
  // typically mapped from the conversion cache) when the model uses them; null
  // when it runs `experts` as stored.
  const quant::QuantizedExperts* quantized = nullptr;
  MlpDesc shared;                       // inter == 0: none
  TensorView shared_gate;               // [1, hidden]; data == nullptr: the shared expert is not gated
};

}  // namespace krasis
