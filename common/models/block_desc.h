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

struct MixerDesc {
  enum class Kind { kGqa, kMla, kGatedDeltaNet } kind = Kind::kGqa;
  GqaDesc gqa;  // kGqa (MLA and Gated DeltaNet describe only their kind so far)
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
  MlpDesc shared;                       // inter == 0: none
  TensorView shared_gate;               // [1, hidden]; data == nullptr: the shared expert is not gated
};

}  // namespace krasis
