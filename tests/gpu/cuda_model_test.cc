// GPU test (ctest label gpu): the CUDA prefill backend against the CPU model on
// the transformers fixtures (tests/data/models). Logits at every position and
// every layer's KV rows agree within BF16 noise, chunked prefill over a cached
// prefix agrees with one shot, and a greedy continuation decoded on the CPU
// from the GPU's KV equals the all-CPU one. Routed experts streamed from host
// RAM (both pinning modes) compute exactly what resident ones do, and INT4/INT8
// experts taken from the conversion cache run dequantized on the card.
// Qwen3-Next covers Gated DeltaNet (its state handed to CPU decode), output-gated
// attention and the gated shared expert.
// Without a GPU every test here is skipped with a message that says so.
#include "common/cuda/cuda_model.h"

#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <numeric>
#include <regex>
#include <tuple>

#include <nlohmann/json.hpp>

#include "common/cuda/device.h"
#include "tests/gpu/gpu_test_util.h"
#include "common/models/model.h"
#include "common/quant/expert_cache.h"
#include "common/quant/quantize.h"
#include "common/safetensors.h"

namespace krasis {
namespace {

std::string FixtureDir(const std::string& arch) { return std::string(KRASIS_TEST_DATA_DIR) + "/models/" + arch; }

double RelL2(const float* a, const float* b, size_t n) {
  double num = 0, den = 0;
  for (size_t i = 0; i < n; ++i) {
    if (std::isnan(a[i])) return INFINITY;
    num += (double(a[i]) - b[i]) * (double(a[i]) - b[i]);
    den += double(b[i]) * b[i];
  }
  return std::sqrt(num / den);
}

int Argmax(const float* v, int64_t n) { return static_cast<int>(std::max_element(v, v + n) - v); }

// The gap between the two largest logits.
float Top2Gap(const float* v, int64_t n) {
  std::vector<float> s(v, v + n);
  std::partial_sort(s.begin(), s.begin() + 2, s.end(), std::greater<float>());
  return s[0] - s[1];
}

// A linear-attention layer's state after the prompt (what decode continues
// from): conv and recurrent state within `tolerance` (relative L2).
void ExpectSameLinearState(const SequenceState& want, const SequenceState& got, int layer, double tolerance) {
  ASSERT_GT(want.linear.size(), static_cast<size_t>(layer));
  ASSERT_EQ(got.linear.size(), want.linear.size());
  const LinearState &a = want.linear[layer], &b = got.linear[layer];
  ASSERT_EQ(a.conv.size(), b.conv.size());
  ASSERT_EQ(a.recurrent.size(), b.recurrent.size());
  ASSERT_FALSE(a.recurrent.empty());
  EXPECT_LT(RelL2(b.conv.data(), a.conv.data(), a.conv.size()), tolerance) << "layer " << layer << " conv state";
  EXPECT_LT(RelL2(b.recurrent.data(), a.recurrent.data(), a.recurrent.size()), tolerance)
      << "layer " << layer << " recurrent state";
}

// Every layer's KV rows of the first n positions (relative L2 within
// `tolerance`), or its linear-attention state.
void ExpectSameCache(PagedKvCache& want_cache, const SequenceState& want, PagedKvCache& got_cache,
                     const SequenceState& got, int64_t n, double tolerance) {
  for (int l = 0; l < want_cache.num_layers(); ++l) {
    const int64_t f = want_cache.LayerFloats(l);
    if (f == 0) {
      ExpectSameLinearState(want, got, l, tolerance);
      continue;
    }
    std::vector<float> a(static_cast<size_t>(n * f)), b(a.size());
    want.ReadRows(want_cache, l, 0, n, a.data());
    got.ReadRows(got_cache, l, 0, n, b.data());
    EXPECT_LT(RelL2(b.data(), a.data(), a.size()), tolerance) << "layer " << l << " KV";
  }
}

class CudaModelTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    KRASIS_SKIP_WITHOUT_GPU();
    auto model = LoadModel(FixtureDir(GetParam()));
    ASSERT_TRUE(model.ok()) << model.status();
    model_ = std::move(*model);
    std::ifstream in(FixtureDir(GetParam()) + "/reference.json");
    ref_ = nlohmann::json::parse(in);
    vocab_ = model_->config().vocab_size;
  }

  // The whole prompt on the CPU: every position's logits, and the cache.
  std::vector<float> CpuPrefill(const std::vector<int32_t>& prompt, PagedKvCache& cache, SequenceState& seq) {
    model_->InitSequence(seq);
    BatchItem item{&seq, prompt, true};
    std::vector<std::vector<float>> logits;
    EXPECT_TRUE(model_->Forward(std::span(&item, 1), cache, &logits).ok());
    return logits.empty() ? std::vector<float>{} : logits[0];
  }

  std::unique_ptr<DecoderModel> model_;
  nlohmann::json ref_;
  int64_t vocab_ = 0;
};

// Runs the prompt on `backend` in chunks of 7, 13 and the rest (later chunks
// attend to earlier ones on the card): every position's logits.
std::vector<float> GpuPrefill(PrefillBackend& backend, const std::vector<int32_t>& prompt, PagedKvCache& cache,
                              SequenceState& seq, int64_t vocab, int num_layers) {
  const int64_t n = static_cast<int64_t>(prompt.size());
  EXPECT_TRUE(backend.Begin(seq, cache, n).ok());
  std::vector<float> got;
  std::vector<int> layers_done;
  for (int64_t first = 0, chunk = 7; first < n; first += chunk, chunk = chunk == 7 ? 13 : n) {
    const int64_t count = std::min(chunk, n - first);
    std::vector<float> logits;
    absl::Status s = backend.Forward(std::span(prompt).subspan(first, count), seq, cache, &logits, true,
                                     [&](int layer) { layers_done.push_back(layer); });
    EXPECT_TRUE(s.ok()) << s;
    EXPECT_EQ(static_cast<int64_t>(logits.size()), count * vocab);
    got.insert(got.end(), logits.begin(), logits.end());
  }
  EXPECT_EQ(seq.num_tokens, n);
  EXPECT_EQ(layers_done.size(), 3u * num_layers);
  return got;
}

// The fp32 checking mode computes what the CPU model computes, to fp32
// rounding: every position's logits, the argmax everywhere, every KV row.
// Gated DeltaNet's delta rule token by token and chunk by chunk (WY form) alike.
TEST_P(CudaModelTest, F32ModeMatchesCpuExactly) {
  const std::vector<int32_t> prompt = ref_["long_prompt_ids"].get<std::vector<int32_t>>();
  const int64_t n = static_cast<int64_t>(prompt.size());
  auto cpu_cache = model_->MakeCache(64, 4, DType::kF32);
  SequenceState cpu_seq;
  std::vector<float> want = CpuPrefill(prompt, *cpu_cache, cpu_seq);
  for (bool chunked : {false, true}) {
    SCOPED_TRACE(chunked ? "chunked delta rule" : "delta rule token by token");
    CudaBackendOptions options;
    options.precision = CudaBackendOptions::Precision::kF32;
    options.chunked_delta_rule = chunked;
    auto backend = MakeCudaPrefillBackend(*model_, options);
    ASSERT_TRUE(backend.ok()) << backend.status();
    auto gpu_cache = model_->MakeCache(64, 4, DType::kF32);
    SequenceState gpu_seq;
    model_->InitSequence(gpu_seq);
    std::vector<float> got = GpuPrefill(**backend, prompt, *gpu_cache, gpu_seq, vocab_, model_->layers.size());
    const double err = RelL2(got.data(), want.data(), got.size());
    std::cout << GetParam() << " f32 mode" << (chunked ? " (chunked delta rule)" : "") << ": logits rel L2 " << err
              << "\n";
    EXPECT_LT(err, 1e-4);
    for (int64_t p = 0; p < n; ++p) EXPECT_EQ(Argmax(&got[p * vocab_], vocab_), Argmax(&want[p * vocab_], vocab_)) << p;
    ExpectSameCache(*cpu_cache, cpu_seq, *gpu_cache, gpu_seq, n, 1e-4);
  }
}

// BF16 (what prefill runs with) stays within BF16 noise of the CPU at most
// positions. In these tiny random MoE models near-tied router scores are
// common, so a token's expert choice can flip; that moves a few positions a
// lot, hence the median and the argmax share rather than one global bound.
TEST_P(CudaModelTest, Bf16ModeStaysWithinBf16NoiseOfCpu) {
  CudaBackendInfo info;
  auto backend = MakeCudaPrefillBackend(*model_, {}, &info);
  ASSERT_TRUE(backend.ok()) << backend.status();
  EXPECT_EQ(info.grouped_layers, info.moe_layers);  // the routed experts ran through the grouped GEMM
  const std::vector<int32_t> prompt = ref_["long_prompt_ids"].get<std::vector<int32_t>>();
  const int64_t n = static_cast<int64_t>(prompt.size());
  for (DType kv : {DType::kF32, DType::kBF16}) {
    SCOPED_TRACE(DTypeName(kv));
    auto cpu_cache = model_->MakeCache(64, 4, kv), gpu_cache = model_->MakeCache(64, 4, kv);
    SequenceState cpu_seq, gpu_seq;
    std::vector<float> want = CpuPrefill(prompt, *cpu_cache, cpu_seq);
    model_->InitSequence(gpu_seq);
    std::vector<float> got = GpuPrefill(**backend, prompt, *gpu_cache, gpu_seq, vocab_, model_->layers.size());
    std::vector<double> per_position;
    int same = 0;
    for (int64_t p = 0; p < n; ++p) {
      per_position.push_back(RelL2(&got[p * vocab_], &want[p * vocab_], vocab_));
      same += Argmax(&got[p * vocab_], vocab_) == Argmax(&want[p * vocab_], vocab_);
    }
    std::sort(per_position.begin(), per_position.end());
    const double median = per_position[per_position.size() / 2];
    const double err = RelL2(got.data(), want.data(), got.size());
    std::cout << GetParam() << " bf16 mode, kv " << DTypeName(kv) << ": logits rel L2 " << err << " (median position "
              << median << ", worst " << per_position.back() << "), argmax equal at " << same << "/" << n << "\n";
    RecordProperty(std::string(DTypeName(kv)) + "_median_rel_l2", std::to_string(median));
    EXPECT_LT(median, 2e-2);
    EXPECT_LT(err, 0.15);
    EXPECT_GE(same, static_cast<int>(n) * 9 / 10);
    for (int l = 0; l < static_cast<int>(model_->layers.size()); ++l) {
      const int64_t f = cpu_cache->LayerFloats(l);
      if (f == 0) {
        ExpectSameLinearState(cpu_seq, gpu_seq, l, 5e-2);
        continue;
      }
      std::vector<float> a(static_cast<size_t>(n * f)), b(a.size());
      cpu_seq.ReadRows(*cpu_cache, l, 0, n, a.data());
      gpu_seq.ReadRows(*gpu_cache, l, 0, n, b.data());
      // Per token, like the logits: a flipped expert choice moves later layers' rows of that token.
      std::vector<double> per_token;
      for (int64_t t = 0; t < n; ++t) per_token.push_back(RelL2(&b[t * f], &a[t * f], static_cast<size_t>(f)));
      std::sort(per_token.begin(), per_token.end());
      EXPECT_LT(per_token[per_token.size() / 2], 2e-2) << "layer " << l << " KV, median token";
      EXPECT_LT(per_token[per_token.size() * 3 / 4], 5e-2) << "layer " << l << " KV, 3rd quartile token";
    }
  }
}

// A prefix computed on the CPU (as a decode worker's cached blocks are), the
// rest on the GPU, then a greedy continuation decoded on the CPU from the
// GPU's KV: the same tokens as all-CPU, except where the CPU's own top-2
// logits are within BF16 noise.
TEST_P(CudaModelTest, CachedPrefixThenCpuDecodeMatchesCpu) {
  auto backend = MakeCudaPrefillBackend(*model_, {});
  ASSERT_TRUE(backend.ok()) << backend.status();
  const std::vector<int32_t> prompt = ref_["long_prompt_ids"].get<std::vector<int32_t>>();
  const int64_t n = static_cast<int64_t>(prompt.size()), prefix = 12, steps = 24;
  auto cpu_cache = model_->MakeCache(64, 4, DType::kBF16), gpu_cache = model_->MakeCache(64, 4, DType::kBF16);
  SequenceState cpu_seq, gpu_seq;
  std::vector<float> want = CpuPrefill(prompt, *cpu_cache, cpu_seq);
  std::vector<int32_t> head(prompt.begin(), prompt.begin() + prefix);
  CpuPrefill(head, *gpu_cache, gpu_seq);
  ASSERT_TRUE((*backend)->Begin(gpu_seq, *gpu_cache, n).ok());
  std::vector<float> last;
  ASSERT_TRUE((*backend)->Forward(std::span(prompt).subspan(prefix), gpu_seq, *gpu_cache, &last, false, nullptr).ok());
  EXPECT_LT(RelL2(last.data(), &want[(n - 1) * vocab_], last.size()), 2e-2);

  auto greedy = [&](SequenceState& seq, PagedKvCache& cache, std::vector<float> logits) {
    std::vector<int32_t> out;
    std::vector<float> gaps;
    for (int64_t i = 0; i < steps; ++i) {
      out.push_back(Argmax(logits.data(), vocab_));
      gaps.push_back(Top2Gap(logits.data(), vocab_));
      BatchItem step{&seq, {out.back()}, false};
      std::vector<std::vector<float>> next;
      EXPECT_TRUE(model_->Forward(std::span(&step, 1), cache, &next).ok());
      logits = next[0];
    }
    return std::pair{out, gaps};
  };
  auto [cpu_tokens, cpu_gaps] = greedy(cpu_seq, *cpu_cache, std::vector<float>(want.end() - vocab_, want.end()));
  auto [gpu_tokens, gpu_gaps] = greedy(gpu_seq, *gpu_cache, last);
  size_t agree = 0;
  while (agree < cpu_tokens.size() && cpu_tokens[agree] == gpu_tokens[agree]) ++agree;
  std::cout << GetParam() << ": greedy after GPU prefill equals all-CPU for " << agree << "/" << steps << " tokens\n";
  if (agree < cpu_tokens.size()) {
    EXPECT_LT(cpu_gaps[agree], 0.1f) << "first difference at step " << agree << " is not a near tie";
  }
}

TEST_P(CudaModelTest, BadInputIsAnError) {
  auto backend = MakeCudaPrefillBackend(*model_, {});
  ASSERT_TRUE(backend.ok()) << backend.status();
  auto cache = model_->MakeCache(16, 4, DType::kBF16);
  SequenceState seq;
  model_->InitSequence(seq);
  ASSERT_TRUE((*backend)->Begin(seq, *cache, 8).ok());
  std::vector<int32_t> bad = {1, static_cast<int32_t>(vocab_)};
  EXPECT_EQ((*backend)->Forward(bad, seq, *cache, nullptr, false, nullptr).code(), absl::StatusCode::kInvalidArgument);
  std::vector<int32_t> too_many(9, 3);
  EXPECT_EQ((*backend)->Forward(too_many, seq, *cache, nullptr, false, nullptr).code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(seq.num_tokens, 0);
  std::vector<int32_t> ok = {1, 2, 3};
  EXPECT_TRUE((*backend)->Forward(ok, seq, *cache, nullptr, false, nullptr).ok());
  EXPECT_EQ(seq.num_tokens, 3);
}

// Every position's logits of the whole long prompt through `options` (in chunks
// of 7, 13 and the rest), and where the backend put the experts.
std::vector<float> RunGpu(DecoderModel& model, const std::vector<int32_t>& prompt, const CudaBackendOptions& options,
                          CudaBackendInfo* info) {
  auto backend = MakeCudaPrefillBackend(model, options, info);
  EXPECT_TRUE(backend.ok()) << backend.status();
  if (!backend.ok()) return {};
  auto cache = model.MakeCache(64, 4, DType::kF32);
  SequenceState seq;
  model.InitSequence(seq);
  return GpuPrefill(**backend, prompt, *cache, seq, model.config().vocab_size, model.layers.size());
}

// Experts streamed through the two staging buffers (every MoE layer, or all but
// one; pinned in place or through the pinned ring) give exactly the logits of
// resident experts: the same bytes reach the same kernels. Two prompts in a row
// exercise the cyclic prefetch across passes.
TEST_P(CudaModelTest, StreamedExpertsComputeExactlyWhatResidentOnesDo) {
  const std::vector<int32_t> prompt = ref_["long_prompt_ids"].get<std::vector<int32_t>>();
  CudaBackendOptions options;
  options.precision = CudaBackendOptions::Precision::kF32;
  CudaBackendInfo info;
  const std::vector<float> want = RunGpu(*model_, prompt, options, &info);
  ASSERT_GT(info.moe_layers, 0);
  EXPECT_EQ(info.streamed_layers, 0);
  EXPECT_GT(info.resident_expert_bytes, 0);
  for (cuda::Pinning pinning : {cuda::Pinning::kRegister, cuda::Pinning::kRing}) {
    for (auto [resident, parts] : {std::pair{0, 0}, {1, 0}, {0, 3}}) {
      SCOPED_TRACE(testing::Message() << cuda::PinningName(pinning) << ", " << resident << " layer(s) resident, "
                                      << parts << " parts");
      options.pinning = pinning;
      options.max_resident_expert_layers = resident;
      options.expert_parts = parts;
      auto backend = MakeCudaPrefillBackend(*model_, options, &info);
      ASSERT_TRUE(backend.ok()) << backend.status();
      EXPECT_EQ(info.streamed_layers, info.moe_layers - resident);
      EXPECT_GT(info.streamed_expert_bytes, 0);
      EXPECT_EQ(info.stream_parts, parts > 0 ? parts : 1);
      std::cout << GetParam() << ": " << info.streamed_layers << " streamed layers, pinning " << info.pinning << "\n";
      for (int pass = 0; pass < 2; ++pass) {
        auto cache = model_->MakeCache(64, 4, DType::kF32);
        SequenceState seq;
        model_->InitSequence(seq);
        const std::vector<float> got = GpuPrefill(**backend, prompt, *cache, seq, vocab_, model_->layers.size());
        ASSERT_EQ(got.size(), want.size());
        EXPECT_EQ(got, want) << "pass " << pass << ": rel L2 " << RelL2(got.data(), want.data(), got.size());
      }
    }
  }
}

// A copy of fixture `arch` in `dir` whose routed experts hold exactly what their
// `format` codes stand for (quantized as the cache quantizes them, group 128,
// then decoded, in F32): the CPU model of that copy is the exact reference for
// the GPU running the quantized experts.
void WriteDequantizedCopy(const std::string& arch, quant::QuantFormat format, const std::string& dir) {
  std::filesystem::create_directories(dir);
  for (const char* f : {"config.json", "generation_config.json"}) {
    if (std::filesystem::exists(FixtureDir(arch) + "/" + f)) {
      std::filesystem::copy_file(FixtureDir(arch) + "/" + f, dir + "/" + f,
                                 std::filesystem::copy_options::overwrite_existing);
    }
  }
  auto file = SafetensorsFile::Open(FixtureDir(arch) + "/model.safetensors");
  ASSERT_TRUE(file.ok()) << file.status();
  const std::regex routed(R"(.*\.mlp\.experts\.\d+\.(gate|up|down)_proj\.weight)");
  std::vector<std::vector<float>> keep;
  keep.reserve((*file)->tensors().size());
  std::vector<std::pair<std::string, TensorView>> out;
  int replaced = 0;
  for (const TensorInfo& info : (*file)->tensors()) {
    TensorView v = (*file)->View(info);
    if (std::regex_match(info.name, routed)) {
      auto q = quant::QuantizeMatrix(v, format, 128, info.name);
      ASSERT_TRUE(q.ok()) << q.status();
      keep.push_back(quant::DequantizeMatrix(*q));
      v = TensorView{DType::kF32, v.shape, reinterpret_cast<const std::byte*>(keep.back().data())};
      ++replaced;
    }
    out.emplace_back(info.name, v);
  }
  ASSERT_GT(replaced, 0);
  ASSERT_TRUE(WriteSafetensors(dir + "/model.safetensors", out).ok());
}

// INT4 / INT8 routed experts from the conversion cache (the files a decode
// worker maps) run on the card, dequantized before their GEMMs: in the fp32
// mode the logits equal, to fp32 rounding, the CPU model of a checkpoint whose
// experts are those codes decoded -- resident or streamed alike; BF16 mode stays
// within BF16 noise of that.
TEST_P(CudaModelTest, QuantizedExpertsFromTheCacheRunOnTheGpu) {
  const std::vector<int32_t> prompt = ref_["long_prompt_ids"].get<std::vector<int32_t>>();
  const int64_t n = static_cast<int64_t>(prompt.size());
  const std::string root = ::testing::TempDir() + "/krasis_gpu_quant_" + GetParam();
  for (ExpertFormat format : {ExpertFormat::kInt4, ExpertFormat::kInt8}) {
    SCOPED_TRACE(ExpertFormatName(format));
    const std::string copy = root + "/dequantized_" + std::string(ExpertFormatName(format));
    WriteDequantizedCopy(GetParam(), ToQuantFormat(format), copy);
    auto reference = LoadModel(copy);
    ASSERT_TRUE(reference.ok()) << reference.status();
    auto ref_cache = (*reference)->MakeCache(64, 4, DType::kF32);
    SequenceState ref_seq;
    (*reference)->InitSequence(ref_seq);
    BatchItem item{&ref_seq, prompt, true};
    std::vector<std::vector<float>> ref_logits;
    ASSERT_TRUE((*reference)->Forward(std::span(&item, 1), *ref_cache, &ref_logits).ok());
    const std::vector<float>& want = ref_logits[0];

    auto options = CachedExpertOptions(FixtureDir(GetParam()), root + "/cache", format, 128);
    ASSERT_TRUE(options.ok()) << options.status();
    ASSERT_TRUE(SetExpertFormat(*model_, *options).ok());
    CudaBackendOptions gpu_options;
    gpu_options.precision = CudaBackendOptions::Precision::kF32;
    CudaBackendInfo info;
    const std::vector<float> gpu = RunGpu(*model_, prompt, gpu_options, &info);
    EXPECT_EQ(info.expert_format, std::string(ExpertFormatName(format)));
    ASSERT_EQ(gpu.size(), want.size());
    const double err = RelL2(gpu.data(), want.data(), want.size());
    std::cout << GetParam() << " " << ExpertFormatName(format)
              << " experts on the GPU vs the CPU model of their decoded values: rel L2 " << err << "\n";
    EXPECT_LT(err, 1e-4);
    for (int64_t p = 0; p < n; ++p) EXPECT_EQ(Argmax(&gpu[p * vocab_], vocab_), Argmax(&want[p * vocab_], vocab_)) << p;
    gpu_options.max_resident_expert_layers = 0;
    const std::vector<float> streamed = RunGpu(*model_, prompt, gpu_options, &info);
    EXPECT_GT(info.streamed_layers, 0);
    EXPECT_EQ(streamed, gpu);
    // BF16 mode (what prefill runs): within BF16 noise of the fp32 mode.
    const std::vector<float> bf16_mode = RunGpu(*model_, prompt, {}, &info);
    EXPECT_LT(RelL2(bf16_mode.data(), gpu.data(), gpu.size()), 0.15);
  }
}

// The grouped expert GEMM (all of a layer's experts in one launch per matrix,
// quantized weights dequantized inside it) computes what one cuBLAS GEMM per
// expert does after LaunchDequantTiled: the same BF16 products, summed in
// another order, for BF16, INT8 and INT4 experts, resident and streamed.
TEST_P(CudaModelTest, GroupedExpertGemmComputesWhatPerExpertGemmsDo) {
  const std::vector<int32_t> prompt = ref_["long_prompt_ids"].get<std::vector<int32_t>>();
  const int64_t n = static_cast<int64_t>(prompt.size());
  const std::string root = ::testing::TempDir() + "/krasis_gpu_grouped_" + GetParam();
  for (ExpertFormat format : {ExpertFormat::kBf16, ExpertFormat::kInt8, ExpertFormat::kInt4}) {
    SCOPED_TRACE(ExpertFormatName(format));
    if (format != ExpertFormat::kBf16) {
      auto options = CachedExpertOptions(FixtureDir(GetParam()), root + "/cache", format, 128);
      ASSERT_TRUE(options.ok()) << options.status();
      ASSERT_TRUE(SetExpertFormat(*model_, *options).ok());
    }
    for (auto [resident, parts] : {std::pair{-1, 0}, {0, 0}, {0, 3}}) {
      CudaBackendOptions options;
      options.max_resident_expert_layers = resident;
      options.expert_parts = parts;  // streamed layers in 3 parts: each part's experts one grouped launch
      options.grouped_experts = false;
      CudaBackendInfo info;
      const std::vector<float> want = RunGpu(*model_, prompt, options, &info);
      EXPECT_EQ(info.grouped_layers, 0);
      options.grouped_experts = true;
      const std::vector<float> got = RunGpu(*model_, prompt, options, &info);
      ASSERT_GT(info.moe_layers, 0);
      EXPECT_EQ(info.grouped_layers, info.moe_layers);
      EXPECT_EQ(info.expert_format, std::string(ExpertFormatName(format)));
      ASSERT_EQ(got.size(), want.size());
      int same = 0;
      for (int64_t p = 0; p < n; ++p) same += Argmax(&got[p * vocab_], vocab_) == Argmax(&want[p * vocab_], vocab_);
      const double err = RelL2(got.data(), want.data(), want.size());
      std::cout << GetParam() << " " << ExpertFormatName(format) << (resident == 0 ? " streamed" : " resident")
                << (parts > 0 ? " in parts" : "")
                << ": grouped vs per-expert GEMMs rel L2 " << err << ", argmax equal at " << same << "/" << n << "\n";
      // Only the fp32 summation order differs; BF16 rounding of the activations can amplify it a little.
      EXPECT_LT(err, 1e-2);
      EXPECT_GE(same, static_cast<int>(n) - 2);
    }
  }
}

// Two cards (NCCL) compute what one card does, to fp32 rounding, split either
// way: by experts (partial outputs summed: the sum over a token's experts is
// split in two and added in another order) and by layers (a pipeline of
// 5-token micro-chunks, so every Forward of GpuPrefill's 7, 13 and the rest
// crosses between the cards several times). Every position's logits and
// argmax, every layer's KV rows and linear-attention state, with the experts
// resident and streamed; each layer reported done once per Forward; then a
// greedy continuation decoded on the CPU from the two cards' KV equals the
// all-CPU one. Needs two GPUs (skipped, saying so, with fewer).
TEST_P(CudaModelTest, TwoCardsComputeWhatOneDoes) {
  std::string none;
  auto gpus = ListGpus(&none);
  ASSERT_TRUE(gpus.ok()) << gpus.status();
  if (gpus->size() < 2) GTEST_SKIP() << "needs two CUDA GPUs, this host has " << gpus->size() << ": not run";
  const std::vector<int32_t> prompt = ref_["long_prompt_ids"].get<std::vector<int32_t>>();
  const int64_t n = static_cast<int64_t>(prompt.size());
  for (auto [split, resident] : {std::pair{CudaBackendOptions::Split::kExperts, -1}, {CudaBackendOptions::Split::kExperts, 0},
                                  {CudaBackendOptions::Split::kLayers, -1}, {CudaBackendOptions::Split::kLayers, 0}}) {
    const bool by_layers = split == CudaBackendOptions::Split::kLayers;
    SCOPED_TRACE(std::string(by_layers ? "split by layers, " : "split by experts, ") +
                 (resident < 0 ? "experts resident" : "experts streamed"));
    CudaBackendOptions options;
    options.precision = CudaBackendOptions::Precision::kF32;
    options.max_resident_expert_layers = resident;
    auto one = MakeCudaPrefillBackend(*model_, options);
    ASSERT_TRUE(one.ok()) << one.status();
    CudaBackendInfo one_info;
    auto one_again = MakeCudaPrefillBackend(*model_, options, &one_info);
    ASSERT_TRUE(one_again.ok()) << one_again.status();
    options.devices = {0, 1};
    options.split = split;
    options.micro_chunk_tokens = 5;
    CudaBackendInfo info;
    auto two = MakeCudaPrefillBackend(*model_, options, &info);
    ASSERT_TRUE(two.ok()) << two.status();
    EXPECT_EQ(info.cards, 2);
    EXPECT_EQ(info.split, by_layers ? "layers" : "experts");
    EXPECT_EQ(info.moe_layers, one_info.moe_layers);  // split by layers: summed over the cards
    if (resident == 0) {
      EXPECT_EQ(info.streamed_layers, info.moe_layers);
    }
    auto cache1 = model_->MakeCache(64, 4, DType::kF32), cache2 = model_->MakeCache(64, 4, DType::kF32);
    SequenceState seq1, seq2;
    model_->InitSequence(seq1);
    model_->InitSequence(seq2);
    const std::vector<float> want = GpuPrefill(**one, prompt, *cache1, seq1, vocab_, model_->layers.size());
    const std::vector<float> got = GpuPrefill(**two, prompt, *cache2, seq2, vocab_, model_->layers.size());
    ASSERT_EQ(got.size(), want.size());
    const double err = RelL2(got.data(), want.data(), got.size());
    std::cout << GetParam() << " two cards vs one: logits rel L2 " << err << "\n";
    EXPECT_LT(err, 1e-5);
    for (int64_t p = 0; p < n; ++p) EXPECT_EQ(Argmax(&got[p * vocab_], vocab_), Argmax(&want[p * vocab_], vocab_)) << p;
    ExpectSameCache(*cache1, seq1, *cache2, seq2, n, 1e-5);
    // Decode on the CPU from the two cards' cache and state: the all-CPU continuation.
    auto cpu_cache = model_->MakeCache(64, 4, DType::kF32);
    SequenceState cpu_seq;
    std::vector<float> cpu_logits = CpuPrefill(prompt, *cpu_cache, cpu_seq);
    std::vector<float> a(cpu_logits.end() - vocab_, cpu_logits.end()), b(got.end() - vocab_, got.end());
    for (int step = 0; step < 8; ++step) {
      const int32_t ta = Argmax(a.data(), vocab_), tb = Argmax(b.data(), vocab_);
      ASSERT_EQ(ta, tb) << "step " << step;
      for (auto [m, seq, cache, out] : {std::tuple{model_.get(), &cpu_seq, cpu_cache.get(), &a},
                                        std::tuple{model_.get(), &seq2, cache2.get(), &b}}) {
        BatchItem item{seq, {ta}, false};
        std::vector<std::vector<float>> next;
        ASSERT_TRUE(m->Forward(std::span(&item, 1), *cache, &next).ok());
        *out = next[0];
      }
    }
  }
}

// The pipeline's micro-chunks: the option's size when set; with experts
// streaming, the planned chunk; else 2048 (at most the planned chunk); the
// last one what remains.
TEST(PipelineMicroChunksTest, OfTheOptionThePlannedChunkOr2048) {
  using V = std::vector<int64_t>;
  EXPECT_EQ(PipelineMicroChunks(16384, 4096, 0, false), V(8, 2048));
  EXPECT_EQ(PipelineMicroChunks(5000, 4096, 0, false), (V{2048, 2048, 904}));
  EXPECT_EQ(PipelineMicroChunks(512, 4096, 0, false), (V{512}));
  EXPECT_EQ(PipelineMicroChunks(4096, 1024, 0, false), V(4, 1024));  // the plan's chunk caps them
  EXPECT_EQ(PipelineMicroChunks(16384, 4096, 0, true), V(4, 4096));
  EXPECT_EQ(PipelineMicroChunks(5000, 4096, 0, true), (V{4096, 904}));
  EXPECT_EQ(PipelineMicroChunks(12, 4096, 5, false), (V{5, 5, 2}));
  EXPECT_EQ(PipelineMicroChunks(12, 4096, 5, true), (V{5, 5, 2}));
  EXPECT_TRUE(PipelineMicroChunks(0, 4096, 0, false).empty());
  for (int64_t n : {1, 255, 2048, 2049, 70000}) {
    const V sizes = PipelineMicroChunks(n, 4096, 0, false);
    EXPECT_EQ(std::accumulate(sizes.begin(), sizes.end(), int64_t{0}), n) << n;
    for (int64_t size : sizes) EXPECT_TRUE(size > 0 && size <= 2048) << n;
  }
}

INSTANTIATE_TEST_SUITE_P(Architectures, CudaModelTest,
                         ::testing::Values("qwen3_moe", "qwen3_next", "glm4_moe", "deepseek_v2", "deepseek_v3"),
                         [](const auto& info) { return info.param; });

}  // namespace
}  // namespace krasis
