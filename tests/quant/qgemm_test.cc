// Quantized weights and kernels: the layout round trip, quantization error on
// Gaussian weights (INT8 < 1%, INT4 < 12% relative), and every kernel (scalar,
// AVX2, AVX-512 VNNI) against an independent reference on fresh random data --
// exact integer math over the decoded codes, and the float product of the
// dequantized weights -- for several shapes, batches and row-tile ranges.
#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "common/quant/qgemm.h"
#include "common/quant/quantize.h"

namespace krasis::quant {
namespace {

std::vector<float> Gaussian(size_t n, uint32_t seed, float sd = 1.0f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(0.0f, sd);
  std::vector<float> v(n);
  for (auto& x : v) x = d(rng);
  return v;
}

double RelError(const std::vector<float>& got, const std::vector<float>& want) {
  double num = 0, den = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    num += (double(got[i]) - want[i]) * (double(got[i]) - want[i]);
    den += double(want[i]) * want[i];
  }
  return std::sqrt(num / den);
}

// y = W x from the decoded codes and the quantized activations, in doubles.
std::vector<float> IntegerReference(const QuantizedMatrix& w, const QuantizedActivations& a) {
  std::vector<float> y(static_cast<size_t>(a.n * w.rows));
  for (int64_t t = 0; t < a.n; ++t) {
    for (int64_t r = 0; r < w.rows; ++r) {
      double sum = 0;
      for (int64_t g = 0; g < w.groups(); ++g) {
        int64_t acc = 0;
        for (int64_t k = g * w.group_size; k < (g + 1) * w.group_size; ++k) {
          acc += int64_t(w.Code(r, k)) * a.q[static_cast<size_t>(t * w.cols + k)];
        }
        sum += double(acc) * w.Scale(r, g * w.group_size) * a.scale[static_cast<size_t>(t * w.groups() + g)];
      }
      y[static_cast<size_t>(t * w.rows + r)] = static_cast<float>(sum);
    }
  }
  return y;
}

std::vector<float> FloatProduct(const std::vector<float>& w, int64_t rows, int64_t cols, const std::vector<float>& x,
                                int64_t n) {
  std::vector<float> y(static_cast<size_t>(n * rows));
  for (int64_t t = 0; t < n; ++t) {
    for (int64_t r = 0; r < rows; ++r) {
      double s = 0;
      for (int64_t k = 0; k < cols; ++k) s += double(w[r * cols + k]) * x[t * cols + k];
      y[t * rows + r] = static_cast<float>(s);
    }
  }
  return y;
}

std::vector<Isa> Isas() {
  std::vector<Isa> out;
  for (Isa isa : {Isa::kScalar, Isa::kAvx2, Isa::kAvx512Vnni, Isa::kAmx}) {
    if (IsaSupported(isa)) {
      out.push_back(isa);
    } else {
      std::printf("note: %s is not supported by this CPU; its kernel is not tested here\n",
                  std::string(IsaName(isa)).c_str());
    }
  }
  return out;
}

TEST(QuantizeTest, GroupSizes) {
  EXPECT_EQ(ChooseGroupSize(2048, 128), 128);
  EXPECT_EQ(ChooseGroupSize(1408, 128), 128);
  EXPECT_EQ(ChooseGroupSize(192, 128), 64);
  EXPECT_EQ(ChooseGroupSize(32, 128), 32);
  EXPECT_EQ(ChooseGroupSize(48, 128), 0);
  EXPECT_EQ(ChooseGroupSize(2048, 64), 64);
  auto bad = QuantizeMatrix(std::vector<float>(48).data(), 1, 48, QuantFormat::kInt8, 128, "blk.0.x");
  EXPECT_FALSE(bad.ok());
  EXPECT_NE(std::string(bad.status().message()).find("blk.0.x"), std::string::npos);
}

TEST(QuantizeTest, CodesRoundTripThroughTheLayout) {
  for (QuantFormat f : {QuantFormat::kInt8, QuantFormat::kInt4}) {
    const int64_t rows = 37, cols = 256;  // a padded last tile
    auto w = Gaussian(rows * cols, 7);
    auto m = QuantizeMatrix(w.data(), rows, cols, f, 128);
    ASSERT_TRUE(m.ok());
    EXPECT_EQ(m->tiles(), 3);
    EXPECT_EQ(m->data_bytes(), static_cast<size_t>(3 * 2 * (f == QuantFormat::kInt8 ? 16 * 128 : 8 * 128)));
    for (int64_t r = 0; r < rows; ++r) {
      for (int64_t g = 0; g < 2; ++g) {
        float amax = 0;
        for (int64_t k = g * 128; k < (g + 1) * 128; ++k) amax = std::max(amax, std::fabs(w[r * cols + k]));
        const float scale = m->Scale(r, g * 128);
        if (f == QuantFormat::kInt8) {
          EXPECT_FLOAT_EQ(scale, amax / 127);
        } else {  // one of +-amax / (7 .. 9)
          EXPECT_GE(std::fabs(scale), amax / 9.0f * 0.999f);
          EXPECT_LE(std::fabs(scale), amax / 7.0f * 1.001f);
        }
        for (int64_t k = g * 128; k < (g + 1) * 128; ++k) {
          int want = std::clamp(static_cast<int>(std::lrint(w[r * cols + k] / scale)), QuantMin(f), QuantMax(f));
          ASSERT_EQ(m->Code(r, k), want) << "row " << r << " col " << k;
        }
      }
    }
  }
}

TEST(QuantizeTest, GaussianErrorBounds) {
  const int64_t rows = 256, cols = 1024;
  auto w = Gaussian(rows * cols, 11, 0.02f);
  for (auto [f, bound] : {std::pair{QuantFormat::kInt8, 0.01}, std::pair{QuantFormat::kInt4, 0.12}}) {
    auto m = QuantizeMatrix(w.data(), rows, cols, f, 128);
    ASSERT_TRUE(m.ok());
    double err = RelError(DequantizeMatrix(*m), w);
    std::printf("%s relative error %.4f\n", std::string(QuantFormatName(f)).c_str(), err);
    EXPECT_LT(err, bound);
    EXPECT_GT(err, 0.0);
  }
}

TEST(QGemmTest, KernelsMatchTheReference) {
  std::mt19937 seeds(std::random_device{}());
  struct Shape {
    int64_t rows, cols, group, n;
  };
  for (Shape sh : {Shape{16, 128, 128, 1}, Shape{48, 256, 128, 3}, Shape{37, 192, 128, 8}, Shape{64, 1408, 128, 11},
                   Shape{32, 64, 32, 2}, Shape{512, 2048, 128, 1}, Shape{80, 512, 64, 16},
                   Shape{40, 256, 128, 17}, Shape{24, 384, 64, 20}, Shape{48, 96, 32, 1}, Shape{40, 320, 64, 1},
                   Shape{33, 160, 32, 9}}) {
    for (QuantFormat f : {QuantFormat::kInt8, QuantFormat::kInt4}) {
      const uint32_t seed = seeds();
      auto w = Gaussian(sh.rows * sh.cols, seed, 0.05f);
      auto x = Gaussian(sh.n * sh.cols, seed + 1);
      auto m = QuantizeMatrix(w.data(), sh.rows, sh.cols, f, sh.group);
      ASSERT_TRUE(m.ok());
      QuantizedActivations a;
      QuantizeActivations(x.data(), sh.n, sh.cols, m->group_size, &a);
      const auto exact = IntegerReference(*m, a);
      const auto fp = FloatProduct(DequantizeMatrix(*m), sh.rows, sh.cols, x, sh.n);
      for (Isa isa : Isas()) {
        std::vector<float> y(exact.size(), std::nanf(""));
        QMatMul(*m, a, y.data(), sh.rows, 0, m->tiles(), isa);
        SCOPED_TRACE(::testing::Message() << IsaName(isa) << " " << QuantFormatName(f) << " [" << sh.rows << ", "
                                          << sh.cols << "] n=" << sh.n << " seed " << seed);
        for (size_t i = 0; i < y.size(); ++i) {
          ASSERT_FALSE(std::isnan(y[i])) << i;
          ASSERT_NEAR(y[i], exact[i], 1e-4 * (1.0 + std::fabs(exact[i]))) << i;
        }
        // Activation quantization costs well under 2% against the float product.
        EXPECT_LT(RelError(y, fp), 0.02);
      }
    }
  }
}

// The SIMD activation quantizer gives exactly the scalar loop's codes, scales
// and sums (on a machine without AVX-512 both runs take the scalar loop), over
// group sizes 32-128, zero groups, ties at .5 and values at the clamp.
TEST(QGemmTest, SimdActivationQuantizationIsExactlyTheScalarOne) {
  for (int64_t group : {32, 64, 128}) {
    const int64_t n = 3, cols = 4 * group;
    auto x = Gaussian(n * cols, 40 + static_cast<uint32_t>(group));
    std::fill(x.begin(), x.begin() + group, 0.0f);  // an all-zero group
    for (int64_t k = 0; k < group; ++k) x[group + k] = 0.5f * static_cast<float>(k % 9) - 2.0f;  // ties
    x[2 * group] = -7.0f;  // the group's amax, negative: code -127
    QuantizedActivations simd, scalar;
    QuantizeActivations(x.data(), n, cols, group, &simd);
    QuantizeActivations(x.data(), n, cols, group, &scalar, /*simd=*/false);
    EXPECT_EQ(simd.q, scalar.q) << "group " << group;
    EXPECT_EQ(simd.scale, scalar.scale) << "group " << group;
    EXPECT_EQ(simd.sum, scalar.sum) << "group " << group;
    EXPECT_EQ(scalar.q[static_cast<size_t>(2 * group)], -127);
  }
}

TEST(QGemmTest, RowTileRangesAndStrides) {
  const int64_t rows = 100, cols = 256, n = 3;
  auto w = Gaussian(rows * cols, 5);
  auto x = Gaussian(n * cols, 6);
  auto m = QuantizeMatrix(w.data(), rows, cols, QuantFormat::kInt4, 128);
  ASSERT_TRUE(m.ok());
  QuantizedActivations a;
  QuantizeActivations(x.data(), n, cols, 128, &a);
  for (Isa isa : Isas()) {
    std::vector<float> whole(n * rows), parts(n * (rows + 5), -1.0f);
    QMatMul(*m, a, whole.data(), rows, 0, m->tiles(), isa);
    // Three ranges into a wider output: the same values, padding untouched.
    QMatMul(*m, a, parts.data(), rows + 5, 0, 2, isa);
    QMatMul(*m, a, parts.data(), rows + 5, 2, 3, isa);
    QMatMul(*m, a, parts.data(), rows + 5, 3, 100, isa);
    for (int64_t t = 0; t < n; ++t) {
      for (int64_t r = 0; r < rows; ++r) EXPECT_EQ(parts[t * (rows + 5) + r], whole[t * rows + r]);
      for (int64_t r = rows; r < rows + 5; ++r) EXPECT_EQ(parts[t * (rows + 5) + r], -1.0f);
    }
  }
}

TEST(QGemmTest, FusedGateUpSilu) {
  const int64_t inter = 96, hidden = 256, n = 5;
  auto g = Gaussian(inter * hidden, 21, 0.05f), u = Gaussian(inter * hidden, 22, 0.05f);
  auto x = Gaussian(n * hidden, 23);
  for (QuantFormat f : {QuantFormat::kInt8, QuantFormat::kInt4}) {
    auto gm = QuantizeMatrix(g.data(), inter, hidden, f, 128);
    auto um = QuantizeMatrix(u.data(), inter, hidden, f, 128);
    ASSERT_TRUE(gm.ok() && um.ok());
    QuantizedActivations a;
    QuantizeActivations(x.data(), n, hidden, 128, &a);
    auto gr = IntegerReference(*gm, a), ur = IntegerReference(*um, a);
    for (Isa isa : Isas()) {
      std::vector<float> out(n * inter);
      QGateUpSilu(*gm, *um, a, out.data(), inter, 0, gm->tiles(), isa);
      for (size_t i = 0; i < out.size(); ++i) {
        const float want = gr[i] / (1.0f + std::exp(-gr[i])) * ur[i];
        ASSERT_NEAR(out[i], want, 1e-4 * (1.0 + std::fabs(want))) << IsaName(isa) << " " << i;
      }
    }
  }
}

}  // namespace
}  // namespace krasis::quant
