// GPU test (ctest label gpu): the widening kernels against the CPU reference in
// common/dtype.h on fresh random bit patterns. Without a GPU every test here is
// skipped with a message that says so.
#include "common/cuda/convert_kernels.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "common/cuda/cuda_check.h"
#include "common/cuda/device.h"
#include "tests/gpu/gpu_test_util.h"

namespace krasis {
namespace {

class GpuTest : public ::testing::Test {
 protected:
  void SetUp() override { KRASIS_SKIP_WITHOUT_GPU(); }
};

template <typename T>
void CheckWiden(DType dtype, size_t n) {
  std::mt19937_64 rng(std::random_device{}());
  std::vector<T> host(n);
  for (auto& v : host) v = static_cast<T>(rng());
  void* d_in = nullptr;
  float* d_out = nullptr;
  ASSERT_EQ(cudaMalloc(&d_in, n * sizeof(T)), cudaSuccess);
  ASSERT_EQ(cudaMalloc(&d_out, n * sizeof(float)), cudaSuccess);
  ASSERT_EQ(cudaMemcpy(d_in, host.data(), n * sizeof(T), cudaMemcpyHostToDevice), cudaSuccess);
  cudaStream_t stream;
  ASSERT_EQ(cudaStreamCreate(&stream), cudaSuccess);
  ASSERT_TRUE(LaunchWidenToFloat(dtype, d_in, d_out, n, stream).ok());
  ASSERT_EQ(cudaStreamSynchronize(stream), cudaSuccess);
  std::vector<float> gpu(n), ref(n);
  ASSERT_EQ(cudaMemcpy(gpu.data(), d_out, n * sizeof(float), cudaMemcpyDeviceToHost), cudaSuccess);
  ConvertToFloat(dtype, host.data(), ref.data(), n);
  size_t nonzero = 0;
  for (size_t i = 0; i < n; ++i) {
    if (std::isnan(ref[i])) {
      ASSERT_TRUE(std::isnan(gpu[i])) << i;
    } else {
      // Widening is exact: compare bit for bit.
      ASSERT_EQ(std::memcmp(&gpu[i], &ref[i], sizeof(float)), 0) << i << ": " << gpu[i] << " vs " << ref[i];
    }
    nonzero += ref[i] != 0.0f;
  }
  EXPECT_GT(nonzero, n / 2);
  cudaStreamDestroy(stream);
  cudaFree(d_in);
  cudaFree(d_out);
}

TEST_F(GpuTest, WidenBF16MatchesReference) { CheckWiden<uint16_t>(DType::kBF16, 1 << 20); }
TEST_F(GpuTest, WidenF16MatchesReference) { CheckWiden<uint16_t>(DType::kF16, 1 << 20); }
TEST_F(GpuTest, WidenF8MatchesReference) { CheckWiden<uint8_t>(DType::kF8E4M3, 1 << 20); }

TEST_F(GpuTest, RejectsUnsupportedDType) {
  EXPECT_EQ(LaunchWidenToFloat(DType::kI32, nullptr, nullptr, 4, nullptr).code(),
            absl::StatusCode::kInvalidArgument);
}

TEST_F(GpuTest, ListsTheDevice) {
  auto gpus = ListGpus();
  ASSERT_TRUE(gpus.ok());
  for (const auto& g : *gpus) {
    EXPECT_FALSE(g.name.empty());
    EXPECT_GT(g.total_memory_bytes, 1ull << 30);
    EXPECT_GE(g.compute_major, 7);
  }
}

}  // namespace
}  // namespace krasis
