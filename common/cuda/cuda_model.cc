// The CUDA prefill backend (see cuda_model.h).
#include "common/cuda/cuda_model.h"

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <array>
#include <deque>
#include <functional>
#include <map>
#include <mutex>
#include <thread>
#include <tuple>
#include <utility>
#include <vector>

#include "common/cuda/cuda_check.h"
#include "common/cuda/device_memory.h"
#include "common/cuda/expert_store.h"
#include "common/cuda/prefill_kernels.h"
#include "common/kernels/reference.h"
#include "common/models/gpu_placement.h"
#include "common/quant/expert_set.h"
#include "common/status.h"

#if KRASIS_HAVE_NCCL
#include <nccl.h>
#include <pthread.h>
#include <sched.h>
#endif

namespace krasis {
namespace {

absl::Status CublasStatus(cublasStatus_t s, const char* what) {
  if (s == CUBLAS_STATUS_SUCCESS) return absl::OkStatus();
  return InternalError(what, " failed: ", cublasGetStatusString(s));
}
#define CUBLAS_RETURN_IF_ERROR(call) RETURN_IF_ERROR(CublasStatus((call), #call))

// Uploads the concatenation of `parts` (rows of matrices, or vectors) as BF16
// or F32, widening/narrowing on the host as needed.
absl::Status UploadBf16(const std::vector<const TensorView*>& parts, DeviceMemory& dst) {
  size_t total = 0;
  for (const TensorView* p : parts) total += static_cast<size_t>(p->numel());
  std::vector<uint16_t> host(total);
  size_t at = 0;
  for (const TensorView* p : parts) {
    const size_t n = static_cast<size_t>(p->numel());
    if (p->dtype == DType::kBF16) {
      std::memcpy(&host[at], p->data, n * sizeof(uint16_t));
    } else {
      std::vector<float> f(n);
      ConvertToFloat(p->dtype, p->data, f.data(), n);
      ConvertFromFloat(DType::kBF16, f.data(), &host[at], n);
    }
    at += n;
  }
  RETURN_IF_ERROR(dst.Reserve(total * sizeof(uint16_t)));
  CUDA_RETURN_IF_ERROR(cudaMemcpy(dst.as<void>(), host.data(), total * sizeof(uint16_t), cudaMemcpyHostToDevice));
  return absl::OkStatus();
}

absl::Status UploadFloats(const std::vector<float>& host, DeviceMemory& dst) {
  RETURN_IF_ERROR(dst.Reserve(std::max<size_t>(host.size(), 1) * sizeof(float)));
  CUDA_RETURN_IF_ERROR(cudaMemcpy(dst.as<void>(), host.data(), host.size() * sizeof(float), cudaMemcpyHostToDevice));
  return absl::OkStatus();
}

absl::Status UploadF32(const std::vector<const TensorView*>& parts, DeviceMemory& dst) {
  std::vector<float> host;
  for (const TensorView* p : parts) {
    std::vector<float> f = ToFloatVector(*p);
    host.insert(host.end(), f.begin(), f.end());
  }
  return UploadFloats(host, dst);
}

// The biases of a fused projection: parts of the given widths, zeros where a
// part has none; *any says whether there was one at all (nothing uploaded if not).
absl::Status UploadBias(std::initializer_list<std::pair<const TensorView*, int64_t>> parts, DeviceMemory& dst,
                        bool* any) {
  std::vector<float> bias;
  *any = false;
  for (auto [view, width] : parts) {
    if (view->data == nullptr) {
      bias.insert(bias.end(), static_cast<size_t>(width), 0.0f);
      continue;
    }
    *any = true;
    std::vector<float> b = ToFloatVector(*view);
    bias.insert(bias.end(), b.begin(), b.end());
  }
  return *any ? UploadFloats(bias, dst) : absl::OkStatus();
}

// Rows [first, first + count) of a matrix (or elements of a vector), as a view.
TensorView Rows(const TensorView& m, int64_t first, int64_t count) {
  const int64_t row = m.rank() > 1 ? m.numel() / m.dim(0) : 1;
  TensorView v{m.dtype, m.rank() > 1 ? Shape{count, row} : Shape{count}, nullptr};
  v.data = m.data + static_cast<size_t>(first * row) * DTypeSize(m.dtype);
  return v;
}

std::vector<const TensorView*> Pointers(const std::vector<TensorView>& views) {
  std::vector<const TensorView*> out;
  for (const TensorView& v : views) out.push_back(&v);
  return out;
}

// A GEMM weight: BF16, or F32 in the checking mode.
absl::Status UploadWeight(const std::vector<const TensorView*>& parts, DeviceMemory& dst, bool f32) {
  return f32 ? UploadF32(parts, dst) : UploadBf16(parts, dst);
}

struct GpuMlp {
  DeviceMemory gate_up;  // BF16 (F32 in the checking mode) [2 * inter, hidden]: gate rows then up rows
  DeviceMemory down;     // [hidden, inter]
  int64_t inter = 0;

  absl::Status Upload(const MlpDesc& d, bool f32) {
    inter = d.inter;
    if (inter == 0) return absl::OkStatus();
    RETURN_IF_ERROR(UploadWeight({&d.gate, &d.up}, gate_up, f32));
    return UploadWeight({&d.down}, down, f32);
  }
};

struct GpuLayer {
  DeviceMemory input_norm, post_norm;  // F32 [hidden]
  MixerDesc::Kind mixer_kind = MixerDesc::Kind::kGqa;
  // GQA; MLA reuses the fields noted.
  GqaDesc gqa;
  MlaDesc mla;
  int64_t q_width = 0, kv_width = 0, qkv_width = 0;  // MLA: q part (q_lora or heads * qk), -, q part + kv_a
  // GQA with an output gate: qkv rows are [q | gate | k | v] (the checkpoint's
  // per-head [q_h | gate_h] rows regrouped at upload); k starts at k_offset.
  bool output_gate = false;
  int64_t k_offset = 0;
  int rope = 0;                        // index into the backend's distinct ropes
  DeviceMemory qkv;                    // [q + 2 kv, hidden]; MLA: [q_a or q ; kv_a]
  DeviceMemory qkv_bias;               // F32 [qkv_width] (has_bias)
  bool has_bias = false;
  DeviceMemory o;                      // [hidden, heads * hd]; MLA: [hidden, heads * v]
  DeviceMemory o_bias;                 // F32 [hidden] (MLA, optional)
  DeviceMemory q_norm, k_norm;         // F32 [hd]; MLA: q_a_layernorm, kv_a_layernorm
  DeviceMemory q_b, kv_b;              // MLA: [heads * qk, q_lora], [heads * (nope + v), kv_lora]
  int64_t kv_row = 0;                  // floats per token in the cache: k then v
  DeviceMemory kv;                     // F32 [capacity, kv_row]: the sequence's keys and values
  // Gated DeltaNet: in_qkvz and in_ba regrouped at upload so a token's
  // projection is [q | k | v | z | b | a] (the conv input first).
  cuda::GdnShape gdn;                  // n and stride per chunk
  float gdn_eps = 1e-6f;
  DeviceMemory gdn_in;                 // [conv_dim + nv dv + 2 nv, hidden]
  DeviceMemory conv_w, conv_b, dt_bias, neg_a, gdn_norm;  // F32
  bool has_conv_bias = false;
  // F32 [conv_dim, kernel - 1], [nv, dk, dv]: the sequence's state on the card.
  // It stays there between the chunks of one prompt (state_epoch: the Begin it
  // belongs to, state_pos: the position it has reached), so only a prompt's
  // first chunk uploads it; every chunk copies it back (via state_out_).
  DeviceMemory conv_state, rec_state;
  int64_t state_epoch = -1, state_pos = -1;
  size_t state_out = 0;  // its floats' offset in state_out_
  // Feed-forward
  FfnDesc::Kind ffn_kind = FfnDesc::Kind::kDense;
  GpuMlp dense;
  RouterParams router;
  DeviceMemory router_weight;          // F32 [experts, hidden]
  DeviceMemory correction_bias;        // F32 [experts]
  int64_t expert_inter = 0;           // routed experts: in the backend's ExpertStore
  bool grouped = false;                // ... computed by the grouped expert GEMM (else one GEMM per expert)
  GpuMlp shared;
  DeviceMemory shared_gate;            // F32 [hidden] (gated shared expert), else empty
  bool has_shared_gate = false;
};

class CudaPrefillBackend final : public PrefillBackend {
 public:
  CudaPrefillBackend(const DecoderModel& model, const CudaBackendOptions& options, CudaBackendInfo* info)
      : model_(model),
        options_(options),
        info_(info),
        f32_(options.precision == CudaBackendOptions::Precision::kF32),
        act_type_(f32_ ? CUDA_R_32F : CUDA_R_16BF),
        act_bytes_(f32_ ? sizeof(float) : sizeof(uint16_t)) {}
  ~CudaPrefillBackend() override {
    if (cublas_ != nullptr) cublasDestroy(cublas_);
    for (cudaEvent_t e : rows_ready_) {
      if (e != nullptr) cudaEventDestroy(e);
    }
    if (rows_converted_ != nullptr) cudaEventDestroy(rows_converted_);
    if (kv_stream_ != nullptr) cudaStreamDestroy(kv_stream_);
    if (stream_ != nullptr) cudaStreamDestroy(stream_);
  }

  std::string name() const override { return "cuda"; }
  // Card `rank` of `cards` (before Init): it holds its share of every layer's
  // routed experts, and only rank 0 writes to the sequence, cache and logits.
  void SetCard(int rank, int cards) { rank_ = rank, cards_ = cards; }
  // Stage `stage` of a pipeline of cards split by layers (before Init): it
  // holds layers [first, end) only, receives its input hidden states from
  // stage - 1 (unless first is 0) and sends its output to stage + 1 (unless
  // end is the last layer), over the communicator of SetComm.
  void SetStage(int stage, int first, int end) { stage_ = stage, first_layer_ = first, end_layer_ = end; }
  int first_layer() const { return first_layer_; }
  int end_layer() const { return end_layer_; }
  int64_t vocab() const { return vocab_; }
  bool streams() const { return experts_.streamed_layers() > 0; }
#if KRASIS_HAVE_NCCL
  void SetComm(ncclComm_t comm) { comm_ = comm; }
#endif
  absl::Status Init();
  // Which layers' routed experts stay on the card (the rest stream), from the
  // VRAM budget and what is already allocated.
  absl::StatusOr<std::vector<bool>> PlaceExperts(const std::vector<cuda::ExpertLayout>& layouts, size_t free_at_start);
  absl::Status InitGqa(GpuLayer& L, const GqaDesc& g);
  absl::Status InitMla(GpuLayer& L, const MlaDesc& m);
  absl::Status InitGdn(GpuLayer& L, const GdnDesc& g);
  // Floats of the chunked delta rule's scratch for chunks of n tokens (0 when
  // the rule runs token by token).
  int64_t GdnScratchFloats(int64_t n) const;
  int RopeIndex(const Rope* rope);
  absl::Status Begin(const SequenceState& seq, PagedKvCache& cache, int64_t total_tokens) override;
  absl::Status Forward(std::span<const int32_t> tokens, SequenceState& seq, PagedKvCache& cache,
                       std::vector<float>* logits, bool all_positions,
                       const std::function<void(int layer)>& on_layer_done) override;
  std::vector<std::pair<std::string, double>> TakeProfile() override;

 private:
  // y[n, out] = x[n, in] W^T: x and W in the GEMM input type (BF16, or F32),
  // F32 output and accumulation.
  absl::Status Gemm(const void* x, int64_t n, const DeviceMemory& w, int64_t out, int64_t in, float* y) {
    return GemmPtr(x, n, w.as<void>(), out, in, y, out);
  }
  // The same with W anywhere and y's rows ldy elements apart; y float, or BF16
  // when out_type is CUDA_R_16BF (rounded from the fp32 accumulation).
  // beta 1 adds the product to y (float) instead of overwriting it.
  absl::Status GemmPtr(const void* x, int64_t n, const void* w, int64_t out, int64_t in, void* y, int64_t ldy,
                       cudaDataType_t out_type = CUDA_R_32F, float beta = 0.0f);
  // A routed expert's matrix in the GEMM input form: the stored bytes at `base`
  // themselves when they already are (BF16 as stored), else converted into wscratch_.
  absl::StatusOr<const void*> ExpertMatrix(const cuda::StoredMatrix& m, const char* base, size_t scratch_offset = 0);
  bool UsableAsStored(const cuda::StoredMatrix& m) const { return m.quant == 0 && !f32_ && m.dtype == DType::kBF16; }
  // RMSNorm of `rows` rows of x into the GEMM input buffer xn_act (and, when
  // want_f32, into xn_ as float too).
  absl::Status Norm(const float* x, int64_t rows, const DeviceMemory& w, bool want_f32);
  // x += add, then Norm of the sum (one kernel).
  absl::Status AddNorm(float* x, const float* add, int64_t rows, const DeviceMemory& w, bool want_f32);
  // Row `row` of a GEMM input buffer of `dim` columns.
  void* ActRow(const DeviceMemory& m, int64_t row, int64_t dim) const {
    return m.as<char>() + static_cast<size_t>(row * dim) * act_bytes_;
  }
  const void* xn_act() const { return f32_ ? xn_.as<void>() : xn16_.as<void>(); }
  absl::Status Attention(GpuLayer& L, int64_t n, int64_t start);
  absl::Status Mla(GpuLayer& L, int64_t n, int64_t start);
  // Gated DeltaNet over the chunk, from and back into the sequence's state.
  absl::Status DeltaNet(GpuLayer& L, int64_t n, int64_t start, LinearState& state);

  // Where a Forward's time goes (options_.profile).
  enum Stage { kEmbed, kMixerProj, kAttention, kKvOut, kRouting, kExpertWait, kExperts, kMlp, kReduce, kLmHead, kStages };
  // Adds the time since the last Lap to `stage`, after the stream drains.
  absl::Status Lap(Stage stage);
  // options_.profile_steps: adds the time since the last Step or Lap to step
  // `name` of `stage`, after the stream drains.
  absl::Status Step(Stage stage, const char* name);
  double stage_ms_[kStages] = {};
  std::chrono::steady_clock::time_point lap_, step_lap_;
  std::vector<std::pair<std::string, double>> step_ms_;  // in the order first seen
  // Stores the chunk's cache rows (`src`, rows `src_stride` floats apart) as
  // rows [start, start + n) of the layer's on-card store, rounded as the cache
  // stores them (attention then reads them as the CPU does).
  absl::Status StoreRows(GpuLayer& L, const float* src, int64_t src_stride, int64_t n, int64_t start);
  // The GEMM input form of n rows of `cols` floats (rows `stride` apart): the
  // floats themselves in the checking mode, else BF16 in `scratch`.
  absl::StatusOr<const void*> AsGemmInput(const float* x, int64_t n, int64_t cols, int64_t stride, DeviceMemory& f32,
                                          DeviceMemory& bf16);
  // out = the MLP of x, or out += it (accumulate).
  absl::Status Mlp(const GpuMlp& m, const void* x, int64_t n, float* out, bool accumulate = false);
  absl::Status Moe(GpuLayer& L, int64_t n, float* out);
  // The MoE block's end: the shared expert (first card) added to `out`, then
  // the sum over the cards.
  absl::Status SharedAndReduce(GpuLayer& L, int64_t n, float* out);
  // The routed experts' products over the sorted rows of this card's experts
  // -> gate_up_ -> act_ -> expert_out_. Grouped (PlannedMoe): one launch per
  // matrix for all experts, where the layer's weight forms allow it;
  // ExpertByExpert (the checking mode, or forms the grouped GEMM does not
  // take): rows_act_ -> one cuBLAS GEMM per expert and matrix.
  struct GroupedMoe {
    cuda::GroupedGemmShape gate_up, down;
    std::vector<cuda::ExpertGemmWeights> gate_up_w, down_w;
  };
  // The grouped GEMMs of a layer whose experts lie at card address `base`
  // (false when the layer's weight forms do not allow them).
  bool PlanGrouped(const cuda::ExpertLayout& layout, uintptr_t base, GroupedMoe* plan) const;
  // The routed experts with the grouped GEMM planned on the card
  // (LaunchGroupedGemmPlan): the host never waits for the routing, and the
  // gate/up GEMM reads the tokens' normed rows (xn16_) through token_of_row_
  // instead of a gathered copy. For layers whose experts all take the grouped
  // GEMM, in BF16 mode.
  absl::Status PlannedMoe(GpuLayer& L, int64_t n, float* out);
  bool UsePlannedMoe(const GpuLayer& L, int64_t n) const;
  // A device copy of a part's weight table (PlanGrouped's gate_up_w then
  // down_w), made the first time the part is seen at `base` (a resident layer,
  // or one of the streamed layers' staging buffers).
  struct DeviceWeights {
    DeviceMemory table;
    bool gate_up_aligned16 = false, down_aligned16 = false;
  };
  absl::StatusOr<const DeviceWeights*> PartWeights(size_t layer, int part, const char* base, const GroupedMoe& plan);
  std::map<std::tuple<size_t, int, uintptr_t>, DeviceWeights> part_weights_;
  absl::Status ExpertByExpert(const cuda::ExpertLayout& layout, const char* base, const std::vector<int32_t>& counts,
                              const std::vector<int32_t>& offsets, int64_t row0, int64_t row1);
  absl::Status SiluMulRows(int64_t inter, int64_t row0, int64_t row1);
  absl::Status ReserveWorkspace(int64_t n);
  // MLA's buffers over every position so far, reserved before the first layer
  // runs so that running out of memory happens before any row goes out.
  absl::Status ReservePositions(int64_t positions);

  const DecoderModel& model_;
  CudaBackendOptions options_;
  int rank_ = 0, cards_ = 1;  // split by experts: this card's share
  // Split by layers: this card's stage and layers [first_layer_, end_layer_)
  // (end_layer_ -1 until Init: every layer).
  int stage_ = 0, first_layer_ = 0, end_layer_ = -1;
  bool last_stage() const { return end_layer_ == static_cast<int>(layers_.size()); }
#if KRASIS_HAVE_NCCL
  ncclComm_t comm_ = nullptr;
#endif
  CudaBackendInfo* info_ = nullptr;
  cuda::ExpertStore experts_;
  int stream_parts_ = 1;  // streamed layers move in this many parts (the placement's choice)
  DeviceMemory wscratch_;  // one expert matrix in the GEMM input form
  const bool f32_;               // the fp32 checking mode
  const cudaDataType act_type_;  // GEMM input type: CUDA_R_16BF, or CUDA_R_32F
  const size_t act_bytes_;
  float eps_ = 1e-6f;
  bool zero_centred_ = false;
  cudaStream_t stream_ = nullptr;
  cublasHandle_t cublas_ = nullptr;
  std::vector<GpuLayer> layers_;
  std::vector<const Rope*> ropes_;  // distinct ropes of the attention layers
  DeviceMemory final_norm_, lm_head_;
  int64_t hidden_ = 0, vocab_ = 0, capacity_ = 0;
  int64_t max_qkv_ = 0, max_attn_ = 0, max_inter_ = 0, max_expert_inter_ = 0, max_experts_ = 0, max_top_k_ = 0, max_kv_row_ = 0;
  int64_t max_q_ = 0, max_q_lora_ = 0;  // MLA: heads * qk, q_lora
  int64_t max_conv_dim_ = 0, max_linear_heads_ = 0;  // Gated DeltaNet
  int64_t workspace_tokens_ = 0;
  // Workspace for a chunk of workspace_tokens_ tokens. *16_ and act_/rows_act_
  // hold GEMM inputs (BF16; unused or F32 in the checking mode).
  DeviceMemory x_, xn_, xn16_, qkv_, attn_, attn16_, mix_, ffn_out_, shared_out_;
  DeviceMemory gate_up_, act_, rows_act_, expert_out_;
  DeviceMemory gdn_mixed_, gdn_gates_, gdn_scratch_, gate_logits_;  // Gated DeltaNet's conv output and gates; shared-expert gate
  DeviceMemory router_logits_, ids_, weights_, counts_, cursor_, row_of_choice_, token_of_row_;
  // LaunchGroupedGemmPlan's plan (PlannedMoe), built on the card: no launch
  // table crosses PCIe. (Copied from the host, pinned tables queued on the copy
  // engine behind the streamed experts -- DeepSeek-V2-Lite INT4 at a 1/3 budget,
  // 16K tokens: 0.86 s against 0.63 s pageable -- and pageable ones kept the
  // host in step with the card.)
  DeviceMemory gemm_plan_;
  std::vector<DeviceMemory> rope_tables_;
  std::vector<DeviceMemory> rope_freqs_;  // each rope's inv_freq, for LaunchRopeTable
  DeviceMemory logits_;
  // MLA: queries, q_a, and per-position latents / expanded keys and values.
  DeviceMemory q_, qa_, qa16_, lat_, lat16_, kvb_, k_, v_;
  // Keys and values in BF16 for the attention kernel (UseBf16Kv): GQA's store, MLA's expanded k_ / v_.
  DeviceMemory kv16_, k16_, v16_;
  // MLA's attention over `n` new tokens from `start`, in the expanded form.
  cuda::AttentionShape MlaShape(const MlaDesc& m, int64_t n, int64_t start) const;
  // v_offset: elements from the K buffer's start to the V rows (16-byte alignment of both).
  bool UseBf16Kv(const cuda::AttentionShape& s, int64_t v_offset) const {
    return cuda::CausalAttentionTakesBf16Kv(s) && s.k_stride % 8 == 0 && s.v_stride % 8 == 0 && v_offset % 8 == 0;
  }
  DType kv_dtype_ = DType::kF32;  // the cache's, for the current Forward
  // A layer's new rows go to the host cache through one of kRowSlots slots:
  // kv_out16_ (as BF16/F16, on the card) and host_rows_ (pinned), each
  // kRowSlots x workspace_tokens_ x max_kv_row_ elements. The host writes
  // layer l's rows into the cache while the card is up to kRowSlots layers
  // ahead: waiting for each layer's rows before queueing the next left the
  // card idle whenever the host's copy outlasted the layer's feed-forward block
  // (small chunks, the pipeline's micro-chunks).
  static constexpr int kRowSlots = 4;
  DeviceMemory kv_out16_;
  std::array<cudaEvent_t, kRowSlots> rows_ready_{};  // slot s's rows are in host_rows_
  // The rows go to the host on kv_stream_ (after rows_converted_ on stream_),
  // so the copy does not hold up the layer's feed-forward kernels.
  cudaStream_t kv_stream_ = nullptr;
  cudaEvent_t rows_converted_ = nullptr;
  PinnedMemory host_rows_;
  // The token embedding on the card (lm_head_ itself when the two are tied):
  // BF16, or float in the checking mode or when the checkpoint stores it so.
  DeviceMemory embed_;
  const DeviceMemory* embed_table_ = nullptr;
  bool embed_f32_ = false;
  PinnedMemory host_ids_;
  DeviceMemory token_ids_;
  // Gated DeltaNet: each layer's state after the chunk, copied here
  // asynchronously and into the sequence once the pass is done.
  PinnedMemory state_out_;
  size_t state_out_floats_ = 0;
  int64_t begin_epoch_ = 0;
};

absl::Status CudaPrefillBackend::Init() {
  CUDA_RETURN_IF_ERROR(cudaSetDevice(options_.device));
  size_t free_at_start = 0, total = 0;
  CUDA_RETURN_IF_ERROR(cudaMemGetInfo(&free_at_start, &total));
  std::vector<cuda::ExpertLayout> layouts(model_.layers.size());
  CUDA_RETURN_IF_ERROR(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
  CUBLAS_RETURN_IF_ERROR(cublasCreate(&cublas_));
  for (cudaEvent_t& e : rows_ready_) CUDA_RETURN_IF_ERROR(cudaEventCreateWithFlags(&e, cudaEventDisableTiming));
  CUDA_RETURN_IF_ERROR(cudaEventCreateWithFlags(&rows_converted_, cudaEventDisableTiming));
  CUDA_RETURN_IF_ERROR(cudaStreamCreateWithFlags(&kv_stream_, cudaStreamNonBlocking));
  CUBLAS_RETURN_IF_ERROR(cublasSetStream(cublas_, stream_));
  const ModelConfig& c = model_.config();
  hidden_ = c.hidden_size;
  vocab_ = c.vocab_size;
  eps_ = static_cast<float>(c.rms_norm_eps);
  zero_centred_ = model_.zero_centred_norms;
  layers_.resize(model_.layers.size());
  if (end_layer_ < 0) end_layer_ = static_cast<int>(layers_.size());
  if (first_layer_ < 0 || first_layer_ >= end_layer_ || end_layer_ > static_cast<int>(layers_.size())) {
    return InvalidArgumentError("layers [", first_layer_, ", ", end_layer_, ") of a ", layers_.size(), "-layer model");
  }
  // (Layers outside [first_layer_, end_layer_) stay empty: another card's.)
  for (size_t l = static_cast<size_t>(first_layer_); l < static_cast<size_t>(end_layer_); ++l) {
    const DecoderLayer& src = model_.layers[l];
    GpuLayer& L = layers_[l];
    RETURN_IF_ERROR(UploadF32({&src.input_norm}, L.input_norm));
    RETURN_IF_ERROR(UploadF32({&src.post_norm}, L.post_norm));
    std::optional<MixerDesc> mixer = src.mixer->Describe();
    if (!mixer.has_value()) {
      return absl::UnimplementedError(
          StrCat("the CUDA backend does not run layer ", l, "'s token mixer (undescribed); use --backend cpu"));
    }
    switch (mixer->kind) {
      case MixerDesc::Kind::kGqa: RETURN_IF_ERROR(InitGqa(L, mixer->gqa)); break;
      case MixerDesc::Kind::kMla: RETURN_IF_ERROR(InitMla(L, mixer->mla)); break;
      case MixerDesc::Kind::kGatedDeltaNet: RETURN_IF_ERROR(InitGdn(L, mixer->gdn)); break;
    }
    max_kv_row_ = std::max(max_kv_row_, L.kv_row);

    std::optional<FfnDesc> ffn = src.ffn->Describe();
    if (!ffn.has_value()) return absl::UnimplementedError(StrCat("layer ", l, "'s feed-forward block is undescribed"));
    L.ffn_kind = ffn->kind;
    if (ffn->kind == FfnDesc::Kind::kDense) {
      RETURN_IF_ERROR(L.dense.Upload(ffn->dense, f32_));
      max_inter_ = std::max(max_inter_, L.dense.inter);
      continue;
    }
    if (ffn->shared_gate.data != nullptr) {
      L.has_shared_gate = true;
      RETURN_IF_ERROR(UploadF32({&ffn->shared_gate}, L.shared_gate));
    }
    L.router = ffn->router;
    RETURN_IF_ERROR(UploadF32({&ffn->router_weight}, L.router_weight));
    if (!ffn->correction_bias.empty()) RETURN_IF_ERROR(UploadFloats(ffn->correction_bias, L.correction_bias));
    ASSIGN_OR_RETURN(layouts[l], cuda::LayoutExperts(*ffn, hidden_, rank_, cards_));
    L.expert_inter = layouts[l].inter;
    max_expert_inter_ = std::max(max_expert_inter_, L.expert_inter);
    RETURN_IF_ERROR(L.shared.Upload(ffn->shared, f32_));
    max_inter_ = std::max(max_inter_, L.shared.inter);
    max_experts_ = std::max(max_experts_, L.router.num_experts);
    max_top_k_ = std::max(max_top_k_, L.router.top_k);
  }
  // The head on the last stage, the embedding on the first.
  if (last_stage()) {
    RETURN_IF_ERROR(UploadF32({&model_.final_norm}, final_norm_));
    RETURN_IF_ERROR(UploadWeight({&model_.lm_head.weight}, lm_head_, f32_));
  }
  embed_f32_ = f32_ || model_.embed.dtype != DType::kBF16;  // exactly the values the CPU widens
  if (first_layer_ > 0) {
    embed_table_ = nullptr;
  } else if (model_.embed.data == model_.lm_head.weight.data && embed_f32_ == f32_ && last_stage()) {
    embed_table_ = &lm_head_;  // tied: one copy
  } else {
    RETURN_IF_ERROR(UploadWeight({&model_.embed}, embed_, embed_f32_));
    embed_table_ = &embed_;
  }
  RETURN_IF_ERROR(state_out_.Reserve(std::max<size_t>(state_out_floats_, 1) * sizeof(float)));
  rope_tables_.resize(ropes_.size());
  rope_freqs_.resize(ropes_.size());
  for (size_t r = 0; r < ropes_.size(); ++r) {
    const std::vector<float>& inv_freq = ropes_[r]->inv_freq;
    RETURN_IF_ERROR(rope_freqs_[r].Reserve(std::max<size_t>(inv_freq.size(), 1) * sizeof(float)));
    CUDA_RETURN_IF_ERROR(cudaMemcpy(rope_freqs_[r].as<void>(), inv_freq.data(), inv_freq.size() * sizeof(float),
                                    cudaMemcpyHostToDevice));
  }
  size_t scratch = 0;
  for (const cuda::ExpertLayout& e : layouts) scratch = std::max<size_t>(scratch, static_cast<size_t>(e.inter * hidden_));
  RETURN_IF_ERROR(wscratch_.Reserve(std::max<size_t>(2 * scratch, 1) * act_bytes_));  // gate and up
  ASSIGN_OR_RETURN(std::vector<bool> resident, PlaceExperts(layouts, free_at_start));
  RETURN_IF_ERROR(experts_.Init(std::move(layouts), resident, options_.pinning, stream_parts_));
  // Which layers the grouped expert GEMM computes, decided once: their weight
  // forms and alignments do not change (card buffers are 256-byte aligned, and
  // the layout keeps every matrix's host address modulo 256).
  int grouped_layers = 0;
  for (size_t l = 0; l < layers_.size(); ++l) {
    if (experts_.layout(l).experts.empty()) continue;
    GroupedMoe plan;
    bool grouped = options_.grouped_experts;
    for (int p = 0; p < experts_.parts(l) && grouped; ++p) grouped = PlanGrouped(experts_.part(l, p), 256, &plan);
    layers_[l].grouped = grouped;
    grouped_layers += layers_[l].grouped ? 1 : 0;
  }
  if (info_ != nullptr) {
    const int64_t budget = info_->budget_bytes;  // set by PlaceExperts
    *info_ = {};
    info_->budget_bytes = budget;
    for (size_t l = 0; l < layers_.size(); ++l) {
      const cuda::ExpertLayout& e = experts_.layout(l);
      if (e.experts.empty()) continue;
      ++info_->moe_layers;
      info_->expert_format = e.format;
      (experts_.streamed(l) ? info_->streamed_expert_bytes : info_->resident_expert_bytes) +=
          static_cast<int64_t>(e.bytes);
    }
    info_->streamed_layers = experts_.streamed_layers();
    info_->staging_bytes = static_cast<int64_t>(experts_.staging_bytes());
    info_->pinning = cuda::PinningName(experts_.pinning());
    info_->grouped_layers = grouped_layers;
    info_->stream_parts = experts_.streamed_layers() > 0 ? stream_parts_ : 1;
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<bool>> CudaPrefillBackend::PlaceExperts(const std::vector<cuda::ExpertLayout>& layouts,
                                                                   size_t free_at_start) {
  size_t free_now = 0, total = 0;
  CUDA_RETURN_IF_ERROR(cudaMemGetInfo(&free_now, &total));
  constexpr int64_t kMargin = int64_t{1} << 30;
  const int64_t budget = options_.vram_budget_bytes > 0 ? options_.vram_budget_bytes
                                                         : static_cast<int64_t>(free_at_start) - kMargin;
  // What the plan must leave room for besides the experts: the weights uploaded
  // so far, a chunk's workspace, and the prompt's KV (and MLA's per-position
  // buffers) for plan_context_tokens.
  const int64_t chunk = options_.plan_chunk_tokens, context = options_.plan_context_tokens;
  const int64_t rows = chunk * std::max<int64_t>(max_top_k_, 1);
  int64_t workspace = chunk * hidden_ * 4 * 6 +
                      chunk * (max_qkv_ + 2 * max_attn_ + max_q_ + 2 * max_q_lora_ + max_conv_dim_ + 2 * max_linear_heads_ + 1) * 4 +
                      std::max(rows * max_expert_inter_, chunk * max_inter_) * 3 * 4 + rows * 2 * hidden_ * 4 +
                      chunk * max_experts_ * 4 + GdnScratchFloats(chunk) * 4;
  int64_t positions = 0, mla_per_position = 0;
  for (const GpuLayer& L : layers_) {
    positions += context * L.kv_row * 4;
    if (L.mixer_kind == MixerDesc::Kind::kMla) {
      const MlaDesc& m = L.mla;
      mla_per_position = std::max(mla_per_position, m.heads * (2 * m.nope + m.rope_dim + 2 * m.v_dim) * 4 +
                                                        m.heads * (m.nope + m.rope_dim + m.v_dim) * 2 + m.kv_lora * 6);
    }
  }
  positions += context * (mla_per_position + max_kv_row_ * 2);
  GpuPlacementInput in;
  in.budget_bytes = budget;
  in.fixed_bytes = static_cast<int64_t>(free_at_start - free_now) + workspace + positions;
  for (const cuda::ExpertLayout& e : layouts) in.layers.push_back({0, static_cast<int64_t>(e.bytes), e.end - e.first});
  auto plan = PlanGpuPlacement(in, options_.expert_parts);
  if (!plan.ok()) {
    return absl::ResourceExhaustedError(StrCat(plan.status().message(), " (", chunk, "-token chunks, room for ",
                                               context, " tokens of KV)"));
  }
  if (info_ != nullptr) info_->budget_bytes = budget;
  stream_parts_ = options_.expert_parts > 0 ? options_.expert_parts : plan->stream_parts;
  std::vector<bool> resident = plan->experts_resident;
  if (options_.max_resident_expert_layers >= 0) {
    int kept = 0;
    for (size_t l = 0; l < resident.size(); ++l) {
      if (layouts[l].experts.empty() || !resident[l]) continue;
      resident[l] = kept++ < options_.max_resident_expert_layers;
    }
  }
  return resident;
}

int CudaPrefillBackend::RopeIndex(const Rope* rope) {
  auto same = [&](const Rope* r) {
    return r->rot_dim == rope->rot_dim && r->interleaved == rope->interleaved &&
           r->attention_factor == rope->attention_factor && r->inv_freq == rope->inv_freq;
  };
  auto it = std::find_if(ropes_.begin(), ropes_.end(), same);
  if (it == ropes_.end()) {
    ropes_.push_back(rope);
    return static_cast<int>(ropes_.size()) - 1;
  }
  return static_cast<int>(it - ropes_.begin());
}

absl::Status CudaPrefillBackend::InitGqa(GpuLayer& L, const GqaDesc& g) {
  L.mixer_kind = MixerDesc::Kind::kGqa;
  L.gqa = g;
  L.q_width = g.heads * g.head_dim;
  L.kv_width = g.kv_heads * g.head_dim;
  L.output_gate = g.output_gate;
  L.k_offset = L.q_width * (g.output_gate ? 2 : 1);
  L.qkv_width = L.k_offset + 2 * L.kv_width;
  L.kv_row = 2 * L.kv_width;
  // With an output gate the checkpoint's q rows are per head [q_h | gate_h]:
  // regrouped into [all q | all gate] so that the queries are contiguous heads.
  std::vector<TensorView> q_parts, q_bias_parts;
  for (int part = 0; part < (g.output_gate ? 2 : 1); ++part) {
    for (int64_t h = 0; h < (g.output_gate ? g.heads : 1); ++h) {
      const int64_t first = g.output_gate ? (2 * h + part) * g.head_dim : 0;
      const int64_t count = g.output_gate ? g.head_dim : L.q_width;
      q_parts.push_back(Rows(g.q, first, count));
      if (g.q_bias.data != nullptr) q_bias_parts.push_back(Rows(g.q_bias, first, count));
    }
  }
  std::vector<const TensorView*> qkv_parts = Pointers(q_parts);
  qkv_parts.push_back(&g.k);
  qkv_parts.push_back(&g.v);
  RETURN_IF_ERROR(UploadWeight(qkv_parts, L.qkv, f32_));
  RETURN_IF_ERROR(UploadWeight({&g.o}, L.o, f32_));
  std::vector<float> q_bias;  // regrouped like the rows
  for (const TensorView& v : q_bias_parts) {
    std::vector<float> b = ToFloatVector(v);
    q_bias.insert(q_bias.end(), b.begin(), b.end());
  }
  const TensorView q_bias_view{DType::kF32, {static_cast<int64_t>(q_bias.size())},
                               q_bias.empty() ? nullptr : reinterpret_cast<const std::byte*>(q_bias.data())};
  RETURN_IF_ERROR(UploadBias({{&q_bias_view, L.k_offset}, {&g.k_bias, L.kv_width}, {&g.v_bias, L.kv_width}},
                             L.qkv_bias, &L.has_bias));
  if (g.qk_norm) {
    RETURN_IF_ERROR(UploadF32({&g.q_norm}, L.q_norm));
    RETURN_IF_ERROR(UploadF32({&g.k_norm}, L.k_norm));
  }
  L.rope = RopeIndex(g.rope);
  max_qkv_ = std::max(max_qkv_, L.qkv_width);
  max_attn_ = std::max(max_attn_, L.q_width);
  return absl::OkStatus();
}

absl::Status CudaPrefillBackend::InitMla(GpuLayer& L, const MlaDesc& m) {
  L.mixer_kind = MixerDesc::Kind::kMla;
  L.mla = m;
  const int64_t qk = m.nope + m.rope_dim, kva = m.kv_lora + m.rope_dim;
  L.q_width = m.q_lora > 0 ? m.q_lora : m.heads * qk;  // the q part of the first projection
  L.qkv_width = L.q_width + kva;
  L.kv_row = kva;
  const TensorView& q_in = m.q_lora > 0 ? m.q_a : m.q;
  RETURN_IF_ERROR(UploadWeight({&q_in, &m.kv_a}, L.qkv, f32_));
  RETURN_IF_ERROR(UploadBias({{&m.q_a_bias, L.q_width}, {&m.kv_a_bias, kva}}, L.qkv_bias, &L.has_bias));
  if (m.q_lora > 0) {
    RETURN_IF_ERROR(UploadF32({&m.q_a_norm}, L.q_norm));
    RETURN_IF_ERROR(UploadWeight({&m.q_b}, L.q_b, f32_));
  }
  RETURN_IF_ERROR(UploadF32({&m.kv_a_norm}, L.k_norm));
  RETURN_IF_ERROR(UploadWeight({&m.kv_b}, L.kv_b, f32_));
  RETURN_IF_ERROR(UploadWeight({&m.o}, L.o, f32_));
  if (m.o_bias.data != nullptr) RETURN_IF_ERROR(UploadF32({&m.o_bias}, L.o_bias));
  L.rope = RopeIndex(m.rope);
  max_qkv_ = std::max(max_qkv_, L.qkv_width);
  max_attn_ = std::max(max_attn_, m.heads * m.v_dim);
  max_q_ = std::max(max_q_, m.heads * qk);
  max_q_lora_ = std::max(max_q_lora_, m.q_lora);
  return absl::OkStatus();
}

absl::Status CudaPrefillBackend::InitGdn(GpuLayer& L, const GdnDesc& g) {
  L.mixer_kind = MixerDesc::Kind::kGatedDeltaNet;
  cuda::GdnShape& s = L.gdn;
  s.nk = g.nk, s.nv = g.nv, s.dk = g.dk, s.dv = g.dv, s.kernel = g.kernel;
  L.gdn_eps = g.norm_eps;
  const int64_t r = g.nv / g.nk, rdv = r * g.dv, group = 2 * g.dk + 2 * rdv, value_dim = g.nv * g.dv;
  if (g.dk > 256 || g.dv > 256) {
    return absl::UnimplementedError(StrCat("the CUDA backend runs Gated DeltaNet heads of up to 256 dims, not dk ",
                                           g.dk, " / dv ", g.dv, "; use --backend cpu"));
  }
  // [q | k | v | z] from each key-head group of in_qkvz, then [b | a] from in_ba.
  std::vector<TensorView> parts;
  for (auto [offset, count] : {std::pair{int64_t{0}, g.dk}, {g.dk, g.dk}, {2 * g.dk, rdv}, {2 * g.dk + rdv, rdv}}) {
    for (int64_t k = 0; k < g.nk; ++k) parts.push_back(Rows(g.in_qkvz, k * group + offset, count));
  }
  for (int64_t part = 0; part < 2; ++part) {
    for (int64_t k = 0; k < g.nk; ++k) parts.push_back(Rows(g.in_ba, k * 2 * r + part * r, r));
  }
  RETURN_IF_ERROR(UploadWeight(Pointers(parts), L.gdn_in, f32_));
  RETURN_IF_ERROR(UploadWeight({&g.out}, L.o, f32_));
  RETURN_IF_ERROR(UploadFloats(g.conv_weight, L.conv_w));
  L.has_conv_bias = !g.conv_bias.empty();
  if (L.has_conv_bias) RETURN_IF_ERROR(UploadFloats(g.conv_bias, L.conv_b));
  RETURN_IF_ERROR(UploadFloats(g.dt_bias, L.dt_bias));
  RETURN_IF_ERROR(UploadFloats(g.neg_a, L.neg_a));
  RETURN_IF_ERROR(UploadF32({&g.norm}, L.gdn_norm));
  const int64_t conv_dim = s.conv_dim();
  L.qkv_width = conv_dim + value_dim + 2 * g.nv;  // the projection's width
  L.q_width = value_dim;                          // out_proj's input
  RETURN_IF_ERROR(L.conv_state.Reserve(static_cast<size_t>(std::max<int64_t>(conv_dim * (g.kernel - 1), 1)) * 4));
  RETURN_IF_ERROR(L.rec_state.Reserve(static_cast<size_t>(g.nv * g.dk * g.dv) * sizeof(float)));
  L.state_out = state_out_floats_;
  state_out_floats_ += static_cast<size_t>(conv_dim * (g.kernel - 1) + g.nv * g.dk * g.dv);
  max_qkv_ = std::max(max_qkv_, L.qkv_width);
  max_attn_ = std::max(max_attn_, value_dim);
  max_conv_dim_ = std::max(max_conv_dim_, conv_dim);
  max_linear_heads_ = std::max(max_linear_heads_, g.nv);
  return absl::OkStatus();
}

int64_t CudaPrefillBackend::GdnScratchFloats(int64_t n) const {
  if (!options_.chunked_delta_rule) return 0;
  int64_t floats = 0;
  for (const GpuLayer& L : layers_) {
    if (L.mixer_kind != MixerDesc::Kind::kGatedDeltaNet) continue;
    cuda::GdnShape s = L.gdn;
    s.n = n;
    floats = std::max(floats, cuda::GdnChunkedScratchFloats(s));
  }
  return floats;
}

absl::Status CudaPrefillBackend::ReserveWorkspace(int64_t n) {
  if (n <= workspace_tokens_) return absl::OkStatus();
  const size_t f = sizeof(float), h = sizeof(uint16_t);
  const size_t N = static_cast<size_t>(n), H = static_cast<size_t>(hidden_);
  const size_t rows = N * static_cast<size_t>(std::max<int64_t>(max_top_k_, 1));
  // Gate/up and activations: a dense MLP or shared expert over the chunk's
  // tokens, or the routed experts over their top_k rows per token.
  const size_t gate_up = std::max(rows * static_cast<size_t>(max_expert_inter_), N * static_cast<size_t>(max_inter_));
  for (auto [mem, bytes] : {std::pair{&x_, N * H * f}, {&xn_, N * H * f}, {&xn16_, N * H * h},
                            {&qkv_, N * static_cast<size_t>(max_qkv_) * f}, {&attn_, N * static_cast<size_t>(max_attn_) * f},
                            {&attn16_, N * static_cast<size_t>(max_attn_) * h}, {&mix_, N * H * f},
                            {&ffn_out_, N * H * f}, {&shared_out_, N * H * f}, {&gate_up_, gate_up * 2 * f},
                            {&act_, gate_up * f}, {&rows_act_, rows * H * f}, {&expert_out_, rows * H * f},
                            {&router_logits_, N * static_cast<size_t>(max_experts_) * f},
                            {&ids_, rows * sizeof(int32_t)}, {&weights_, rows * f},
                            {&counts_, static_cast<size_t>(max_experts_) * sizeof(int32_t)},
                            {&cursor_, static_cast<size_t>(max_experts_) * sizeof(int32_t)},
                            {&row_of_choice_, rows * sizeof(int32_t)}, {&token_of_row_, rows * sizeof(int32_t)},
                            {&q_, N * static_cast<size_t>(max_q_) * f}, {&qa_, N * static_cast<size_t>(max_q_lora_) * f},
                            {&qa16_, N * static_cast<size_t>(max_q_lora_) * h},
                            {&kv_out16_, kRowSlots * N * static_cast<size_t>(max_kv_row_) * h},
                            {&gdn_mixed_, N * static_cast<size_t>(max_conv_dim_) * f},
                            {&gdn_gates_, N * static_cast<size_t>(2 * max_linear_heads_) * f},
                            {&gdn_scratch_, static_cast<size_t>(GdnScratchFloats(n)) * f},
                            {&gate_logits_, N * f},
                            {&gemm_plan_, cuda::GroupedGemmPlanBytes(max_experts_, static_cast<int64_t>(rows))}}) {
    RETURN_IF_ERROR(mem->Reserve(std::max<size_t>(bytes, 4)));
  }
  for (size_t r = 0; r < ropes_.size(); ++r) {
    RETURN_IF_ERROR(rope_tables_[r].Reserve(N * static_cast<size_t>(ropes_[r]->rot_dim) * f + f));
  }
  RETURN_IF_ERROR(host_rows_.Reserve(kRowSlots * N * static_cast<size_t>(max_kv_row_) * f + f));
  workspace_tokens_ = n;
  return absl::OkStatus();
}

absl::Status CudaPrefillBackend::ReservePositions(int64_t positions) {
  const size_t P = static_cast<size_t>(positions), f = sizeof(float);
  for (const GpuLayer& L : layers_) {
    if (L.mixer_kind == MixerDesc::Kind::kGqa && !f32_) {
      RETURN_IF_ERROR(kv16_.Reserve(P * static_cast<size_t>(L.kv_row) * sizeof(uint16_t)));
    }
    if (L.mixer_kind != MixerDesc::Kind::kMla) continue;
    const MlaDesc& m = L.mla;
    const size_t H = static_cast<size_t>(m.heads);
    // Expanded keys and values in BF16 or in float (Mla), never both.
    const size_t el = UseBf16Kv(MlaShape(m, 0, 0), 0) ? sizeof(uint16_t) : f;
    RETURN_IF_ERROR(kvb_.Reserve(P * H * static_cast<size_t>(m.nope + m.v_dim) * el));
    RETURN_IF_ERROR((el == f ? k_ : k16_).Reserve(P * H * static_cast<size_t>(m.nope + m.rope_dim) * el));
    RETURN_IF_ERROR((el == f ? v_ : v16_).Reserve(P * H * static_cast<size_t>(m.v_dim) * el));
    RETURN_IF_ERROR(lat_.Reserve(P * static_cast<size_t>(m.kv_lora) * f));
    if (!f32_) RETURN_IF_ERROR(lat16_.Reserve(P * static_cast<size_t>(m.kv_lora) * sizeof(uint16_t)));
  }
  return absl::OkStatus();
}

absl::Status CudaPrefillBackend::Begin(const SequenceState& seq, PagedKvCache& cache, int64_t total_tokens) {
  CUDA_RETURN_IF_ERROR(cudaSetDevice(options_.device));
  capacity_ = total_tokens;
  ++begin_epoch_;  // the card's linear-attention states belong to an earlier prompt now
  std::vector<float> rows;
  for (size_t l = 0; l < layers_.size(); ++l) {
    GpuLayer& L = layers_[l];
    if (L.kv_row == 0) continue;  // linear attention: its state comes from the sequence per chunk
    RETURN_IF_ERROR(L.kv.Reserve(static_cast<size_t>(std::max<int64_t>(total_tokens, 1) * L.kv_row) * sizeof(float)));
    if (seq.num_tokens > 0) {
      rows.resize(static_cast<size_t>(seq.num_tokens * L.kv_row));
      seq.ReadRows(cache, static_cast<int>(l), 0, seq.num_tokens, rows.data());
      CUDA_RETURN_IF_ERROR(
          cudaMemcpy(L.kv.as<float>(), rows.data(), rows.size() * sizeof(float), cudaMemcpyHostToDevice));
    }
  }
  // The workspace for the planned chunk, now: grown inside a pass it frees and
  // allocates with the card idle (a pipeline's micro-chunks grow within one
  // Forward). Best effort: a Forward that needs it reserves it again, and fails
  // cleanly when it cannot.
  if (!ReserveWorkspace(std::min<int64_t>(std::max<int64_t>(total_tokens, 1), options_.plan_chunk_tokens)).ok()) {
    (void)cudaGetLastError();  // (not left for a later launch's check to find)
  }
  // The buffers that grow with the positions, at their final size now: grown
  // chunk by chunk, each chunk would free and allocate them again (a device
  // synchronization and an allocation with the card idle).
  return ReservePositions(std::max<int64_t>(total_tokens, 1));
}

absl::Status CudaPrefillBackend::GemmPtr(const void* x, int64_t n, const void* w, int64_t out, int64_t in, void* y,
                                         int64_t ldy, cudaDataType_t out_type, float beta) {
  const float alpha = 1.0f;
  // CUBLAS_COMPUTE_32F: fp32 accumulation, and for F32 inputs no TF32.
  CUBLAS_RETURN_IF_ERROR(cublasGemmEx(cublas_, CUBLAS_OP_T, CUBLAS_OP_N, static_cast<int>(out), static_cast<int>(n),
                                      static_cast<int>(in), &alpha, w, act_type_, static_cast<int>(in), x,
                                      act_type_, static_cast<int>(in), &beta, y, out_type, static_cast<int>(ldy),
                                      CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
  return absl::OkStatus();
}

absl::Status CudaPrefillBackend::Norm(const float* x, int64_t rows, const DeviceMemory& w, bool want_f32) {
  if (f32_) return cuda::LaunchRmsNorm(x, rows, hidden_, w.as<float>(), eps_, zero_centred_, xn_.as<float>(), nullptr, stream_);
  return cuda::LaunchRmsNorm(x, rows, hidden_, w.as<float>(), eps_, zero_centred_, want_f32 ? xn_.as<float>() : nullptr,
                             xn16_.as<uint16_t>(), stream_);
}

absl::Status CudaPrefillBackend::AddNorm(float* x, const float* add, int64_t rows, const DeviceMemory& w,
                                         bool want_f32) {
  if (f32_) {
    return cuda::LaunchAddRmsNorm(x, add, rows, hidden_, w.as<float>(), eps_, zero_centred_, xn_.as<float>(), nullptr,
                                  stream_);
  }
  return cuda::LaunchAddRmsNorm(x, add, rows, hidden_, w.as<float>(), eps_, zero_centred_,
                                want_f32 ? xn_.as<float>() : nullptr, xn16_.as<uint16_t>(), stream_);
}

absl::Status CudaPrefillBackend::Attention(GpuLayer& L, int64_t n, int64_t start) {
  const GqaDesc& g = L.gqa;
  float* qkv = qkv_.as<float>();
  RETURN_IF_ERROR(Gemm(xn_act(), n, L.qkv, L.qkv_width, hidden_, qkv));
  if (L.has_bias) RETURN_IF_ERROR(cuda::LaunchAddBias(qkv, L.qkv_bias.as<float>(), n, L.qkv_width, L.qkv_width, stream_));
  if (g.qk_norm) {
    RETURN_IF_ERROR(cuda::LaunchHeadRmsNorm(qkv, n, g.heads, L.qkv_width, g.head_dim, L.q_norm.as<float>(), g.eps,
                                            g.zero_centred_qk_norm, stream_));
    RETURN_IF_ERROR(cuda::LaunchHeadRmsNorm(qkv + L.k_offset, n, g.kv_heads, L.qkv_width, g.head_dim,
                                            L.k_norm.as<float>(), g.eps, g.zero_centred_qk_norm, stream_));
  }
  const Rope& rope = *ropes_[static_cast<size_t>(L.rope)];
  const float* table = rope_tables_[static_cast<size_t>(L.rope)].as<float>();
  RETURN_IF_ERROR(cuda::LaunchRope(qkv, n, g.heads, L.qkv_width, g.head_dim, rope.rot_dim, rope.interleaved, table,
                                   stream_));
  RETURN_IF_ERROR(cuda::LaunchRope(qkv + L.k_offset, n, g.kv_heads, L.qkv_width, g.head_dim, rope.rot_dim,
                                   rope.interleaved, table, stream_));
  // The chunk's k and v (adjacent in a qkv row) become rows [start, start + n) of the store.
  RETURN_IF_ERROR(StoreRows(L, qkv + L.k_offset, L.qkv_width, n, start));
  cuda::AttentionShape s;
  s.n = n;
  s.start_pos = start;
  s.heads = g.heads;
  s.kv_heads = g.kv_heads;
  s.head_dim = s.v_dim = g.head_dim;
  s.k_stride = s.v_stride = L.kv_row;
  s.q_stride = L.qkv_width;
  s.scale = 1.0f / std::sqrt(static_cast<float>(g.head_dim));
  s.exact = f32_;
  RETURN_IF_ERROR(Lap(kMixerProj));
  if (UseBf16Kv(s, L.kv_width)) {
    // The store's rows so far in BF16 (what the kernel would round them to anyway): half the bytes per tile.
    const int64_t count = (start + n) * L.kv_row;
    RETURN_IF_ERROR(kv16_.Reserve(static_cast<size_t>(count) * sizeof(uint16_t)));
    RETURN_IF_ERROR(cuda::LaunchToBf16(L.kv.as<float>(), count, kv16_.as<uint16_t>(), stream_));
    const uint16_t* k16 = kv16_.as<uint16_t>();
    if (!L.output_gate) {  // the output straight to BF16, o_proj's input
      RETURN_IF_ERROR(cuda::LaunchCausalAttentionBf16KvToBf16(qkv, k16, k16 + L.kv_width, s, attn16_.as<uint16_t>(),
                                                              stream_));
      RETURN_IF_ERROR(Lap(kAttention));
      return Gemm(attn16_.as<uint16_t>(), n, L.o, hidden_, L.q_width, mix_.as<float>());
    }
    RETURN_IF_ERROR(cuda::LaunchCausalAttentionBf16Kv(qkv, k16, k16 + L.kv_width, s, attn_.as<float>(), stream_));
  } else {
    RETURN_IF_ERROR(cuda::LaunchCausalAttention(qkv, L.kv.as<float>(), L.kv.as<float>() + L.kv_width, s,
                                                attn_.as<float>(), stream_));
  }
  RETURN_IF_ERROR(Lap(kAttention));
  if (L.output_gate) {
    RETURN_IF_ERROR(cuda::LaunchSigmoidGate(attn_.as<float>(), n, L.q_width, qkv + L.q_width, L.qkv_width, false,
                                            stream_));
  }
  if (f32_) return Gemm(attn_.as<float>(), n, L.o, hidden_, L.q_width, mix_.as<float>());
  RETURN_IF_ERROR(cuda::LaunchToBf16(attn_.as<float>(), n * L.q_width, attn16_.as<uint16_t>(), stream_));
  return Gemm(attn16_.as<uint16_t>(), n, L.o, hidden_, L.q_width, mix_.as<float>());
}

namespace {
constexpr const char* kStageNames[] = {"embed",       "mixer_proj", "attention", "kv_out", "routing",
                                       "expert_wait", "experts",    "mlp",       "reduce", "lm_head"};
}  // namespace

absl::Status CudaPrefillBackend::Lap(Stage stage) {
  if (!options_.profile) return absl::OkStatus();
  if (options_.profile_steps) RETURN_IF_ERROR(Step(stage, "rest"));
  CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream_));
  const auto now = std::chrono::steady_clock::now();
  stage_ms_[stage] += std::chrono::duration<double, std::milli>(now - lap_).count();
  lap_ = step_lap_ = now;
  return absl::OkStatus();
}

absl::Status CudaPrefillBackend::Step(Stage stage, const char* name) {
  if (!options_.profile || !options_.profile_steps) return absl::OkStatus();
  CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream_));
  const auto now = std::chrono::steady_clock::now();
  const std::string key = StrCat(kStageNames[stage], ".", name);
  auto it = std::find_if(step_ms_.begin(), step_ms_.end(), [&](const auto& e) { return e.first == key; });
  if (it == step_ms_.end()) it = step_ms_.insert(step_ms_.end(), {key, 0.0});
  it->second += std::chrono::duration<double, std::milli>(now - step_lap_).count();
  step_lap_ = now;
  return absl::OkStatus();
}

std::vector<std::pair<std::string, double>> CudaPrefillBackend::TakeProfile() {
  static_assert(std::size(kStageNames) == kStages);
  std::vector<std::pair<std::string, double>> out;
  for (int s = 0; s < kStages; ++s) out.emplace_back(kStageNames[s], std::exchange(stage_ms_[s], 0.0));
  for (auto& step : std::exchange(step_ms_, {})) out.push_back(std::move(step));
  return out;
}

absl::Status CudaPrefillBackend::StoreRows(GpuLayer& L, const float* src, int64_t src_stride, int64_t n,
                                           int64_t start) {
  float* dst = L.kv.as<float>() + start * L.kv_row;
  CUDA_RETURN_IF_ERROR(cudaMemcpy2DAsync(dst, L.kv_row * sizeof(float), src, src_stride * sizeof(float),
                                         L.kv_row * sizeof(float), n, cudaMemcpyDeviceToDevice, stream_));
  return cuda::LaunchRoundTo(kv_dtype_, dst, n * L.kv_row, stream_);
}

absl::StatusOr<const void*> CudaPrefillBackend::AsGemmInput(const float* x, int64_t n, int64_t cols, int64_t stride,
                                                            DeviceMemory& f32, DeviceMemory& bf16) {
  if (!f32_) {  // packed BF16 rows, in one pass
    RETURN_IF_ERROR(bf16.Reserve(static_cast<size_t>(n * cols) * sizeof(uint16_t)));
    RETURN_IF_ERROR(stride == cols ? cuda::LaunchToBf16(x, n * cols, bf16.as<uint16_t>(), stream_)
                                   : cuda::LaunchToBf16Rows(x, n, cols, stride, bf16.as<uint16_t>(), stream_));
    return static_cast<const void*>(bf16.as<uint16_t>());
  }
  if (stride == cols) return static_cast<const void*>(x);
  RETURN_IF_ERROR(f32.Reserve(static_cast<size_t>(n * cols) * sizeof(float)));
  CUDA_RETURN_IF_ERROR(cudaMemcpy2DAsync(f32.as<float>(), cols * sizeof(float), x, stride * sizeof(float),
                                         cols * sizeof(float), n, cudaMemcpyDeviceToDevice, stream_));
  return static_cast<const void*>(f32.as<float>());
}

cuda::AttentionShape CudaPrefillBackend::MlaShape(const MlaDesc& m, int64_t n, int64_t start) const {
  const int64_t qk = m.nope + m.rope_dim;
  cuda::AttentionShape s;
  s.n = n;
  s.start_pos = start;
  s.heads = s.kv_heads = m.heads;
  s.head_dim = qk;
  s.v_dim = m.v_dim;
  s.k_stride = m.heads * qk;
  s.v_stride = m.heads * m.v_dim;
  s.q_stride = m.heads * qk;
  s.scale = m.scale;
  s.exact = f32_;
  return s;
}

// MLA in the expanded form (prefill computes many queries at once, so expanding
// the latents through kv_b costs less than it saves): q from q_a/q_b or q_proj;
// [latent | k_pe] from kv_a, normed and roped, into the store; then keys and
// values of every position so far from kv_b, and plain causal attention with
// head_dim nope + rope and v_dim.
absl::Status CudaPrefillBackend::Mla(GpuLayer& L, int64_t n, int64_t start) {
  const MlaDesc& m = L.mla;
  const int64_t qk = m.nope + m.rope_dim, W = L.qkv_width, positions = start + n;
  float* y = qkv_.as<float>();
  RETURN_IF_ERROR(Gemm(xn_act(), n, L.qkv, W, hidden_, y));
  if (L.has_bias) RETURN_IF_ERROR(cuda::LaunchAddBias(y, L.qkv_bias.as<float>(), n, W, W, stream_));
  RETURN_IF_ERROR(Step(kMixerProj, "mla_qkv"));
  // Without q_lora, the queries stay where the projection wrote them (rows W
  // apart; the attention reads them with that stride, so W must be even).
  float* q = q_.as<float>();
  int64_t q_stride = m.heads * qk;
  if (m.q_lora > 0) {
    RETURN_IF_ERROR(cuda::LaunchHeadRmsNorm(y, n, 1, W, m.q_lora, L.q_norm.as<float>(), m.latent_eps, false, stream_));
    ASSIGN_OR_RETURN(const void* qa, AsGemmInput(y, n, m.q_lora, W, qa_, qa16_));
    RETURN_IF_ERROR(Gemm(qa, n, L.q_b, m.heads * qk, m.q_lora, q));
  } else if (W % 2 == 0) {
    q = y, q_stride = W;
  } else {
    CUDA_RETURN_IF_ERROR(cudaMemcpy2DAsync(q, m.heads * qk * sizeof(float), y, W * sizeof(float),
                                           m.heads * qk * sizeof(float), n, cudaMemcpyDeviceToDevice, stream_));
  }
  float* kv_in = y + L.q_width;  // [latent | k_pe] per row
  RETURN_IF_ERROR(
      cuda::LaunchHeadRmsNorm(kv_in, n, 1, W, m.kv_lora, L.k_norm.as<float>(), m.latent_eps, false, stream_));
  const float* table = rope_tables_[static_cast<size_t>(L.rope)].as<float>();
  const bool interleaved = ropes_[static_cast<size_t>(L.rope)]->interleaved;
  RETURN_IF_ERROR(cuda::LaunchRope(kv_in + m.kv_lora, n, 1, W, m.rope_dim, m.rope_dim, interleaved, table, stream_));
  RETURN_IF_ERROR(cuda::LaunchRope(q + m.nope, n, m.heads, q_stride, qk, m.rope_dim, interleaved, table, stream_));
  RETURN_IF_ERROR(StoreRows(L, kv_in, W, n, start));
  RETURN_IF_ERROR(Step(kMixerProj, "mla_q_norm_rope_store"));

  cuda::AttentionShape s = MlaShape(m, n, start);
  s.q_stride = q_stride;
  // Keys and values of every position so far: in BF16 straight from the
  // kv_b GEMM when the attention kernel reads BF16 (it would round them to
  // BF16 anyway), else in float.
  const bool bf16_kv = UseBf16Kv(s, 0);
  const float* store = L.kv.as<float>();
  ASSIGN_OR_RETURN(const void* latents, AsGemmInput(store, positions, m.kv_lora, L.kv_row, lat_, lat16_));
  RETURN_IF_ERROR(Step(kMixerProj, "mla_latents"));
  // kvb_ and the k / v rows hold `positions` rows already (ReservePositions).
  const int64_t kvb_width = m.heads * (m.nope + m.v_dim);
  RETURN_IF_ERROR(GemmPtr(latents, positions, L.kv_b.as<void>(), kvb_width, m.kv_lora, kvb_.as<void>(), kvb_width,
                          bf16_kv ? CUDA_R_16BF : CUDA_R_32F));
  RETURN_IF_ERROR(Step(kMixerProj, "mla_kv_b"));
  if (bf16_kv) {
    RETURN_IF_ERROR(cuda::LaunchMlaExpandKvBf16(kvb_.as<uint16_t>(), store + m.kv_lora, L.kv_row, positions, m.heads,
                                                m.nope, m.rope_dim, m.v_dim, k16_.as<uint16_t>(),
                                                v16_.as<uint16_t>(), stream_));
  } else {
    RETURN_IF_ERROR(cuda::LaunchMlaExpandKv(kvb_.as<float>(), store + m.kv_lora, L.kv_row, positions, m.heads, m.nope,
                                            m.rope_dim, m.v_dim, k_.as<float>(), v_.as<float>(), stream_));
  }
  RETURN_IF_ERROR(Lap(kMixerProj));
  // With BF16 K/V (never in the fp32 checking mode) the output leaves in BF16, o_proj's input.
  const void* attn = nullptr;
  if (bf16_kv) {
    RETURN_IF_ERROR(cuda::LaunchCausalAttentionBf16KvToBf16(q, k16_.as<uint16_t>(), v16_.as<uint16_t>(), s,
                                                            attn16_.as<uint16_t>(), stream_));
    attn = attn16_.as<void>();
    RETURN_IF_ERROR(Lap(kAttention));
  } else {
    RETURN_IF_ERROR(cuda::LaunchCausalAttention(q, k_.as<float>(), v_.as<float>(), s, attn_.as<float>(), stream_));
    RETURN_IF_ERROR(Lap(kAttention));
    ASSIGN_OR_RETURN(attn, AsGemmInput(attn_.as<float>(), n, m.heads * m.v_dim, m.heads * m.v_dim, attn_, attn16_));
  }
  RETURN_IF_ERROR(Gemm(attn, n, L.o, hidden_, m.heads * m.v_dim, mix_.as<float>()));
  if (m.o_bias.data != nullptr) {
    RETURN_IF_ERROR(cuda::LaunchAddBias(mix_.as<float>(), L.o_bias.as<float>(), n, hidden_, hidden_, stream_));
  }
  return absl::OkStatus();
}

absl::Status CudaPrefillBackend::DeltaNet(GpuLayer& L, int64_t n, int64_t start, LinearState& state) {
  cuda::GdnShape s = L.gdn;
  s.n = n;
  s.stride = L.qkv_width;
  const int64_t conv_dim = s.conv_dim(), value_dim = s.nv * s.dv;
  if (static_cast<int64_t>(state.conv.size()) != conv_dim * (s.kernel - 1) ||
      static_cast<int64_t>(state.recurrent.size()) != s.nv * s.dk * s.dv) {
    return absl::FailedPreconditionError("Gated DeltaNet: the sequence's linear-attention state is not initialised");
  }
  if (L.state_epoch != begin_epoch_ || L.state_pos != start) {
    // Not the state this layer left on the card at the end of the prompt's
    // previous chunk (a first chunk, another prompt, or a pass that failed part way).
    CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(L.conv_state.as<void>(), state.conv.data(),
                                         state.conv.size() * sizeof(float), cudaMemcpyHostToDevice, stream_));
    CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(L.rec_state.as<void>(), state.recurrent.data(),
                                         state.recurrent.size() * sizeof(float), cudaMemcpyHostToDevice, stream_));
  }
  L.state_epoch = -1;  // until this chunk completes
  float* proj = qkv_.as<float>();
  RETURN_IF_ERROR(Gemm(xn_act(), n, L.gdn_in, L.qkv_width, hidden_, proj));
  float* mixed = gdn_mixed_.as<float>();
  RETURN_IF_ERROR(cuda::LaunchGdnConv(proj, s, L.conv_w.as<float>(), L.has_conv_bias ? L.conv_b.as<float>() : nullptr,
                                      L.conv_state.as<float>(), mixed, stream_));
  RETURN_IF_ERROR(cuda::LaunchGdnPrepare(mixed, proj + conv_dim + value_dim, L.qkv_width, s, L.dt_bias.as<float>(),
                                         L.neg_a.as<float>(), gdn_gates_.as<float>(), stream_));
  RETURN_IF_ERROR(Lap(kMixerProj));
  if (options_.chunked_delta_rule) {
    RETURN_IF_ERROR(cuda::LaunchGdnChunked(mixed, gdn_gates_.as<float>(), s, L.rec_state.as<float>(),
                                           attn_.as<float>(), gdn_scratch_.as<float>(), stream_));
  } else {
    RETURN_IF_ERROR(cuda::LaunchGdnRecurrence(mixed, gdn_gates_.as<float>(), s, L.rec_state.as<float>(),
                                              attn_.as<float>(), stream_));
  }
  RETURN_IF_ERROR(Lap(kAttention));
  RETURN_IF_ERROR(cuda::LaunchGdnGatedNorm(attn_.as<float>(), proj + conv_dim, L.qkv_width, s, L.gdn_norm.as<float>(),
                                           L.gdn_eps, f32_ ? attn_.as<float>() : nullptr,
                                           f32_ ? nullptr : attn16_.as<uint16_t>(), stream_));
  RETURN_IF_ERROR(Gemm(f32_ ? attn_.as<void>() : attn16_.as<void>(), n, L.o, hidden_, value_dim, mix_.as<float>()));
  // The state after the chunk, for the sequence (what decode continues from):
  // into state_out_ now, into `state` when the pass completes (Forward).
  float* out = state_out_.as<float>() + L.state_out;
  CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(out, L.conv_state.as<void>(), state.conv.size() * sizeof(float),
                                       cudaMemcpyDeviceToHost, stream_));
  CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(out + state.conv.size(), L.rec_state.as<void>(),
                                       state.recurrent.size() * sizeof(float), cudaMemcpyDeviceToHost, stream_));
  return absl::OkStatus();
}

absl::Status CudaPrefillBackend::Mlp(const GpuMlp& m, const void* x, int64_t n, float* out, bool accumulate) {
  RETURN_IF_ERROR(Gemm(x, n, m.gate_up, 2 * m.inter, hidden_, gate_up_.as<float>()));
  RETURN_IF_ERROR(f32_ ? cuda::LaunchSiluMul(gate_up_.as<float>(), n, m.inter, act_.as<float>(), stream_)
                       : cuda::LaunchSiluMulBf16(gate_up_.as<float>(), n, m.inter, act_.as<uint16_t>(), stream_));
  return GemmPtr(act_.as<void>(), n, m.down.as<void>(), hidden_, m.inter, out, hidden_, CUDA_R_32F,
                 accumulate ? 1.0f : 0.0f);
}

absl::StatusOr<const void*> CudaPrefillBackend::ExpertMatrix(const cuda::StoredMatrix& m, const char* base,
                                                             size_t scratch_offset) {
  const char* at = base + m.offset;
  if (UsableAsStored(m)) return static_cast<const void*>(at);
  void* dst = wscratch_.as<char>() + scratch_offset * act_bytes_;
  if (m.quant == 0) {
    RETURN_IF_ERROR(cuda::LaunchMaterializeDense(m.dtype, at, m.rows * m.cols, f32_, dst, stream_));
  } else {
    RETURN_IF_ERROR(cuda::LaunchDequantTiled(m.quant == static_cast<int>(quant::QuantFormat::kInt4),
                                             reinterpret_cast<const uint8_t*>(at),
                                             reinterpret_cast<const float*>(base + m.scales_offset), m.rows, m.cols,
                                             m.group, f32_, dst, stream_));
  }
  return static_cast<const void*>(dst);
}

absl::Status CudaPrefillBackend::SiluMulRows(int64_t inter, int64_t row0, int64_t row1) {
  float* const gate_up_rows = gate_up_.as<float>() + row0 * 2 * inter;
  return f32_ ? cuda::LaunchSiluMul(gate_up_rows, row1 - row0, inter, act_.as<float>() + row0 * inter, stream_)
              : cuda::LaunchSiluMulBf16(gate_up_rows, row1 - row0, inter, act_.as<uint16_t>() + row0 * inter, stream_);
}

bool CudaPrefillBackend::PlanGrouped(const cuda::ExpertLayout& layout, uintptr_t base, GroupedMoe* plan) const {
  if (f32_ || layout.first >= layout.end) return false;
  const int64_t inter = layout.inter, first = layout.first, end = layout.end;
  // One weight form for the whole layer (BF16 as stored, or one quantized
  // format), one group size for gate and up and one for down.
  const auto& probe = layout.experts[static_cast<size_t>(first)];
  plan->gate_up_w.assign(static_cast<size_t>(end), {});
  plan->down_w.assign(static_cast<size_t>(end), {});
  auto at = [&](size_t offset) { return reinterpret_cast<const void*>(base + offset); };
  auto scales = [&](const cuda::StoredMatrix& m) {
    return m.quant == 0 ? nullptr : static_cast<const float*>(at(m.scales_offset));
  };
  for (int64_t e = first; e < end; ++e) {
    const auto& mats = layout.experts[static_cast<size_t>(e)];
    for (size_t k = 0; k < mats.size(); ++k) {
      const cuda::StoredMatrix& m = mats[k];
      if (m.quant != probe[0].quant || (m.quant == 0 && !UsableAsStored(m)) || m.group != probe[k == 2 ? 2 : 0].group) {
        return false;
      }
    }
    plan->gate_up_w[static_cast<size_t>(e)] = {at(mats[0].offset), at(mats[1].offset), scales(mats[0]),
                                               scales(mats[1])};
    plan->down_w[static_cast<size_t>(e)] = {at(mats[2].offset), nullptr, scales(mats[2]), nullptr};
  }
  cuda::GroupedGemmShape& gu = plan->gate_up;
  gu.n = 2 * inter, gu.k = hidden_, gu.n_split = inter, gu.quant = probe[0].quant, gu.group = probe[0].group;
  gu.x = rows_act_.as<uint16_t>(), gu.ldx = hidden_, gu.y = gate_up_.as<float>(), gu.ldy = 2 * inter;
  cuda::GroupedGemmShape& dn = plan->down;
  dn = gu;
  dn.n = hidden_, dn.k = inter, dn.n_split = hidden_, dn.group = probe[2].group;
  dn.x = act_.as<uint16_t>(), dn.ldx = inter, dn.y = expert_out_.as<float>(), dn.ldy = hidden_;
  return cuda::GroupedGemmTakes(gu, plan->gate_up_w.data(), first, end) &&
         cuda::GroupedGemmTakes(dn, plan->down_w.data(), first, end);
}

absl::Status CudaPrefillBackend::ExpertByExpert(const cuda::ExpertLayout& layout, const char* base,
                                                const std::vector<int32_t>& counts,
                                                const std::vector<int32_t>& offsets, int64_t row0, int64_t row1) {
  const int64_t inter = layout.inter;
  const size_t first = static_cast<size_t>(layout.first), end = static_cast<size_t>(layout.end);
  for (size_t e = first; e < end; ++e) {
    if (counts[e] == 0) continue;
    // Gate and up rows side by side in gate_up_ ([rows, 2 * inter]), as SiluMul
    // reads them: one GEMM over [gate; up] when they lie back to back (as stored,
    // or both converted into the scratch), else one each.
    const cuda::StoredMatrix& gm = layout.experts[e][0];
    const cuda::StoredMatrix& um = layout.experts[e][1];
    const void* x_rows = ActRow(rows_act_, offsets[e], hidden_);
    float* y = gate_up_.as<float>() + offsets[e] * 2 * inter;
    const bool adjacent_as_stored = UsableAsStored(gm) && UsableAsStored(um) && um.offset == gm.offset + gm.bytes;
    if (adjacent_as_stored || (!UsableAsStored(gm) && !UsableAsStored(um))) {
      ASSIGN_OR_RETURN(const void* w, ExpertMatrix(gm, base));
      RETURN_IF_ERROR(ExpertMatrix(um, base, static_cast<size_t>(inter * hidden_)).status());
      RETURN_IF_ERROR(GemmPtr(x_rows, counts[e], w, 2 * inter, hidden_, y, 2 * inter));
      continue;
    }
    for (int k = 0; k < 2; ++k) {
      ASSIGN_OR_RETURN(const void* w, ExpertMatrix(layout.experts[e][static_cast<size_t>(k)], base));
      RETURN_IF_ERROR(GemmPtr(x_rows, counts[e], w, inter, hidden_, y + k * inter, 2 * inter));
    }
  }
  RETURN_IF_ERROR(SiluMulRows(inter, row0, row1));
  for (size_t e = first; e < end; ++e) {
    if (counts[e] == 0) continue;
    ASSIGN_OR_RETURN(const void* w, ExpertMatrix(layout.experts[e][2], base));
    RETURN_IF_ERROR(GemmPtr(ActRow(act_, offsets[e], inter), counts[e], w, hidden_, inter,
                            expert_out_.as<float>() + offsets[e] * hidden_, hidden_));
  }
  return absl::OkStatus();
}

bool CudaPrefillBackend::UsePlannedMoe(const GpuLayer& L, int64_t n) const {
  const int64_t experts = L.router.num_experts;
  return !f32_ && L.grouped && experts <= cuda::kMaxPlannedExperts &&
         cuda::GroupedGemmPlannedBlockBound(n * L.router.top_k, 0, experts) <= cuda::kMaxGroupedGemmBlockRows;
}

absl::StatusOr<const CudaPrefillBackend::DeviceWeights*> CudaPrefillBackend::PartWeights(size_t layer, int part,
                                                                                         const char* base,
                                                                                         const GroupedMoe& plan) {
  const auto key = std::make_tuple(layer, part, reinterpret_cast<uintptr_t>(base));
  auto it = part_weights_.find(key);
  if (it != part_weights_.end()) return &it->second;
  const cuda::ExpertLayout& layout = experts_.part(layer, part);
  DeviceWeights w;
  const size_t entries = plan.gate_up_w.size(), bytes = entries * sizeof(cuda::ExpertGemmWeights);
  RETURN_IF_ERROR(w.table.Reserve(2 * bytes));
  // Once per part and buffer: a plain synchronous copy.
  CUDA_RETURN_IF_ERROR(cudaMemcpy(w.table.as<char>(), plan.gate_up_w.data(), bytes, cudaMemcpyHostToDevice));
  CUDA_RETURN_IF_ERROR(cudaMemcpy(w.table.as<char>() + bytes, plan.down_w.data(), bytes, cudaMemcpyHostToDevice));
  w.gate_up_aligned16 = cuda::GroupedGemmWeightsAligned16(plan.gate_up_w.data(), layout.first, layout.end);
  w.down_aligned16 = cuda::GroupedGemmWeightsAligned16(plan.down_w.data(), layout.first, layout.end);
  return &part_weights_.emplace(key, std::move(w)).first->second;
}

absl::Status CudaPrefillBackend::PlannedMoe(GpuLayer& L, int64_t n, float* out) {
  const RouterParams& p = L.router;
  const int64_t choices = n * p.top_k, experts = p.num_experts;
  RETURN_IF_ERROR(cuda::LaunchGroupedGemmPlan(counts_.as<int32_t>(), experts, gemm_plan_.as<void>(),
                                              cursor_.as<int32_t>(), stream_));
  RETURN_IF_ERROR(Step(kRouting, "plan"));
  RETURN_IF_ERROR(Lap(kRouting));
  RETURN_IF_ERROR(cuda::LaunchAssignRows(ids_.as<int32_t>(), choices, p.top_k, cursor_.as<int32_t>(),
                                         row_of_choice_.as<int32_t>(), token_of_row_.as<int32_t>(), stream_));
  RETURN_IF_ERROR(Step(kExpertWait, "assign_rows"));
  const int32_t* offsets = cuda::GroupedGemmPlanOffsets(gemm_plan_.as<void>());
  const size_t layer = static_cast<size_t>(&L - layers_.data());
  const cuda::ExpertLayout& layout = experts_.layout(layer);
  for (int part = 0; part < experts_.parts(layer); ++part) {
    const cuda::ExpertLayout& pl = experts_.part(layer, part);
    ASSIGN_OR_RETURN(const char* base, experts_.Acquire(layer, part, stream_));
    RETURN_IF_ERROR(Lap(kExpertWait));
    GroupedMoe plan;
    if (!PlanGrouped(pl, reinterpret_cast<uintptr_t>(base), &plan)) {
      return InternalError("grouped expert GEMM planned at start but not possible now");
    }
    ASSIGN_OR_RETURN(const DeviceWeights* w, PartWeights(layer, part, base, plan));
    const auto* table = w->table.as<cuda::ExpertGemmWeights>();
    cuda::GroupedGemmShape gate_up = plan.gate_up;
    gate_up.x = xn16_.as<uint16_t>();  // the tokens' rows, through token_of_row_
    // SiLU in the GEMM's epilogue where the shape allows (inter a multiple of
    // 64): act_ straight from the accumulators, no float gate/up round trip.
    gate_up.silu_out = act_.as<uint16_t>(), gate_up.ld_silu = pl.inter;
    const bool fused = cuda::GroupedGemmTakes(gate_up, plan.gate_up_w.data(), pl.first, pl.end);
    if (!fused) gate_up.silu_out = nullptr;
    RETURN_IF_ERROR(cuda::LaunchGroupedGemmPlanned(gate_up, gemm_plan_.as<void>(), experts, choices, table,
                                                   w->gate_up_aligned16, token_of_row_.as<int32_t>(), pl.first,
                                                   pl.end, stream_));
    RETURN_IF_ERROR(Step(kExperts, "grouped_gate_up"));
    if (!fused) {
      RETURN_IF_ERROR(cuda::LaunchSiluMulBf16Span(gate_up_.as<float>(), pl.inter, offsets, pl.first, pl.end, choices,
                                                  act_.as<uint16_t>(), stream_));
      RETURN_IF_ERROR(Step(kExperts, "silu_mul"));
    }
    RETURN_IF_ERROR(cuda::LaunchGroupedGemmPlanned(plan.down, gemm_plan_.as<void>(), experts, choices,
                                                   table + plan.gate_up_w.size(), w->down_aligned16, nullptr,
                                                   pl.first, pl.end, stream_));
    RETURN_IF_ERROR(Step(kExperts, "grouped_down"));
    RETURN_IF_ERROR(experts_.Release(layer, part, stream_));
    RETURN_IF_ERROR(Lap(kExperts));
  }
  CUDA_RETURN_IF_ERROR(cudaMemsetAsync(out, 0, static_cast<size_t>(n * hidden_) * sizeof(float), stream_));
  // Only this card's rows (other cards' experts come in the all-reduce).
  return cuda::LaunchCombineExpertSpan(expert_out_.as<float>(), row_of_choice_.as<int32_t>(), weights_.as<float>(), n,
                                       p.top_k, hidden_, offsets, layout.first, layout.end, out, stream_);
}

absl::Status CudaPrefillBackend::Moe(GpuLayer& L, int64_t n, float* out) {
  const RouterParams& p = L.router;
  const int64_t choices = n * p.top_k, experts = p.num_experts;
  // Router logits in fp32 (routing is sensitive to near ties; the CPU computes them in fp32 too).
  const float alpha = 1.0f, beta = 0.0f;
  CUBLAS_RETURN_IF_ERROR(cublasSgemm(cublas_, CUBLAS_OP_T, CUBLAS_OP_N, static_cast<int>(experts), static_cast<int>(n),
                                     static_cast<int>(hidden_), &alpha, L.router_weight.as<float>(),
                                     static_cast<int>(hidden_), xn_.as<float>(), static_cast<int>(hidden_), &beta,
                                     router_logits_.as<float>(), static_cast<int>(experts)));
  RETURN_IF_ERROR(Step(kRouting, "router_gemm"));
  RETURN_IF_ERROR(cuda::LaunchRoute(router_logits_.as<float>(), n, p, L.correction_bias.as<float>(), ids_.as<int32_t>(),
                                    weights_.as<float>(), stream_));
  RETURN_IF_ERROR(Step(kRouting, "route"));
  CUDA_RETURN_IF_ERROR(cudaMemsetAsync(counts_.as<void>(), 0, static_cast<size_t>(experts) * sizeof(int32_t), stream_));
  RETURN_IF_ERROR(cuda::LaunchCountExperts(ids_.as<int32_t>(), choices, experts, counts_.as<int32_t>(), stream_));
  if (UsePlannedMoe(L, n)) {
    RETURN_IF_ERROR(PlannedMoe(L, n, out));
    RETURN_IF_ERROR(Lap(kExperts));
    return SharedAndReduce(L, n, out);
  }
  // The GEMM plan needs the counts on the host.
  std::vector<int32_t> counts(static_cast<size_t>(experts)), offsets(static_cast<size_t>(experts));
  CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(counts.data(), counts_.as<void>(), counts.size() * sizeof(int32_t),
                                       cudaMemcpyDeviceToHost, stream_));
  CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream_));
  RETURN_IF_ERROR(Lap(kRouting));
  int32_t at = 0;
  for (size_t e = 0; e < counts.size(); ++e) offsets[e] = at, at += counts[e];
  CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(cursor_.as<void>(), offsets.data(), offsets.size() * sizeof(int32_t),
                                       cudaMemcpyHostToDevice, stream_));
  RETURN_IF_ERROR(cuda::LaunchAssignRows(ids_.as<int32_t>(), choices, p.top_k, cursor_.as<int32_t>(),
                                         row_of_choice_.as<int32_t>(), token_of_row_.as<int32_t>(), stream_));
  RETURN_IF_ERROR(Step(kExpertWait, "assign_rows"));
  RETURN_IF_ERROR(f32_ ? cuda::LaunchGatherRows(xn_.as<float>(), token_of_row_.as<int32_t>(), choices, hidden_,
                                                 rows_act_.as<float>(), stream_)
                       : cuda::LaunchGatherRowsBf16(xn_.as<float>(), token_of_row_.as<int32_t>(), choices, hidden_,
                                                    rows_act_.as<uint16_t>(), stream_));
  RETURN_IF_ERROR(Step(kExpertWait, "gather_rows"));
  const size_t layer = static_cast<size_t>(&L - layers_.data());
  const cuda::ExpertLayout& layout = experts_.layout(layer);
  // The first row of expert e's segment of the sorted rows.
  auto row_of = [&](int64_t e) { return e < static_cast<int64_t>(counts.size()) ? offsets[static_cast<size_t>(e)] : choices; };
  // This card's experts (all of them on one card) and their rows [row0, row1),
  // computed part by part as each part of a streamed layer reaches the card.
  const int64_t row0 = row_of(layout.first), row1 = row_of(layout.end);
  for (int p = 0; p < experts_.parts(layer); ++p) {
    const cuda::ExpertLayout& part = experts_.part(layer, p);
    ASSIGN_OR_RETURN(const char* base, experts_.Acquire(layer, p, stream_));
    RETURN_IF_ERROR(Lap(kExpertWait));
    const int64_t part_row0 = row_of(part.first), part_row1 = row_of(part.end);
    RETURN_IF_ERROR(ExpertByExpert(part, base, counts, offsets, part_row0, part_row1));
    RETURN_IF_ERROR(experts_.Release(layer, p, stream_));
    RETURN_IF_ERROR(Lap(kExperts));
  }
  // Other cards' rows count as zero here (their partial sums come in the all-reduce).
  float* const rows_out = expert_out_.as<float>();
  const size_t row_bytes = static_cast<size_t>(hidden_) * sizeof(float);
  if (row0 > 0) CUDA_RETURN_IF_ERROR(cudaMemsetAsync(rows_out, 0, static_cast<size_t>(row0) * row_bytes, stream_));
  if (row1 < choices) {
    CUDA_RETURN_IF_ERROR(cudaMemsetAsync(rows_out + row1 * hidden_, 0, static_cast<size_t>(choices - row1) * row_bytes,
                                         stream_));
  }
  CUDA_RETURN_IF_ERROR(cudaMemsetAsync(out, 0, static_cast<size_t>(n * hidden_) * sizeof(float), stream_));
  RETURN_IF_ERROR(Step(kExperts, "zero_rows"));
  RETURN_IF_ERROR(cuda::LaunchCombineExperts(expert_out_.as<float>(), row_of_choice_.as<int32_t>(), weights_.as<float>(),
                                             n, p.top_k, hidden_, out, stream_));
  RETURN_IF_ERROR(Lap(kExperts));
  return SharedAndReduce(L, n, out);
}

absl::Status CudaPrefillBackend::SharedAndReduce(GpuLayer& L, int64_t n, float* out) {
  const float alpha = 1.0f, beta = 0.0f;
  if (L.shared.inter > 0 && rank_ == 0) {  // several cards: once, on the first
    // After the routed experts (their rows are no longer needed): the CPU adds
    // the shared expert last too. Ungated, the down GEMM adds it to `out`
    // itself (cuBLAS beta 1), except in the fp32 checking mode, which keeps
    // the CPU's separate add.
    const bool into_out = !L.has_shared_gate && !f32_;
    RETURN_IF_ERROR(Mlp(L.shared, xn_act(), n, into_out ? out : shared_out_.as<float>(), into_out));
    if (L.has_shared_gate) {
      // sigmoid(shared_expert_gate(x)) per token, in fp32 as the CPU computes it.
      CUBLAS_RETURN_IF_ERROR(cublasSgemm(cublas_, CUBLAS_OP_T, CUBLAS_OP_N, 1, static_cast<int>(n),
                                         static_cast<int>(hidden_), &alpha, L.shared_gate.as<float>(),
                                         static_cast<int>(hidden_), xn_.as<float>(), static_cast<int>(hidden_), &beta,
                                         gate_logits_.as<float>(), 1));
      RETURN_IF_ERROR(cuda::LaunchSigmoidGate(shared_out_.as<float>(), n, hidden_, gate_logits_.as<float>(), 1, true,
                                              stream_));
    }
    if (!into_out) RETURN_IF_ERROR(cuda::LaunchAdd(out, shared_out_.as<float>(), n * hidden_, stream_));
    RETURN_IF_ERROR(Lap(kMlp));
  }
  if (cards_ > 1) {
#if KRASIS_HAVE_NCCL
    const ncclResult_t r = ncclAllReduce(out, out, static_cast<size_t>(n * hidden_), ncclFloat, ncclSum, comm_, stream_);
    if (r != ncclSuccess) return InternalError("NCCL all-reduce of the MoE output: ", ncclGetErrorString(r));
    RETURN_IF_ERROR(Lap(kReduce));
#else
    return absl::UnimplementedError("this build has no NCCL");
#endif
  }
  return absl::OkStatus();
}

absl::Status CudaPrefillBackend::Forward(std::span<const int32_t> tokens, SequenceState& seq, PagedKvCache& cache,
                                         std::vector<float>* logits, bool all_positions,
                                         const std::function<void(int layer)>& on_layer_done) {
  const int64_t n = static_cast<int64_t>(tokens.size());
  const int64_t start = seq.num_tokens;
  if (n == 0) return InvalidArgumentError("empty batch item");
  for (int32_t t : tokens) {
    if (t < 0 || t >= vocab_) return InvalidArgumentError("token id ", t, " is out of range [0, ", vocab_, ")");
  }
  if (start + n > capacity_) {
    return absl::FailedPreconditionError(StrCat("the CUDA backend holds KV for ", capacity_, " tokens (Begin); ",
                                                start + n, " needed"));
  }
  const bool writes = rank_ == 0;  // other cards follow on a private copy of the sequence, writing nothing
  if (writes) RETURN_IF_ERROR(seq.Reserve(cache, start + n));
  CUDA_RETURN_IF_ERROR(cudaSetDevice(options_.device));
  RETURN_IF_ERROR(ReserveWorkspace(n));
  RETURN_IF_ERROR(ReservePositions(start + n));
  kv_dtype_ = cache.dtype();

  lap_ = step_lap_ = std::chrono::steady_clock::now();
  float* x = x_.as<float>();
  if (first_layer_ > 0) {
    // A later stage of a pipeline split by layers: the hidden states come from the stage before.
#if KRASIS_HAVE_NCCL
    const ncclResult_t r = ncclRecv(x, static_cast<size_t>(n * hidden_), ncclFloat, stage_ - 1, comm_, stream_);
    if (r != ncclSuccess) return InternalError("NCCL receive of the hidden states: ", ncclGetErrorString(r));
#else
    return absl::UnimplementedError("this build has no NCCL");
#endif
  } else {
    // The embedding on the card: only the token ids cross PCIe.
    RETURN_IF_ERROR(host_ids_.Reserve(static_cast<size_t>(n) * sizeof(int32_t)));
    RETURN_IF_ERROR(token_ids_.Reserve(static_cast<size_t>(n) * sizeof(int32_t)));
    CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream_));  // host_ids_ may still feed the last pass's copy
    std::copy(tokens.begin(), tokens.end(), host_ids_.as<int32_t>());
    CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(token_ids_.as<void>(), host_ids_.as<void>(),
                                         static_cast<size_t>(n) * sizeof(int32_t), cudaMemcpyHostToDevice, stream_));
    RETURN_IF_ERROR(cuda::LaunchEmbedRows(embed_table_->as<void>(), embed_f32_, token_ids_.as<int32_t>(), n, hidden_, x,
                                          stream_));
  }
  RETURN_IF_ERROR(Step(kEmbed, "ids_rows"));
  // The chunk's rope rows computed on the card: the host's table and its copy
  // cost 2-3 ms per 4K-token chunk with the card idle (H200, DeepSeek-V2-Lite).
  for (size_t r = 0; r < ropes_.size(); ++r) {
    RETURN_IF_ERROR(cuda::LaunchRopeTable(rope_freqs_[r].as<float>(), ropes_[r]->rot_dim, ropes_[r]->attention_factor,
                                          start, n, rope_tables_[r].as<float>(), stream_));
  }
  RETURN_IF_ERROR(Step(kEmbed, "rope_tables"));

  RETURN_IF_ERROR(experts_.Prefetch());
  RETURN_IF_ERROR(Step(kEmbed, "prefetch"));
  RETURN_IF_ERROR(Lap(kEmbed));
  const size_t first = static_cast<size_t>(first_layer_), end = static_cast<size_t>(end_layer_);
  // Layers whose rows are on their way to the host (layer, slot), oldest first.
  std::deque<std::pair<size_t, int>> pending;
  const size_t slot_elements = static_cast<size_t>(n * max_kv_row_);
  auto host_slot = [&](int slot) {
    return host_rows_.as<std::byte>() + static_cast<size_t>(slot) * slot_elements * cache.ElementBytes();
  };
  // The oldest pending layer's rows into the cache (after waiting for them
  // when `wait`), then on_layer_done.
  auto write_out = [&](bool wait) -> absl::Status {
    const auto [layer, slot] = pending.front();
    pending.pop_front();
    if (wait) CUDA_RETURN_IF_ERROR(cudaEventSynchronize(rows_ready_[slot]));
    if (layers_[layer].kv_row > 0 && writes) {
      seq.WriteRawRows(cache, static_cast<int>(layer), start, n, host_slot(slot));
    }
    if (on_layer_done) on_layer_done(static_cast<int>(layer));
    return Lap(kKvOut);
  };
  for (size_t l = first; l < end; ++l) {
    GpuLayer& L = layers_[l];
    // (Later layers' input norm ran with the last layer's residual add.)
    if (l == first) RETURN_IF_ERROR(Norm(x, n, L.input_norm, false));
    switch (L.mixer_kind) {
      case MixerDesc::Kind::kGqa: RETURN_IF_ERROR(Attention(L, n, start)); break;
      case MixerDesc::Kind::kMla: RETURN_IF_ERROR(Mla(L, n, start)); break;
      case MixerDesc::Kind::kGatedDeltaNet:
        if (seq.linear.size() <= l) {
          return absl::FailedPreconditionError("the sequence's linear-attention state is not initialised");
        }
        RETURN_IF_ERROR(DeltaNet(L, n, start, seq.linear[l]));
        break;
    }
    RETURN_IF_ERROR(Lap(kMixerProj));
    // The new rows, in the cache's dtype, start for the host cache (slot
    // `slot`, kRowSlots): the host copies them into the cache slots layers
    // later, while the card goes on.
    const int slot = static_cast<int>((l - first) % kRowSlots);
    if (pending.size() == static_cast<size_t>(kRowSlots)) RETURN_IF_ERROR(write_out(true));  // the slot's last layer
    const float* kv_new = L.kv.as<float>() + start * L.kv_row;
    const size_t row_bytes = static_cast<size_t>(n * L.kv_row) * cache.ElementBytes();
    // (The slot is free: the host wrote its rows out, or, after a failed pass, the card waits for its copy.)
    CUDA_RETURN_IF_ERROR(cudaStreamWaitEvent(stream_, rows_ready_[slot], 0));
    // Linear attention has no rows (its state went back into the sequence);
    // other cards write nothing.
    const bool rows_out = L.kv_row > 0 && writes, narrow = cache.dtype() != DType::kF32;
    uint16_t* rows16 = kv_out16_.as<uint16_t>() + static_cast<size_t>(slot) * slot_elements;
    if (rows_out && narrow) RETURN_IF_ERROR(cuda::LaunchToHalf(cache.dtype(), kv_new, n * L.kv_row, rows16, stream_));
    CUDA_RETURN_IF_ERROR(cudaEventRecord(rows_converted_, stream_));
    CUDA_RETURN_IF_ERROR(cudaStreamWaitEvent(kv_stream_, rows_converted_, 0));
    if (rows_out) {
      CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(host_slot(slot), narrow ? static_cast<const void*>(rows16) : kv_new,
                                           row_bytes, cudaMemcpyDeviceToHost, kv_stream_));
    }
    CUDA_RETURN_IF_ERROR(cudaEventRecord(rows_ready_[slot], kv_stream_));
    pending.push_back({l, slot});
    RETURN_IF_ERROR(Step(kRouting, "kv_rows_to_host"));
    RETURN_IF_ERROR(AddNorm(x, mix_.as<float>(), n, L.post_norm, true));
    RETURN_IF_ERROR(Step(kRouting, "residual_norm"));
    if (L.ffn_kind == FfnDesc::Kind::kDense) {
      RETURN_IF_ERROR(Mlp(L.dense, xn_act(), n, ffn_out_.as<float>()));
      RETURN_IF_ERROR(Lap(kMlp));
    } else {
      RETURN_IF_ERROR(Moe(L, n, ffn_out_.as<float>()));
    }
    if (l + 1 < end) {
      RETURN_IF_ERROR(AddNorm(x, ffn_out_.as<float>(), n, layers_[l + 1].input_norm, false));
    } else {
      RETURN_IF_ERROR(cuda::LaunchAdd(x, ffn_out_.as<float>(), n * hidden_, stream_));
    }
    // Whatever earlier layers' rows have arrived, into the cache now.
    while (!pending.empty() && cudaEventQuery(rows_ready_[pending.front().second]) == cudaSuccess) {
      RETURN_IF_ERROR(write_out(false));
    }
  }
  while (!pending.empty()) RETURN_IF_ERROR(write_out(true));
  if (!last_stage()) {
#if KRASIS_HAVE_NCCL
    const ncclResult_t r = ncclSend(x, static_cast<size_t>(n * hidden_), ncclFloat, stage_ + 1, comm_, stream_);
    if (r != ncclSuccess) return InternalError("NCCL send of the hidden states: ", ncclGetErrorString(r));
#endif
  } else if (logits != nullptr) {
    const int64_t rows = all_positions ? n : 1;
    RETURN_IF_ERROR(Norm(x + (n - rows) * hidden_, rows, final_norm_, false));
    RETURN_IF_ERROR(logits_.Reserve(static_cast<size_t>(rows * vocab_) * sizeof(float)));
    RETURN_IF_ERROR(Gemm(xn_act(), rows, lm_head_, vocab_, hidden_, logits_.as<float>()));
    logits->resize(static_cast<size_t>(rows * vocab_));
    CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(logits->data(), logits_.as<void>(), logits->size() * sizeof(float),
                                         cudaMemcpyDeviceToHost, stream_));
  }
  CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream_));
  for (size_t l = first; l < end; ++l) {
    GpuLayer& L = layers_[l];
    if (L.mixer_kind != MixerDesc::Kind::kGatedDeltaNet) continue;
    LinearState& state = seq.linear[l];
    const float* out = state_out_.as<float>() + L.state_out;
    std::copy_n(out, state.conv.size(), state.conv.data());
    std::copy_n(out + state.conv.size(), state.recurrent.size(), state.recurrent.data());
    L.state_epoch = begin_epoch_, L.state_pos = start + n;
  }
  RETURN_IF_ERROR(Lap(kLmHead));
  seq.num_tokens += n;
  return absl::OkStatus();
}

#if KRASIS_HAVE_NCCL
// Lets the calling thread run on every CPU the process may use. A thread pool
// pins the thread that calls it to its first worker's core (numa_pool.cc), and
// new threads inherit that: the card threads, and NCCL's own, would all share
// one core (measured: every stage of a two-card pass twice as slow, the
// host's KV copies three times). The kernel keeps the mask within the
// process's cgroup.
void UnpinThisThread() {
  cpu_set_t all;
  CPU_ZERO(&all);
  for (int c = 0; c < CPU_SETSIZE; ++c) CPU_SET(c, &all);
  (void)pthread_setaffinity_np(pthread_self(), sizeof(all), &all);
}

absl::Status NcclStatus(ncclResult_t r, const char* what) {
  if (r == ncclSuccess) return absl::OkStatus();
  return InternalError(what, ": ", ncclGetErrorString(r));
}

// Several cards of one host: one CudaPrefillBackend per card (a thread each
// per Forward) and an NCCL communicator. Split by experts: the routed experts
// split between the cards, the MoE outputs all-reduced; card 0 works on the
// caller's sequence, the others on private copies of its linear-attention
// state (they write nothing). Split by layers: a pipeline of micro-chunks
// (ForwardByLayers).
class MultiCardPrefillBackend final : public PrefillBackend {
 public:
  MultiCardPrefillBackend(std::vector<int> devices, std::vector<std::unique_ptr<CudaPrefillBackend>> cards,
                          const CudaBackendOptions& options)
      : devices_(std::move(devices)),
        cards_(std::move(cards)),
        shadows_(cards_.size()),
        by_layers_(options.split == CudaBackendOptions::Split::kLayers),
        plan_chunk_(options.plan_chunk_tokens),
        micro_chunk_(options.micro_chunk_tokens) {}
  ~MultiCardPrefillBackend() override { DestroyComms(); }

  std::string name() const override { return "cuda"; }

  absl::Status InitComms() {
    DestroyComms();
    // The shared two-GPU hosts require NVLink multicast (NVLS) off; a user's own setting wins.
    setenv("NCCL_NVLS_ENABLE", "0", 0);
    comms_.assign(devices_.size(), nullptr);
    // From an unpinned thread: NCCL's threads start with its CPU mask.
    ncclResult_t init = ncclSuccess;
    std::thread([&] {
      UnpinThisThread();
      init = ncclCommInitAll(comms_.data(), static_cast<int>(devices_.size()), devices_.data());
    }).join();
    RETURN_IF_ERROR(NcclStatus(init, "ncclCommInitAll"));
    for (size_t r = 0; r < cards_.size(); ++r) cards_[r]->SetComm(comms_[r]);
    return absl::OkStatus();
  }

  absl::Status Begin(const SequenceState& seq, PagedKvCache& cache, int64_t total_tokens) override {
    for (auto& card : cards_) RETURN_IF_ERROR(card->Begin(seq, cache, total_tokens));
    return absl::OkStatus();
  }

  absl::Status Forward(std::span<const int32_t> tokens, SequenceState& seq, PagedKvCache& cache,
                       std::vector<float>* logits, bool all_positions,
                       const std::function<void(int layer)>& on_layer_done) override {
    if (comms_.empty()) RETURN_IF_ERROR(InitComms());  // after an aborted pass
    if (by_layers_) return ForwardByLayers(tokens, seq, cache, logits, all_positions, on_layer_done);
    for (size_t r = 1; r < cards_.size(); ++r) {
      shadows_[r].num_tokens = seq.num_tokens;
      shadows_[r].linear = seq.linear;
    }
    // Every card in its own thread. A card that fails leaves the others waiting
    // in a collective: the first failure aborts the communicators (the others
    // then fail too), and its error is the one returned.
    return OnEveryCard([&](size_t r) {
      return r == 0 ? cards_[0]->Forward(tokens, seq, cache, logits, all_positions, on_layer_done)
                    : cards_[r]->Forward(tokens, shadows_[r], cache, nullptr, false, nullptr);
    });
  }

  int64_t ForwardTokens(int64_t chunk_tokens) const override {
    // The pipeline splits a Forward into micro-chunks itself: longer ones fill it better.
    return by_layers_ ? chunk_tokens * 16 : chunk_tokens;
  }

  // The first card's stages; split by layers, the other cards' follow as
  // "cardR.stage" (each card has its own share of every stage).
  std::vector<std::pair<std::string, double>> TakeProfile() override {
    std::vector<std::pair<std::string, double>> out = cards_[0]->TakeProfile();
    for (size_t r = 1; r < cards_.size(); ++r) {
      for (auto& [name, ms] : cards_[r]->TakeProfile()) {
        if (by_layers_) out.emplace_back(StrCat("card", r, ".", name), ms);
      }
    }
    return out;
  }

 private:
  // run(r) on every card, each in its own thread. A card that fails leaves the
  // others waiting in a collective (or a receive): the first failure aborts
  // the communicators (the others then fail too), and its error is the one
  // returned.
  absl::Status OnEveryCard(const std::function<absl::Status(size_t card)>& run) {
    std::vector<absl::Status> status(cards_.size());
    std::atomic<int> first_failure{-1};
    std::vector<std::thread> threads;
    for (size_t r = 0; r < cards_.size(); ++r) {
      threads.emplace_back([&, r] {
        UnpinThisThread();
        status[r] = run(r);
        int none = -1;
        if (!status[r].ok() && first_failure.compare_exchange_strong(none, static_cast<int>(r))) {
          for (ncclComm_t c : comms_) ncclCommAbort(c);
        }
      });
    }
    for (std::thread& t : threads) t.join();
    const int failed = first_failure.load();
    if (failed >= 0) {
      comms_.clear();  // aborted: rebuilt on the next pass
      return status[static_cast<size_t>(failed)];
    }
    return absl::OkStatus();
  }

  // Split by layers. The tokens go through in micro-chunks: card r runs its
  // layers over micro-chunk m and sends the result to card r + 1, then goes on
  // to micro-chunk m + 1 while card r + 1 works on m. Each card runs on a copy
  // of the sequence (same cache blocks; it writes only its own layers' rows)
  // holding its layers' linear-attention state; on_layer_done is called once
  // per layer, after the last micro-chunk, one call at a time.
  absl::Status ForwardByLayers(std::span<const int32_t> tokens, SequenceState& seq, PagedKvCache& cache,
                               std::vector<float>* logits, bool all_positions,
                               const std::function<void(int layer)>& on_layer_done) {
    const int64_t n = static_cast<int64_t>(tokens.size());
    if (n == 0) return InvalidArgumentError("empty batch item");
    const int64_t vocab = cards_.back()->vocab();
    for (int32_t t : tokens) {
      // (Checked here too: a card failing alone would abort the communicators.)
      if (t < 0 || t >= vocab) return InvalidArgumentError("token id ", t, " is out of range [0, ", vocab, ")");
    }
    RETURN_IF_ERROR(seq.Reserve(cache, seq.num_tokens + n));
    bool streams = false;
    for (const auto& card : cards_) streams = streams || card->streams();
    const std::vector<int64_t> sizes = PipelineMicroChunks(n, plan_chunk_, micro_chunk_, streams);
    const size_t parts = sizes.size();
    for (size_t r = 0; r < cards_.size(); ++r) {
      SequenceState& shadow = shadows_[r];
      shadow.num_tokens = seq.num_tokens;
      shadow.block_table = seq.block_table;
      shadow.linear.resize(seq.linear.size());
      for (int l = cards_[r]->first_layer(); l < cards_[r]->end_layer(); ++l) {
        if (static_cast<size_t>(l) < seq.linear.size()) std::swap(shadow.linear[l], seq.linear[l]);
      }
    }
    if (logits != nullptr) logits->clear();
    std::mutex done_mu;
    const size_t last = cards_.size() - 1;
    absl::Status s = OnEveryCard([&](size_t r) -> absl::Status {
      std::vector<float> part_logits;
      for (size_t m = 0, first = 0; m < parts; first += static_cast<size_t>(sizes[m]), ++m) {
        const size_t count = static_cast<size_t>(sizes[m]);
        const bool final_part = m + 1 == parts;
        std::vector<float>* want = r == last && logits != nullptr && (all_positions || final_part) ? &part_logits : nullptr;
        std::function<void(int)> done;
        if (on_layer_done && final_part) {
          done = [&](int layer) {
            std::lock_guard<std::mutex> lock(done_mu);
            on_layer_done(layer);
          };
        }
        RETURN_IF_ERROR(cards_[r]->Forward(tokens.subspan(first, count), shadows_[r], cache, want, all_positions, done));
        if (want != nullptr) logits->insert(logits->end(), part_logits.begin(), part_logits.end());
      }
      return absl::OkStatus();
    });
    for (size_t r = 0; r < cards_.size(); ++r) {
      for (int l = cards_[r]->first_layer(); l < cards_[r]->end_layer(); ++l) {
        if (static_cast<size_t>(l) < seq.linear.size()) std::swap(shadows_[r].linear[l], seq.linear[l]);
      }
    }
    RETURN_IF_ERROR(s);
    seq.num_tokens += n;
    return absl::OkStatus();
  }

  void DestroyComms() {
    for (ncclComm_t c : comms_) {
      if (c != nullptr) ncclCommDestroy(c);
    }
    comms_.clear();
  }

  std::vector<int> devices_;
  std::vector<std::unique_ptr<CudaPrefillBackend>> cards_;
  std::vector<SequenceState> shadows_;
  std::vector<ncclComm_t> comms_;
  const bool by_layers_;
  const int64_t plan_chunk_, micro_chunk_;
};
#endif

}  // namespace

std::vector<int64_t> PipelineMicroChunks(int64_t n, int64_t plan_chunk, int64_t option, bool streams) {
  const int64_t cap = plan_chunk > 0 ? plan_chunk : std::max<int64_t>(n, 1);
  const int64_t each = option > 0 ? option : streams ? cap : std::min<int64_t>(2048, cap);
  std::vector<int64_t> sizes;
  for (int64_t at = 0; at < n; at += each) sizes.push_back(std::min(each, n - at));
  return sizes;
}

absl::StatusOr<std::unique_ptr<PrefillBackend>> MakeCudaPrefillBackend(const DecoderModel& model,
                                                                       const CudaBackendOptions& options,
                                                                       CudaBackendInfo* info) {
  if (options.devices.size() <= 1) {
    CudaBackendOptions one = options;
    if (!options.devices.empty()) one.device = options.devices[0];
    auto backend = std::make_unique<CudaPrefillBackend>(model, one, info);
    RETURN_IF_ERROR(backend->Init());
    return std::unique_ptr<PrefillBackend>(std::move(backend));
  }
#if KRASIS_HAVE_NCCL
  int present = 0;
  CUDA_RETURN_IF_ERROR(cudaGetDeviceCount(&present));
  for (size_t i = 0; i < options.devices.size(); ++i) {
    const int d = options.devices[i];
    if (d < 0 || d >= present) {
      return InvalidArgumentError("CUDA device ", d, " does not exist (", present, " present)");
    }
    for (size_t j = 0; j < i; ++j) {
      if (options.devices[j] == d) return InvalidArgumentError("CUDA device ", d, " is listed twice");
    }
  }
  const int cards = static_cast<int>(options.devices.size());
  const bool by_layers = options.split == CudaBackendOptions::Split::kLayers;
  const int num_layers = static_cast<int>(model.layers.size());
  if (by_layers && num_layers < cards) {
    return InvalidArgumentError("a ", num_layers, "-layer model cannot be split by layers over ", cards, " cards");
  }
  std::vector<std::unique_ptr<CudaPrefillBackend>> backends;
  std::vector<CudaBackendInfo> infos(options.devices.size());
  for (int r = 0; r < cards; ++r) {
    CudaBackendOptions one = options;
    one.device = options.devices[static_cast<size_t>(r)];
    one.devices.clear();
    backends.push_back(std::make_unique<CudaPrefillBackend>(model, one, &infos[static_cast<size_t>(r)]));
    if (by_layers) {
      // Layers [r L / cards, (r + 1) L / cards), rounded down: a remainder goes
      // to the later cards. The pass takes about the first micro-chunk on the
      // first card plus all of them on the slowest card (the later ones never
      // wait once the pipeline is full), so the earlier cards should be the
      // lighter ones. (DeepSeek-V2-Lite INT4, 16K tokens on 2 x H200: 0.359 s
      // with layers 0-13 | 14-26, whose first card was the slower one.)
      auto bound = [&](int i) { return i * num_layers / cards; };
      backends.back()->SetStage(r, bound(r), bound(r + 1));
    } else {
      backends.back()->SetCard(r, cards);
    }
    RETURN_IF_ERROR(backends.back()->Init());
  }
  if (info != nullptr) {
    *info = infos[0];
    info->cards = cards;
    info->split = by_layers ? "layers" : "experts";
    for (int r = 1; r < cards; ++r) {
      const CudaBackendInfo& o = infos[static_cast<size_t>(r)];
      if (by_layers) {  // each card holds its own layers
        info->moe_layers += o.moe_layers;
        info->streamed_layers += o.streamed_layers;
        info->grouped_layers += o.grouped_layers;
        info->stream_parts = std::max(info->stream_parts, o.stream_parts);
        if (info->expert_format.empty()) info->expert_format = o.expert_format;
        if (o.streamed_layers > 0) info->pinning = o.pinning;
      } else {
        info->streamed_layers = std::max(info->streamed_layers, o.streamed_layers);
      }
      info->resident_expert_bytes += o.resident_expert_bytes;
      info->streamed_expert_bytes += o.streamed_expert_bytes;
      info->staging_bytes += o.staging_bytes;
    }
  }
  auto backend = std::make_unique<MultiCardPrefillBackend>(options.devices, std::move(backends), options);
  RETURN_IF_ERROR(backend->InitComms());
  return std::unique_ptr<PrefillBackend>(std::move(backend));
#else
  return absl::UnimplementedError("several CUDA devices need NCCL, which this build does not have");
#endif
}

}  // namespace krasis
