// GPU test (ctest label gpu): expert weights turned from their stored form into
// the GEMM's input form on the card (LaunchMaterializeDense, LaunchDequantTiled)
// against the CPU's own decoding of the same bytes, and the grouped expert GEMM
// (LaunchGroupedGemm) against a double-precision product of the same BF16
// values, on fresh random matrices.
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <optional>
#include <random>
#include <tuple>
#include <vector>

#include "common/cuda/prefill_kernels.h"
#include "common/dtype.h"
#include "common/quant/quantize.h"
#include "tests/gpu/gpu_test_util.h"

namespace krasis {
namespace {

class WeightKernelsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    KRASIS_SKIP_WITHOUT_GPU();
    seed_ = std::random_device{}();
    RecordProperty("seed", std::to_string(seed_));
  }
  std::vector<float> Random(size_t n) {
    std::mt19937 rng(++seed_);
    std::normal_distribution<float> dist(0.0f, 0.05f);
    std::vector<float> v(n);
    for (float& x : v) x = dist(rng);
    return v;
  }
  // Copies bytes to the card (freed at the end of the test).
  template <typename T>
  T* Upload(const T* host, size_t count) {
    void* p = nullptr;
    EXPECT_EQ(cudaMalloc(&p, std::max<size_t>(count, 1) * sizeof(T)), cudaSuccess);
    EXPECT_EQ(cudaMemcpy(p, host, count * sizeof(T), cudaMemcpyHostToDevice), cudaSuccess);
    owned_.push_back(p);
    return static_cast<T*>(p);
  }
  void* Alloc(size_t bytes) { return Upload(std::vector<uint8_t>(bytes).data(), bytes); }
  template <typename T>
  std::vector<T> Download(const void* p, size_t count) {
    std::vector<T> h(count);
    EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);
    EXPECT_EQ(cudaMemcpy(h.data(), p, count * sizeof(T), cudaMemcpyDeviceToHost), cudaSuccess);
    return h;
  }
  void TearDown() override {
    for (void* p : owned_) cudaFree(p);
  }
  uint32_t seed_ = 0;
  std::vector<void*> owned_;
};

TEST_F(WeightKernelsTest, DequantTiledMatchesTheCpuDecodingBitForBit) {
  // Rows not a multiple of the 16-row tile (padding rows must not be written),
  // group sizes 32..128, both formats. Float output is the CPU's decoding bit
  // for bit; INT4 to BF16 rounds the scale to BF16 first (as the grouped GEMM).
  for (quant::QuantFormat format : {quant::QuantFormat::kInt4, quant::QuantFormat::kInt8}) {
    for (auto [rows, cols, group] : {std::tuple<int64_t, int64_t, int64_t>{40, 256, 128}, {67, 192, 64}, {16, 96, 32}}) {
      SCOPED_TRACE(testing::Message() << quant::QuantFormatName(format) << " " << rows << "x" << cols << " g" << group);
      const std::vector<float> w = Random(static_cast<size_t>(rows * cols));
      auto q = quant::QuantizeMatrix(w.data(), rows, cols, format, group);
      ASSERT_TRUE(q.ok()) << q.status();
      ASSERT_EQ(q->group_size, group);
      const std::vector<float> want = quant::DequantizeMatrix(*q);
      const uint8_t* data = Upload(q->data, q->data_bytes());
      const float* scales = Upload(q->scales, q->scale_count());
      const size_t count = static_cast<size_t>(rows * cols);
      // Guard elements past the end stay untouched.
      void* f32 = Alloc((count + 64) * sizeof(float));
      void* bf16 = Alloc((count + 64) * sizeof(uint16_t));
      ASSERT_TRUE(cuda::LaunchDequantTiled(format == quant::QuantFormat::kInt4, data, scales, rows, cols, group, true,
                                           f32, nullptr)
                      .ok());
      ASSERT_TRUE(cuda::LaunchDequantTiled(format == quant::QuantFormat::kInt4, data, scales, rows, cols, group, false,
                                           bf16, nullptr)
                      .ok());
      const std::vector<float> got = Download<float>(f32, count + 64);
      const std::vector<uint16_t> got16 = Download<uint16_t>(bf16, count + 64);
      int bad = 0;
      for (size_t i = 0; i < count; ++i) {
        // BF16 from INT4: the code times the scale rounded to BF16, rounded once (the grouped GEMM's weights).
        const int64_t r = static_cast<int64_t>(i) / cols, c = static_cast<int64_t>(i) % cols;
        const float want16 = format == quant::QuantFormat::kInt4
                                 ? float(q->Code(r, c)) * BF16ToFloat(FloatToBF16(q->Scale(r, c)))
                                 : want[i];
        if (got[i] != want[i] || got16[i] != FloatToBF16(want16)) ++bad;
      }
      EXPECT_EQ(bad, 0);
      for (size_t i = count; i < count + 64; ++i) {
        EXPECT_EQ(got[i], 0.0f);
        EXPECT_EQ(got16[i], 0);
      }
      // Non-trivial: the decoded matrix is close to the original.
      double err = 0, norm = 0;
      for (size_t i = 0; i < count; ++i) err += (got[i] - w[i]) * (got[i] - w[i]), norm += w[i] * w[i];
      EXPECT_LT(std::sqrt(err / norm), format == quant::QuantFormat::kInt4 ? 0.12 : 0.01);
    }
  }
}

TEST_F(WeightKernelsTest, DequantTiledRejectsAGroupThatDoesNotDivideTheColumns) {
  EXPECT_FALSE(cuda::LaunchDequantTiled(true, nullptr, nullptr, 16, 100, 64, true, nullptr, nullptr).ok());
}

TEST_F(WeightKernelsTest, MaterializeDenseConvertsEveryStoredTypeLikeTheHost) {
  const size_t n = 3001;
  const std::vector<float> x = Random(n);
  for (DType stored : {DType::kBF16, DType::kF16, DType::kF32}) {
    SCOPED_TRACE(DTypeName(stored));
    std::vector<uint8_t> bytes(n * DTypeSize(stored));
    ConvertFromFloat(stored, x.data(), bytes.data(), n);
    std::vector<float> want(n);
    ConvertToFloat(stored, bytes.data(), want.data(), n);
    const uint8_t* src = Upload(bytes.data(), bytes.size());
    void* f32 = Alloc(n * sizeof(float));
    void* bf16 = Alloc(n * sizeof(uint16_t));
    ASSERT_TRUE(cuda::LaunchMaterializeDense(stored, src, static_cast<int64_t>(n), true, f32, nullptr).ok());
    ASSERT_TRUE(cuda::LaunchMaterializeDense(stored, src, static_cast<int64_t>(n), false, bf16, nullptr).ok());
    const std::vector<float> got = Download<float>(f32, n);
    const std::vector<uint16_t> got16 = Download<uint16_t>(bf16, n);
    for (size_t i = 0; i < n; ++i) {
      ASSERT_EQ(got[i], want[i]) << i;
      ASSERT_EQ(got16[i], FloatToBF16(want[i])) << i;
    }
  }
  EXPECT_FALSE(cuda::LaunchMaterializeDense(DType::kI32, nullptr, 4, true, nullptr, nullptr).ok());
}


// One expert's two stacked matrices ([n_split, k] and [n - n_split, k]) as the
// GEMM reads them, and the BF16 values it must multiply by.
struct GemmExpert {
  std::vector<uint16_t> bf16[2];
  std::optional<quant::QuantizedMatrix> q[2];
  std::vector<float> value;  // [n, k]: what the product must use
};

TEST_F(WeightKernelsTest, GroupedGemmMatchesEveryExpertsProduct) {
  // Expert row counts around the 128-row block (0, 1, 127, 128, 129, 300),
  // output widths that are not a multiple of the 128-column block, a split
  // inside a block, every weight form, both k steps of the kernel (a step of
  // 64 where k and the group allow it; refused otherwise), both warp tiles,
  // from one k step to six (INT4 dequantizes a step ahead of its multiply).
  const std::vector<int32_t> counts = {0, 1, 127, 128, 129, 300, 0, 37};
  for (int quant : {0, 1, 2}) for (int warp_cols : {32, 64}) {
    for (auto [n, k, n_split, group, step] : {std::tuple<int64_t, int64_t, int64_t, int64_t, int>{200, 256, 96, 64, 32},
                                              {200, 256, 96, 64, 64},
                                              {160, 96, 160, 32, 32},
                                              {160, 96, 160, 32, 64},
                                              {80, 128, 0, 128, 32},
                                              {80, 128, 0, 128, 64},
                                              {144, 384, 64, 128, 64},
                                              {256, 128, 128, 64, 64},
                                              {256, 128, 128, 32, 32},
                                              {96, 64, 32, 64, 64},     // one step: the pipeline's edges
                                              {96, 64, 32, 32, 32}}) {
      SCOPED_TRACE(testing::Message() << "quant " << quant << " n " << n << " k " << k << " split " << n_split
                                      << " step " << step << " warp cols " << warp_cols);
      const int64_t experts = static_cast<int64_t>(counts.size());
      std::vector<int32_t> offsets(counts.size());
      int64_t rows = 0;
      for (size_t e = 0; e < counts.size(); ++e) offsets[e] = static_cast<int32_t>(rows), rows += counts[e];
      const int64_t ldx = k + 8, ldy = n + 5;
      std::vector<float> xf = Random(static_cast<size_t>(rows * ldx));
      std::vector<uint16_t> x(xf.size());
      for (size_t i = 0; i < xf.size(); ++i) x[i] = FloatToBF16(xf[i]), xf[i] = BF16ToFloat(x[i]);
      std::vector<GemmExpert> ex(counts.size());
      std::vector<cuda::ExpertGemmWeights> w(counts.size());
      for (size_t e = 0; e < counts.size(); ++e) {
        ex[e].value.assign(static_cast<size_t>(n * k), 0.0f);
        for (int m = 0; m < 2; ++m) {
          const int64_t r0 = m == 0 ? 0 : n_split, mrows = m == 0 ? n_split : n - n_split;
          if (mrows == 0) continue;
          std::vector<float> wm = Random(static_cast<size_t>(mrows * k));
          std::vector<float> use(wm.size());
          if (quant == 0) {
            ex[e].bf16[m].resize(wm.size());
            for (size_t i = 0; i < wm.size(); ++i) ex[e].bf16[m][i] = FloatToBF16(wm[i]), use[i] = BF16ToFloat(ex[e].bf16[m][i]);
            // Odd experts' rows start 8 bytes off a 16-byte boundary, as a safetensors file's may.
            const size_t pad = e % 2 == 1 ? 4 : 0;
            ex[e].bf16[m].insert(ex[e].bf16[m].begin(), pad, 0);
            (m == 0 ? w[e].w0 : w[e].w1) = Upload(ex[e].bf16[m].data(), ex[e].bf16[m].size()) + pad;
          } else {
            auto q = quant::QuantizeMatrix(wm.data(), mrows, k, static_cast<quant::QuantFormat>(quant), group);
            ASSERT_TRUE(q.ok()) << q.status();
            ASSERT_EQ(q->group_size, group);
            const std::vector<float> deq = quant::DequantizeMatrix(*q);
            for (size_t i = 0; i < wm.size(); ++i) use[i] = BF16ToFloat(FloatToBF16(deq[i]));
            if (quant == 2) {  // INT4 multiplies in BF16: the code times the scale rounded to BF16, rounded once
              for (int64_t r = 0; r < mrows; ++r) {
                for (int64_t c = 0; c < k; ++c) {
                  const float scale = BF16ToFloat(FloatToBF16(q->Scale(r, c)));
                  use[static_cast<size_t>(r * k + c)] = BF16ToFloat(FloatToBF16(float(q->Code(r, c)) * scale));
                }
              }
            }
            (m == 0 ? w[e].w0 : w[e].w1) = Upload(q->data, q->data_bytes());
            (m == 0 ? w[e].s0 : w[e].s1) = Upload(q->scales, q->scale_count());
            ex[e].q[m] = std::move(*q);
          }
          std::copy(use.begin(), use.end(), ex[e].value.begin() + r0 * k);
        }
      }
      const float guard = 12345.0f;
      std::vector<float> y0(static_cast<size_t>(rows * ldy), guard);
      float* y = Upload(y0.data(), y0.size());
      cuda::GroupedGemmShape shape;
      shape.n = n, shape.k = k, shape.n_split = n_split, shape.quant = quant, shape.group = group;
      shape.x = Upload(x.data(), x.size()), shape.ldx = ldx, shape.y = y, shape.ldy = ldy;
      shape.k_step = step;
      shape.warp_cols = warp_cols;
      if (k % step != 0 || (quant != 0 && group % step != 0)) {
        EXPECT_FALSE(cuda::GroupedGemmTakes(shape, w.data(), 0, experts));
        shape.k_step = 0;  // the launch picks the step that fits
        EXPECT_EQ(cuda::GroupedGemmStep(shape), 32);
        continue;
      }
      ASSERT_TRUE(cuda::GroupedGemmTakes(shape, w.data(), 0, experts));
      if (step == 64) {
        shape.k_step = 0;
        EXPECT_EQ(cuda::GroupedGemmStep(shape), 64);  // the default where it fits
      }
      const size_t table_bytes = cuda::GroupedGemmTableBytes(experts, rows);
      void* table = Alloc(table_bytes);
      const absl::Status st =
          cuda::LaunchGroupedGemm(shape, counts.data(), offsets.data(), w.data(), 0, experts, table, table_bytes, nullptr);
      ASSERT_TRUE(st.ok()) << st;
      const std::vector<float> got = Download<float>(y, y0.size());
      double err = 0, norm = 0;
      int nan = 0, guard_hit = 0;
      for (size_t e = 0; e < counts.size(); ++e) {
        for (int32_t r = offsets[e]; r < offsets[e] + counts[e]; ++r) {
          for (int64_t c = 0; c < ldy; ++c) {
            const float g = got[static_cast<size_t>(r * ldy + c)];
            if (c >= n) {
              guard_hit += g != guard;  // columns past n are not written
              continue;
            }
            double want = 0;
            for (int64_t i = 0; i < k; ++i) {
              want += double(xf[static_cast<size_t>(r * ldx + i)]) * ex[e].value[static_cast<size_t>(c * k + i)];
            }
            nan += std::isnan(g);
            err += (g - want) * (g - want), norm += want * want;
          }
        }
      }
      EXPECT_EQ(nan, 0);
      EXPECT_EQ(guard_hit, 0);
      EXPECT_GT(norm, 0.0);
      EXPECT_LT(std::sqrt(err / norm), 1e-5);  // same BF16 inputs, fp32 accumulation

      // The same product planned on the card (LaunchGroupedGemmPlan from
      // device counts), in two launches as a streamed layer's parts (experts
      // [0, 3) and [3, 8)), reading x through a row index from a token-major
      // copy: the same blocks, so bit for bit what the launch above wrote.
      std::vector<int32_t> token(static_cast<size_t>(rows));
      for (int64_t r = 0; r < rows; ++r) token[r] = static_cast<int32_t>(r);
      std::shuffle(token.begin(), token.end(), std::mt19937(seed_));
      std::vector<uint16_t> x_tokens(x.size());
      for (int64_t r = 0; r < rows; ++r) {
        std::copy_n(x.begin() + r * ldx, ldx, x_tokens.begin() + token[r] * ldx);
      }
      void* plan = Alloc(cuda::GroupedGemmPlanBytes(experts, rows));
      ASSERT_TRUE(cuda::LaunchGroupedGemmPlan(Upload(counts.data(), counts.size()), experts, plan, nullptr, nullptr).ok());
      cuda::GroupedGemmShape planned = shape;
      planned.x = Upload(x_tokens.data(), x_tokens.size());
      planned.y = Upload(y0.data(), y0.size());
      const bool aligned16 = cuda::GroupedGemmWeightsAligned16(w.data(), 0, experts);
      for (auto [first, end] : {std::pair<int64_t, int64_t>{0, 3}, {3, experts}}) {
        const absl::Status ps = cuda::LaunchGroupedGemmPlanned(planned, plan, experts, rows, Upload(w.data(), w.size()),
                                                               aligned16, Upload(token.data(), token.size()), first,
                                                               end, nullptr);
        ASSERT_TRUE(ps.ok()) << ps;
      }
      const std::vector<float> got_planned = Download<float>(planned.y, y0.size());
      size_t differ = 0;
      for (size_t i = 0; i < got.size(); ++i) differ += !(got_planned[i] == got[i]);
      EXPECT_EQ(differ, 0u);

      // Gate and up with SiLU fused into the epilogue (where n = 2 n_split, a
      // multiple of 64): silu(gate) * up in BF16 from the same accumulators,
      // so what the float outputs above give (the host's expf may differ from
      // the card's in the last bit, hence one BF16 step at most), through both
      // launches.
      cuda::GroupedGemmShape fused = shape;
      const int64_t ld_act = n_split + 2;
      fused.silu_out = static_cast<uint16_t*>(Alloc(static_cast<size_t>(rows * ld_act) * 2));
      fused.ld_silu = ld_act;
      const bool fusable = n == 2 * n_split && n_split % 64 == 0;
      ASSERT_EQ(cuda::GroupedGemmTakes(fused, w.data(), 0, experts), fusable);
      if (!fusable) continue;
      for (bool on_card : {false, true}) {
        SCOPED_TRACE(on_card ? "planned on the card" : "planned on the host");
        ASSERT_EQ(cudaMemset(fused.silu_out, 0xFF, static_cast<size_t>(rows * ld_act) * 2), cudaSuccess);
        const absl::Status fs =
            on_card ? cuda::LaunchGroupedGemmPlanned(fused, plan, experts, rows, Upload(w.data(), w.size()), aligned16,
                                                     nullptr, 0, experts, nullptr)
                    : cuda::LaunchGroupedGemm(fused, counts.data(), offsets.data(), w.data(), 0, experts, table,
                                              table_bytes, nullptr);
        ASSERT_TRUE(fs.ok()) << fs;
        const std::vector<uint16_t> act = Download<uint16_t>(fused.silu_out, static_cast<size_t>(rows * ld_act));
        int far = 0, exact = 0, pad_hit = 0;
        for (int64_t r = 0; r < rows; ++r) {
          for (int64_t c = 0; c < ld_act; ++c) {
            const uint16_t a = act[static_cast<size_t>(r * ld_act + c)];
            if (c >= n_split) {
              pad_hit += a != 0xFFFF;
              continue;
            }
            const float g = got[static_cast<size_t>(r * ldy + c)], u = got[static_cast<size_t>(r * ldy + n_split + c)];
            const uint16_t want = FloatToBF16(g / (1.0f + std::exp(-g)) * u);
            exact += a == want;
            far += std::abs(int(a) - int(want)) > 1;
          }
        }
        EXPECT_EQ(far, 0);
        EXPECT_EQ(pad_hit, 0);
        EXPECT_GT(exact, rows * n_split * 9 / 10);
      }
    }
  }
}

TEST_F(WeightKernelsTest, GroupedGemmRefusesWhatItCannotTake) {
  cuda::GroupedGemmShape shape;
  shape.n = 64, shape.k = 100, shape.n_split = 64, shape.ldx = 104, shape.ldy = 64;  // k not a multiple of 32
  cuda::ExpertGemmWeights w;
  EXPECT_FALSE(cuda::GroupedGemmTakes(shape, &w, 0, 1));
  const int32_t count = 4, offset = 0;
  EXPECT_FALSE(cuda::LaunchGroupedGemm(shape, &count, &offset, &w, 0, 1, nullptr, 0, nullptr).ok());
  // Block rows: 128 rows of one expert each.
  const std::vector<int32_t> counts = {0, 1, 128, 129, 300};
  EXPECT_EQ(cuda::GroupedGemmBlockRows(counts.data(), 0, 5), 0 + 1 + 1 + 2 + 3);
  EXPECT_EQ(cuda::GroupedGemmBlockRows(counts.data(), 3, 5), 2 + 3);
  shape.k = 128, shape.quant = 2, shape.group = 128, shape.n_split = 40;  // INT4 split inside a 16-row tile
  EXPECT_FALSE(cuda::GroupedGemmTakes(shape, &w, 0, 1));
  // Only the kernel's forms: k steps 32 and 64, warp tiles of 32 and 64 columns.
  shape.quant = 0, shape.n_split = 64, shape.ldx = 128;
  cuda::ExpertGemmWeights some;
  some.w0 = reinterpret_cast<const void*>(uintptr_t{4096});  // checked for alignment only
  ASSERT_TRUE(cuda::GroupedGemmTakes(shape, &some, 0, 1));
  shape.k_step = 48;
  EXPECT_FALSE(cuda::GroupedGemmTakes(shape, &some, 0, 1));
  shape.k_step = 64, shape.warp_cols = 16;
  EXPECT_FALSE(cuda::GroupedGemmTakes(shape, &some, 0, 1));
  shape.warp_cols = 64;
  EXPECT_TRUE(cuda::GroupedGemmTakes(shape, &some, 0, 1));
  // A planned launch refuses experts outside the plan (or a reversed range)
  // and a shape the kernel does not take, before it touches the plan.
  const uint8_t plan[64] = {};
  EXPECT_FALSE(cuda::LaunchGroupedGemmPlanned(shape, plan, 4, 16, &some, true, nullptr, 2, 5, nullptr).ok());
  EXPECT_FALSE(cuda::LaunchGroupedGemmPlanned(shape, plan, 4, 16, &some, true, nullptr, 3, 2, nullptr).ok());
  EXPECT_FALSE(cuda::LaunchGroupedGemmPlanned(shape, plan, 4, 16, &some, true, nullptr, -1, 2, nullptr).ok());
  shape.k_step = 48;
  EXPECT_FALSE(cuda::LaunchGroupedGemmPlanned(shape, plan, 4, 16, &some, true, nullptr, 0, 4, nullptr).ok());
  // The span combine needs the offsets.
  EXPECT_FALSE(
      cuda::LaunchCombineExpertSpan(nullptr, nullptr, nullptr, 4, 2, 8, nullptr, 0, 4, nullptr, nullptr).ok());
}

}  // namespace
}  // namespace krasis
