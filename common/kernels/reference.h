// Reference CPU kernels: plain, single-threaded fp32 loops that define what every
// faster kernel (AVX-512, AMX, CUDA) must compute. Weights are TensorViews in
// their checkpoint dtype (BF16, F16, F32, F8) and are widened element by element;
// activations are float32, row-major.
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <vector>

#include "common/kernels/attention_args.h"
#include "common/tensor.h"

namespace krasis::ref {

// y[n, out] = x[n, in] @ w[out, in]^T (+ bias[out] when bias.data != nullptr).
void MatMul(const float* x, int64_t n, const TensorView& w, float* y,
            const TensorView* bias = nullptr);

// Per-head products (see Ops::HeadsMatMul): ref::MatMul for each head.
void HeadsMatMul(const float* x, int64_t n, int64_t heads, int64_t x_stride,
                 const std::function<TensorView(int64_t)>& w, float* y, int64_t y_stride);

// Causal attention (see AttentionArgs), dots and sums in double.
void Attention(const AttentionArgs& args);

// The gated delta rule of one value head over n tokens, computed chunk by
// chunk in the WY form that a parallel prefill kernel uses, in double: the
// same o [n, dv] and final state s [dk, dv] (updated in place) as n steps of
// S *= decay_t; delta = (v_t - k_t^T S) beta_t; S += k_t delta^T; o_t = q_t^T S
// (cpu::GatedDeltaRule), from q, k [n, dk], v [n, dv], beta, decay [n].
// Within a chunk, with g_t the product of the chunk's decays up to t:
//   (I + A) D = diag(beta) (V - diag(g) K S0), A[t, i] = beta_t g_t / g_i k_t.k_i (i < t)
//   O = diag(g) Q S0 + (M o Q K^T) D,           M[t, i] = g_t / g_i (i <= t)
//   S = g_C S0 + K^T diag(g_C / g) D
// (D: the deltas; the ratios come from sums of log decays, so a decay that
// underflows to 0 is exact).
void GatedDeltaChunked(const float* q, const float* k, const float* v, const float* beta, const float* decay,
                       int64_t n, int64_t dk, int64_t dv, int64_t chunk, float* s, float* o);

// Row `row` of an embedding table [vocab, dim], widened into out[dim].
void EmbeddingRow(const TensorView& table, int64_t row, float* out);

// RMSNorm over rows of `dim`: out = x / sqrt(mean(x^2) + eps) * w, where w is
// weight[i] or, for zero-centred norms (Qwen3-Next), 1 + weight[i]. In-place ok.
void RmsNorm(const float* x, int64_t rows, int64_t dim, const TensorView& weight, float eps,
             bool zero_centred, float* out);

// out[i] = silu(gate[i]) * up[i].
void SiluMul(const float* gate, const float* up, int64_t n, float* out);

float Silu(float x);
float Sigmoid(float x);
float Softplus(float x);  // log(1 + e^x), as torch (threshold 20)

// In-place softmax over `n` values.
void Softmax(float* x, int64_t n);

// In-place L2 normalisation: x / sqrt(sum(x^2) + eps).
void L2Normalize(float* x, int64_t n, float eps);

// Returns the indices of the k largest values, largest first; ties go to the
// lower index (as torch.topk on CPU does for distinct values).
std::vector<int> TopK(std::span<const float> values, int k);

}  // namespace krasis::ref
