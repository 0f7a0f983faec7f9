// GPU test (ctest label gpu): expert weights turned from their stored form into
// the GEMM's input form on the card (LaunchMaterializeDense, LaunchDequantTiled)
// against the CPU's own decoding of the same bytes, on fresh random matrices.
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <cmath>
#include <random>
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
  // group sizes 32..128, both formats.
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
        if (got[i] != want[i] || got16[i] != FloatToBF16(want[i])) ++bad;
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

}  // namespace
}  // namespace krasis
