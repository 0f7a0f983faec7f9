// The CUDA kernels of GPU prefill, besides the matrix products (cuBLAS): norms,
// rotary embeddings, activations, causal attention, MoE routing and the
// gather / combine around the grouped expert GEMMs. Each has a plain reference
// on the CPU (common/kernels/reference.h, routing.h, models/rope.h) and a test in
// tests/gpu/ that compares the two on fresh random data.
//
// Conventions: every pointer is device memory; activations are float32
// row-major, BF16 buffers (GEMM inputs) are uint16_t bit patterns; launchers
// take the stream, never allocate or synchronise, and return the launch status.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "absl/status/status.h"
#include "common/dtype.h"
#include "common/kernels/routing.h"

namespace krasis::cuda {

// RMSNorm over rows of `dim`: y = x / sqrt(mean(x^2) + eps) * (zero_centred ?
// 1 + w : w). Writes `out` (float, may alias x) and/or `out_bf16` (either null).
absl::Status LaunchRmsNorm(const float* x, int64_t rows, int64_t dim, const float* weight, float eps,
                           bool zero_centred, float* out, uint16_t* out_bf16, cudaStream_t stream);
// x += add (the residual add), then the RMSNorm of the sum into `out` and/or
// `out_bf16` as LaunchRmsNorm: the two kernels' results in one pass. `out`
// must not alias x or add.
absl::Status LaunchAddRmsNorm(float* x, const float* add, int64_t rows, int64_t dim, const float* weight, float eps,
                              bool zero_centred, float* out, uint16_t* out_bf16, cudaStream_t stream);

// The same per head, in place: `heads` vectors of head_dim per token, token t's
// head h at x + t * token_stride + h * head_dim (QK norm).
absl::Status LaunchHeadRmsNorm(float* x, int64_t tokens, int64_t heads, int64_t token_stride, int64_t head_dim,
                               const float* weight, float eps, bool zero_centred, cudaStream_t stream);

// Rotates the first rot_dim dims of `heads` vectors per token in place: token t's
// head h starts at x + t * token_stride + h * head_stride. cos_sin holds, per
// token, rot_dim / 2 cosines then rot_dim / 2 sines (attention factor included)
// for that token's position. Pairing as models/rope.h: half (i, i + rot_dim/2)
// or interleaved (2i, 2i + 1).
// The cos_sin rows LaunchRope takes, for positions [start, start + n), from
// inv_freq [rot_dim / 2] on the card (Rope::Table's values, with the card's
// cosf / sinf: within a few float ulps of the host's).
absl::Status LaunchRopeTable(const float* inv_freq, int64_t rot_dim, float attention_factor, int64_t start, int64_t n,
                             float* out, cudaStream_t stream);
absl::Status LaunchRope(float* x, int64_t tokens, int64_t heads, int64_t token_stride, int64_t head_stride,
                        int64_t rot_dim, bool interleaved, const float* cos_sin, cudaStream_t stream);

// out[r, i] = silu(gate_up[r, i]) * gate_up[r, inter + i] as BF16, for rows of
// [gate | up] (2 * inter floats).
absl::Status LaunchSiluMulBf16(const float* gate_up, int64_t rows, int64_t inter, uint16_t* out,
                               cudaStream_t stream);
// The same in float (the backend's fp32 checking mode).
absl::Status LaunchSiluMul(const float* gate_up, int64_t rows, int64_t inter, float* out, cudaStream_t stream);

// out[i] = bf16(x[i]), round to nearest even.
absl::Status LaunchToBf16(const float* x, int64_t count, uint16_t* out, cudaStream_t stream);
// The same for `rows` rows of `cols` floats `stride` apart, into packed rows.
absl::Status LaunchToBf16Rows(const float* x, int64_t rows, int64_t cols, int64_t stride, uint16_t* out,
                              cudaStream_t stream);

// out[t, :] = table[ids[t], :] widened to float, for t < n: the token
// embedding. table [vocab, dim] BF16 (f32 false) or float; ids in range.
absl::Status LaunchEmbedRows(const void* table, bool f32, const int32_t* ids, int64_t n, int64_t dim, float* out,
                             cudaStream_t stream);
// out[i] = dtype(x[i]) for dtype BF16 or F16 (the bit patterns of a KV cache of that dtype).
absl::Status LaunchToHalf(DType dtype, const float* x, int64_t count, uint16_t* out, cudaStream_t stream);

// y[i] += x[i].
absl::Status LaunchAdd(float* y, const float* x, int64_t count, cudaStream_t stream);

// y[r, c] += bias[c] for rows of `cols` floats `stride` apart.
absl::Status LaunchAddBias(float* y, const float* bias, int64_t rows, int64_t cols, int64_t stride,
                           cudaStream_t stream);

// x[i] = float(dtype(x[i])): rounds in place to BF16 or F16 (as a KV cache of
// that dtype stores it; F32: nothing to do).
absl::Status LaunchRoundTo(DType dtype, float* x, int64_t count, cudaStream_t stream);

// MLA's per-head keys and values for `positions` positions: kvb [positions,
// heads, nope + v_dim] is kv_b_proj of the latents, k_pe the roped key of
// position p at k_pe + p * k_pe_stride (rope_dim floats, shared by all heads).
// k [positions, heads, nope + rope_dim] = [k_nope | k_pe]; v [positions, heads, v_dim].
absl::Status LaunchMlaExpandKv(const float* kvb, const float* k_pe, int64_t k_pe_stride, int64_t positions,
                               int64_t heads, int64_t nope, int64_t rope_dim, int64_t v_dim, float* k, float* v,
                               cudaStream_t stream);
// The same with kvb, k and v in BF16 (k_pe rounded to BF16): equal to
// LaunchMlaExpandKv of the BF16 values followed by BF16 rounding of k and v.
absl::Status LaunchMlaExpandKvBf16(const uint16_t* kvb, const float* k_pe, int64_t k_pe_stride, int64_t positions,
                                   int64_t heads, int64_t nope, int64_t rope_dim, int64_t v_dim, uint16_t* k,
                                   uint16_t* v, cudaStream_t stream);

// Causal attention of `n` new tokens at positions start_pos .. start_pos + n - 1
// over keys/values of positions 0 .. start_pos + n - 1, FlashAttention-style:
// tiles of keys stream through shared memory with an online softmax, nothing of
// size n x positions is stored. q [n, heads, head_dim]; k [positions, kv_heads,
// head_dim] and v [positions, kv_heads, v_dim] with rows `k_stride` / `v_stride`
// floats apart; out [n, heads, v_dim]. Query head h reads kv head h / (heads /
// kv_heads). head_dim and v_dim up to 256.
struct AttentionShape {
  int64_t n = 0, start_pos = 0, heads = 0, kv_heads = 0, head_dim = 0, v_dim = 0;
  int64_t k_stride = 0, v_stride = 0;
  int64_t q_stride = 0;  // floats between tokens' queries (0: heads * head_dim)
  float scale = 1.0f;
  // false: tensor cores (BF16 Q, K, V and probabilities, fp32 accumulation and
  // softmax) when head_dim and v_dim are multiples of 16; true: fp32 CUDA-core
  // math throughout (the checking mode).
  bool exact = false;
};
absl::Status LaunchCausalAttention(const float* q, const float* k, const float* v, const AttentionShape& shape,
                                   float* out, cudaStream_t stream);
// The same with K and V already in BF16 (strides in elements, multiples of 8,
// rows 16-byte aligned): half the bytes per key tile, and exactly the result
// LaunchCausalAttention gives for the same values in float (it rounds them to
// BF16 on load). For the shapes CausalAttentionTakesBf16Kv accepts (the
// FlashAttention-2 kernel's instances, not the exact mode).
bool CausalAttentionTakesBf16Kv(const AttentionShape& shape);
absl::Status LaunchCausalAttentionBf16Kv(const float* q, const uint16_t* k, const uint16_t* v,
                                         const AttentionShape& shape, float* out, cudaStream_t stream);
// The same written as BF16 (each output rounded from the float the above
// writes): the o_proj GEMM's input without a float round trip.
absl::Status LaunchCausalAttentionBf16KvToBf16(const float* q, const uint16_t* k, const uint16_t* v,
                                               const AttentionShape& shape, uint16_t* out, cudaStream_t stream);
// For attention_bench only: the BF16-K/V kernel in one of its tilings, to
// compare them. 0: what LaunchCausalAttentionBf16Kv runs; 2..5: the same
// double-buffered kernel with (rows per warp / 16, warps) = (1, 8),
// (1, 4), (2, 4), (2, 8) for head_dim 192 / v_dim 128, 2..3 only for 256 / 256.
// InvalidArgument for any other shape or variant.
absl::Status LaunchCausalAttentionBf16KvVariant(int variant, const float* q, const uint16_t* k, const uint16_t* v,
                                                const AttentionShape& shape, float* out, cudaStream_t stream);

// Routing of `n` tokens from their router logits [n, num_experts] (and the
// correction bias [num_experts] for kSigmoidNoAuxTc): ids [n, top_k] best first
// and weights [n, top_k], exactly as ref::Route. num_experts up to 1024.
absl::Status LaunchRoute(const float* logits, int64_t n, const RouterParams& params, const float* correction_bias,
                         int32_t* ids, float* weights, cudaStream_t stream);

// Counts how many of the n * top_k choices go to each expert: counts[e]
// (num_experts int32, zeroed first by the caller, e.g. cudaMemsetAsync).
absl::Status LaunchCountExperts(const int32_t* ids, int64_t choices, int64_t num_experts, int32_t* counts,
                                cudaStream_t stream);

// Gives every choice c (= token * top_k + j) a row in its expert's segment of
// the sorted batch: row_of_choice[c] = offsets[e] + a free slot there, and
// token_of_row[row] = c / top_k. `cursor` (num_experts int32) must hold a copy of
// offsets. Rows of one expert come in no fixed order (it does not matter: each
// row is a separate product, and LaunchCombineExperts sums in choice order).
absl::Status LaunchAssignRows(const int32_t* ids, int64_t choices, int64_t top_k, int32_t* cursor,
                              int32_t* row_of_choice, int32_t* token_of_row, cudaStream_t stream);

// out[r, :] = bf16(x[token_of_row[r], :]) for r < rows; x [tokens, dim].
absl::Status LaunchGatherRowsBf16(const float* x, const int32_t* token_of_row, int64_t rows, int64_t dim,
                                  uint16_t* out, cudaStream_t stream);
// The same in float (the backend's fp32 checking mode).
absl::Status LaunchGatherRows(const float* x, const int32_t* token_of_row, int64_t rows, int64_t dim, float* out,
                              cudaStream_t stream);

// out[t, :] += sum_j weights[t, j] * y[row_of_choice[t * top_k + j], :] for
// t < n, summed in j order; y [rows, dim].
absl::Status LaunchCombineExperts(const float* y, const int32_t* row_of_choice, const float* weights, int64_t n,
                                  int64_t top_k, int64_t dim, float* out, cudaStream_t stream);
// The same with only the rows [offsets[first], offsets[end]) of y (offsets on
// the device: GroupedGemmPlanOffsets); other rows count as zero (another
// card's experts: their sums come in the all-reduce).
absl::Status LaunchCombineExpertSpan(const float* y, const int32_t* row_of_choice, const float* weights, int64_t n,
                                     int64_t top_k, int64_t dim, const int32_t* offsets, int64_t first, int64_t end,
                                     float* out, cudaStream_t stream);
// LaunchSiluMulBf16 over rows [offsets[first], offsets[end]) of gate_up and
// out (offsets on the device), of at most max_rows rows.
absl::Status LaunchSiluMulBf16Span(const float* gate_up, int64_t inter, const int32_t* offsets, int64_t first,
                                   int64_t end, int64_t max_rows, uint16_t* out, cudaStream_t stream);

// Grouped expert GEMM: for every expert e in [first, end) with counts[e] > 0,
//   y[r, c] = sum_k x[r, k] * W_e[c, k]  for rows r in [offsets[e], offsets[e] + counts[e]), c < n,
// in one launch (BF16 tensor cores, fp32 accumulation and output). W_e's rows
// [0, n_split) are the rows of matrix w0, rows [n_split, n) those of w1 (so an
// expert's gate and up, stored apart, give [rows, 2 * inter] at once). Weights
// are BF16 row-major [rows, k] (quant 0), or the tile-interleaved INT8 (1) /
// INT4 (2) layout of common/quant/quant_format.h with its scales, dequantized
// to BF16 in shared memory tile by tile as the GEMM reads them (the values
// LaunchDequantTiled's BF16 output holds).
struct ExpertGemmWeights {
  const void* w0 = nullptr;
  const void* w1 = nullptr;
  const float* s0 = nullptr;  // quantized: scales of w0 / w1
  const float* s1 = nullptr;
};
struct GroupedGemmShape {
  int64_t n = 0, k = 0, n_split = 0;
  int quant = 0;       // 0 BF16, 1 INT8, 2 INT4 (quant::QuantFormat's values)
  int64_t group = 0;   // quantized: group size
  const uint16_t* x = nullptr;  // BF16 [rows, k], rows ldx apart
  int64_t ldx = 0;
  float* y = nullptr;  // [rows, n], rows ldy apart
  int64_t ldy = 0;
  int k_step = 0;  // k per pipeline step: 0 picks (64 where k and the group allow, else 32); 32 or 64 forces it
  int warp_cols = 0;  // columns per warp (8 warps of 64 x 32 or 4 of 64 x 64): 0 picks; 32 or 64 forces it
  // Gate and up with SiLU fused (n = 2 n_split, n_split a multiple of 64):
  // silu(gate) * up as BF16 [rows, n_split], rows ld_silu apart, exactly what
  // LaunchSiluMulBf16 makes of y; y is then not written.
  uint16_t* silu_out = nullptr;
  int64_t ld_silu = 0;
};
// The k step and warp columns LaunchGroupedGemm uses for this shape (the
// environment's KRASIS_GROUPED_GEMM=STEPxCOLS, e.g. 32x32, overrides the
// default where it fits, for comparisons inside a whole prefill).
int GroupedGemmStep(const GroupedGemmShape& shape);
int GroupedGemmWarpCols(const GroupedGemmShape& shape);
// Whether LaunchGroupedGemm takes this shape and these weights (k and a
// quantized format's group multiples of the k step, the group dividing k, x
// 16-byte aligned, BF16 weights 8-byte aligned, quantized ones 16, n_split a
// multiple of 16 when quantized); the
// caller otherwise runs one GEMM per expert.
bool GroupedGemmTakes(const GroupedGemmShape& shape, const ExpertGemmWeights* weights, int64_t first, int64_t end);
// The launch's block rows (128 rows of one expert each) for these counts; at
// most kMaxGroupedGemmBlockRows fit one launch.
inline constexpr int64_t kMaxGroupedGemmBlockRows = 65535;
int64_t GroupedGemmBlockRows(const int32_t* counts, int64_t first, int64_t end);
// Device bytes of the launch table for `experts` experts and `rows` rows.
size_t GroupedGemmTableBytes(int64_t experts, int64_t rows);
// counts, offsets and weights are host arrays indexed by expert; `table` is
// device scratch of GroupedGemmTableBytes(end, sum of counts) bytes, which the
// launch fills (an asynchronous copy on `stream`, from pageable memory: small,
// it travels in the stream's commands rather than queueing on a copy engine
// busy with streamed experts) and reads.
absl::Status LaunchGroupedGemm(const GroupedGemmShape& shape, const int32_t* counts, const int32_t* offsets,
                               const ExpertGemmWeights* weights, int64_t first, int64_t end, void* table,
                               size_t table_bytes, cudaStream_t stream);

// The same GEMM planned on the card, so the host never waits for the routing:
// LaunchGroupedGemmPlan turns the expert counts (device, LaunchCountExperts)
// into `plan` (device scratch of GroupedGemmPlanBytes(experts, rows) bytes,
// rows = all routed rows): each expert's first sorted row
// (GroupedGemmPlanOffsets(plan)[e], [experts] = rows; also written to `cursor`
// for LaunchAssignRows when not null) and its row blocks. At most
// kMaxPlannedExperts experts (one thread each in one block).
inline constexpr int64_t kMaxPlannedExperts = 1024;
size_t GroupedGemmPlanBytes(int64_t experts, int64_t rows);
absl::Status LaunchGroupedGemmPlan(const int32_t* counts, int64_t experts, void* plan, int32_t* cursor,
                                   cudaStream_t stream);
const int32_t* GroupedGemmPlanOffsets(const void* plan);
// The launch grid's row blocks for experts [first, end) of `rows` rows: a
// bound (the plan on the card says how many run); at most
// kMaxGroupedGemmBlockRows.
int64_t GroupedGemmPlannedBlockBound(int64_t rows, int64_t first, int64_t end);
// Experts [first, end) of a plan. `device_weights` is a device copy of the
// host array GroupedGemmTakes accepted for this shape (indexed by expert), and
// weights_aligned16 = GroupedGemmWeightsAligned16 of that array. x_rows (device,
// may be null): sorted row r reads row x_rows[r] of shape.x (the tokens'
// rows, no gathered copy); y is written in sorted-row order.
absl::Status LaunchGroupedGemmPlanned(const GroupedGemmShape& shape, const void* plan, int64_t experts, int64_t rows,
                                      const ExpertGemmWeights* device_weights, bool weights_aligned16,
                                      const int32_t* x_rows, int64_t first, int64_t end, cudaStream_t stream);
bool GroupedGemmWeightsAligned16(const ExpertGemmWeights* weights, int64_t first, int64_t end);

// Expert weights as the host stores them, turned into the GEMM's input form just
// before the GEMM (so what crosses PCIe, or stays resident, is the stored form).
// out[0, count) = src widened or narrowed: src BF16, F16 or F32; out BF16
// (out_f32 false) or float (true).
absl::Status LaunchMaterializeDense(DType src_dtype, const void* src, int64_t count, bool out_f32, void* out,
                                    cudaStream_t stream);
// A group-quantized [rows, cols] matrix in the tile-interleaved layout of
// common/quant/quant_format.h (`int4` selects INT4, else INT8; `data` and
// `scales` exactly as the CPU kernels read them) dequantized to a dense
// row-major [rows, cols] BF16 (out_f32 false) or float matrix: w = code * scale
// (float: the CPU's values bit for bit; BF16 from INT4: code * bf16(scale),
// rounded once, the grouped GEMM's INT4 weights).
absl::Status LaunchDequantTiled(bool int4, const uint8_t* data, const float* scales, int64_t rows, int64_t cols,
                                int64_t group_size, bool out_f32, void* out, cudaStream_t stream);

// y[r, c] *= sigmoid(gate[r * gate_stride + (per_row ? 0 : c)]) for rows of
// `cols` floats: an attention output gate (per element) or a gated shared
// expert's per-token scale (per_row).
absl::Status LaunchSigmoidGate(float* y, int64_t rows, int64_t cols, const float* gate, int64_t gate_stride,
                               bool per_row, cudaStream_t stream);

// Gated DeltaNet (models/blocks/gated_deltanet.cc) over a chunk of n tokens, in
// four steps. proj rows (`stride` floats apart) start with the conv input
// [q (nk dk) | k (nk dk) | v (nv dv)] (conv_dim floats); value head h reads key
// head h / (nv / nk). Head dims up to 256.
struct GdnShape {
  int64_t n = 0, stride = 0, nk = 0, nv = 0, dk = 0, dv = 0, kernel = 0;
  int64_t conv_dim() const { return 2 * nk * dk + nv * dv; }
};
// 1. Causal depthwise conv1d and SiLU: mixed[t, c] = silu(bias[c] + sum_j
// w[c, j] in(t - kernel + 1 + j)) with in(t) = proj[t, c], and for t < 0 the
// conv state [conv_dim, kernel - 1] (oldest first); then the state becomes the
// last kernel - 1 inputs. bias may be null. mixed [n, conv_dim].
absl::Status LaunchGdnConv(const float* proj, const GdnShape& shape, const float* weight, const float* bias,
                           float* conv_state, float* mixed, cudaStream_t stream);
// 2. In place on mixed: q and k L2-normalised per key head (eps 1e-6), q also
// scaled by dk^-1/2. gates [n, 2 nv] = [beta = sigmoid(b) | decay =
// exp(neg_a * softplus(a + dt_bias))] from ba rows (ba_stride apart) [b (nv) | a (nv)].
absl::Status LaunchGdnPrepare(float* mixed, const float* ba, int64_t ba_stride, const GdnShape& shape,
                              const float* dt_bias, const float* neg_a, float* gates, cudaStream_t stream);
// 3. The gated delta rule token by token, per value head with state
// S [dk, dv] (state [nv, dk, dv], updated in place): S *= decay; delta =
// (v - k^T S) beta; S += k delta^T; core[t, h] = q^T S. core [n, nv dv].
absl::Status LaunchGdnRecurrence(const float* mixed, const float* gates, const GdnShape& shape, float* state,
                                 float* core, cudaStream_t stream);
// 3'. The same rule chunk by chunk in the WY form (ref::GatedDeltaChunked):
// the work that is parallel over a chunk's tokens runs for all chunks at once,
// leaving one small matrix step per 64 tokens in order instead of one step per
// token. Same inputs and results as LaunchGdnRecurrence, up to fp32 rounding;
// `scratch` holds GdnChunkedScratchFloats(shape) floats (at most 2048 tokens'
// worth: longer chunks go in pieces).
int64_t GdnChunkedScratchFloats(const GdnShape& shape);
absl::Status LaunchGdnChunked(const float* mixed, const float* gates, const GdnShape& shape, float* state, float* core,
                              float* scratch, cudaStream_t stream);
// 4. Gated RMSNorm per value head: out = core / rms(core) * w * silu(z), z rows
// z_stride apart; writes `out` (float) and/or `out_bf16` (either null).
absl::Status LaunchGdnGatedNorm(const float* core, const float* z, int64_t z_stride, const GdnShape& shape,
                                const float* weight, float eps, float* out, uint16_t* out_bf16, cudaStream_t stream);

}  // namespace krasis::cuda
