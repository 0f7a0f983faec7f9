// Tests for the scalar dtype conversions: known bit patterns, NaN / Inf / subnormal
// handling, exhaustive round trips, and float->F16 against the CPU's own F16C
// conversion instruction on fresh random inputs (when the CPU has it).
#include "common/dtype.h"

#include <gtest/gtest.h>
#include <immintrin.h>

#include <bit>
#include <cmath>
#include <limits>
#include <random>

namespace krasis {
namespace {

TEST(DTypeTest, NamesAndSizes) {
  EXPECT_EQ(DTypeSize(DType::kBF16), 2u);
  EXPECT_EQ(DTypeSize(DType::kF32), 4u);
  EXPECT_EQ(DTypeSize(DType::kF8E4M3), 1u);
  EXPECT_EQ(DTypeSize(DType::kI64), 8u);
  EXPECT_EQ(ParseDType("F8_E4M3"), DType::kF8E4M3);
  EXPECT_EQ(ParseDType("I32"), DType::kI32);
  EXPECT_EQ(ParseDType("bf16"), std::nullopt);
  EXPECT_EQ(ParseDType("F64"), std::nullopt);
  for (DType d : {DType::kBF16, DType::kF16, DType::kF32, DType::kF8E4M3, DType::kI8, DType::kU8,
                  DType::kI32, DType::kI64}) {
    EXPECT_EQ(ParseDType(DTypeName(d)), d);
  }
  EXPECT_TRUE(IsFloatingDType(DType::kF8E4M3));
  EXPECT_FALSE(IsFloatingDType(DType::kU8));
}

TEST(DTypeTest, BF16KnownPatterns) {
  EXPECT_EQ(FloatToBF16(1.0f), 0x3F80);
  EXPECT_EQ(FloatToBF16(-2.0f), 0xC000);
  EXPECT_EQ(FloatToBF16(0.0f), 0x0000);
  EXPECT_EQ(FloatToBF16(-0.0f), 0x8000);
  EXPECT_EQ(FloatToBF16(std::numeric_limits<float>::infinity()), 0x7F80);
  EXPECT_EQ(FloatToBF16(-std::numeric_limits<float>::infinity()), 0xFF80);
  EXPECT_FLOAT_EQ(BF16ToFloat(0x4049), 3.140625f);
  // Round to nearest even: 1 + 2^-8 is halfway between 1 and 1 + 2^-7 -> 1.
  EXPECT_EQ(FloatToBF16(std::bit_cast<float>(0x3F808000u)), 0x3F80);
  // 1 + 3 * 2^-8 is halfway between 1+2^-7 (odd) and 1+2^-6 -> even 0x3F82.
  EXPECT_EQ(FloatToBF16(std::bit_cast<float>(0x3F818000u)), 0x3F82);
  // Just above halfway rounds up.
  EXPECT_EQ(FloatToBF16(std::bit_cast<float>(0x3F808001u)), 0x3F81);
  // Max float rounds to infinity.
  EXPECT_EQ(FloatToBF16(std::numeric_limits<float>::max()), 0x7F80);
  // NaN stays NaN, including a NaN whose payload lives only in the low bits.
  EXPECT_TRUE(std::isnan(BF16ToFloat(FloatToBF16(std::bit_cast<float>(0x7F800001u)))));
  EXPECT_TRUE(std::isnan(BF16ToFloat(FloatToBF16(std::nanf("")))));
  // Subnormals are kept.
  EXPECT_EQ(FloatToBF16(std::bit_cast<float>(0x00010000u)), 0x0001);
  EXPECT_GT(BF16ToFloat(0x0001), 0.0f);
}

TEST(DTypeTest, BF16ExhaustiveRoundTrip) {
  for (uint32_t b = 0; b < 0x10000; ++b) {
    float f = BF16ToFloat(static_cast<uint16_t>(b));
    if (std::isnan(f)) {
      EXPECT_TRUE(std::isnan(BF16ToFloat(FloatToBF16(f))));
    } else {
      ASSERT_EQ(FloatToBF16(f), b) << std::hex << b;
    }
  }
}

TEST(DTypeTest, F16KnownPatterns) {
  EXPECT_EQ(FloatToF16(1.0f), 0x3C00);
  EXPECT_EQ(FloatToF16(-2.0f), 0xC000);
  EXPECT_EQ(FloatToF16(65504.0f), 0x7BFF);
  EXPECT_EQ(FloatToF16(65520.0f), 0x7C00);  // halfway to 2^16 rounds to infinity
  EXPECT_EQ(FloatToF16(65519.0f), 0x7BFF);
  EXPECT_EQ(FloatToF16(1e10f), 0x7C00);
  EXPECT_EQ(FloatToF16(-std::numeric_limits<float>::infinity()), 0xFC00);
  EXPECT_EQ(FloatToF16(std::ldexp(1.0f, -24)), 0x0001);  // smallest subnormal
  EXPECT_EQ(FloatToF16(std::ldexp(1.0f, -25)), 0x0000);  // halfway to zero: even
  EXPECT_EQ(FloatToF16(std::ldexp(1.5f, -25)), 0x0001);
  EXPECT_EQ(FloatToF16(std::ldexp(1.0f, -14)), 0x0400);  // smallest normal
  EXPECT_FLOAT_EQ(F16ToFloat(0x3555), 0.333251953125f);
  EXPECT_FLOAT_EQ(F16ToFloat(0x03FF), std::ldexp(1023.0f, -24));
  EXPECT_TRUE(std::isinf(F16ToFloat(0x7C00)));
  EXPECT_TRUE(std::isnan(F16ToFloat(0x7E00)));
  EXPECT_TRUE(std::isnan(F16ToFloat(FloatToF16(std::nanf("")))));
}

TEST(DTypeTest, F16ExhaustiveRoundTrip) {
  for (uint32_t b = 0; b < 0x10000; ++b) {
    float f = F16ToFloat(static_cast<uint16_t>(b));
    if (std::isnan(f)) {
      EXPECT_TRUE(std::isnan(F16ToFloat(FloatToF16(f))));
    } else {
      ASSERT_EQ(FloatToF16(f), b) << std::hex << b;
    }
  }
}

__attribute__((target("f16c"))) uint16_t HardwareFloatToF16(float f) {
  return static_cast<uint16_t>(_cvtss_sh(f, _MM_FROUND_TO_NEAREST_INT));
}

TEST(DTypeTest, F16MatchesHardwareOnRandomFloats) {
  if (!__builtin_cpu_supports("f16c")) GTEST_SKIP() << "this CPU has no F16C instructions";
  std::mt19937 rng(std::random_device{}());
  std::uniform_int_distribution<uint32_t> bits;
  int checked = 0;
  for (int i = 0; i < 2000000; ++i) {
    // Random bit patterns cover every exponent, plus values near the F16 range.
    float f = (i % 2 == 0) ? std::bit_cast<float>(bits(rng))
                           : std::ldexp(static_cast<float>(bits(rng)) / 4294967296.0f,
                                        static_cast<int>(bits(rng) % 44) - 28);
    if (std::isnan(f)) continue;
    ASSERT_EQ(FloatToF16(f), HardwareFloatToF16(f)) << "value " << f;
    ++checked;
  }
  EXPECT_GT(checked, 1000000);
}

TEST(DTypeTest, F8E4M3KnownPatterns) {
  EXPECT_EQ(FloatToF8E4M3(1.0f), 0x38);
  EXPECT_EQ(FloatToF8E4M3(-1.0f), 0xB8);
  EXPECT_EQ(FloatToF8E4M3(448.0f), 0x7E);
  EXPECT_EQ(FloatToF8E4M3(0.0f), 0x00);
  EXPECT_EQ(FloatToF8E4M3(std::ldexp(1.0f, -9)), 0x01);   // smallest subnormal
  EXPECT_EQ(FloatToF8E4M3(std::ldexp(1.0f, -6)), 0x08);   // smallest normal
  EXPECT_EQ(FloatToF8E4M3(std::ldexp(1.0f, -10)), 0x00);  // halfway to zero: even
  EXPECT_EQ(FloatToF8E4M3(1.0625f), 0x38);  // halfway 1 and 1.125: even (1.0)
  EXPECT_EQ(FloatToF8E4M3(1.1875f), 0x3A);  // halfway 1.125 and 1.25: even (1.25)
  EXPECT_EQ(FloatToF8E4M3(464.0f), 0x7E);   // halfway 448 and "480": even (448)
  EXPECT_EQ(FloatToF8E4M3(470.0f), 0x7F);   // rounds past the max: NaN, as torch
  EXPECT_EQ(FloatToF8E4M3(1000.0f), 0x7F);
  EXPECT_EQ(FloatToF8E4M3(-1000.0f), 0xFF);
  EXPECT_EQ(FloatToF8E4M3(std::numeric_limits<float>::infinity()), 0x7F);
  EXPECT_EQ(FloatToF8E4M3(1000.0f, /*saturate=*/true), 0x7E);
  EXPECT_EQ(FloatToF8E4M3(-470.0f, /*saturate=*/true), 0xFE);
  EXPECT_EQ(FloatToF8E4M3(std::nanf(""), /*saturate=*/true), 0x7F);
  EXPECT_FLOAT_EQ(F8E4M3ToFloat(0x7E), 448.0f);
  EXPECT_FLOAT_EQ(F8E4M3ToFloat(0x01), std::ldexp(1.0f, -9));
  EXPECT_FLOAT_EQ(F8E4M3ToFloat(0x07), std::ldexp(7.0f, -9));
  EXPECT_FLOAT_EQ(F8E4M3ToFloat(0xC4), -3.0f);
  EXPECT_TRUE(std::isnan(F8E4M3ToFloat(0x7F)));
  EXPECT_TRUE(std::isnan(F8E4M3ToFloat(0xFF)));
  EXPECT_FALSE(std::isinf(F8E4M3ToFloat(0x78)));  // S.1111.000 is 256, not infinity
  EXPECT_FLOAT_EQ(F8E4M3ToFloat(0x78), 256.0f);
}

TEST(DTypeTest, F8E4M3ExhaustiveRoundTripAndMonotone) {
  float prev = -1.0f;
  for (uint32_t b = 0; b < 0x100; ++b) {
    float f = F8E4M3ToFloat(static_cast<uint8_t>(b));
    if (std::isnan(f)) continue;
    EXPECT_EQ(FloatToF8E4M3(f), b) << std::hex << b;
    if (b < 0x7F) {
      EXPECT_GT(f, prev);
      prev = f;
    }
  }
}

TEST(DTypeTest, F8E4M3RoundsToNearestRepresentable) {
  std::mt19937 rng(std::random_device{}());
  std::uniform_real_distribution<float> dist(-460.0f, 460.0f);
  for (int i = 0; i < 100000; ++i) {
    float f = dist(rng) * (i % 3 == 0 ? 0.001f : 1.0f);
    float q = F8E4M3ToFloat(FloatToF8E4M3(f));
    // No representable value is strictly closer than the chosen one.
    for (uint32_t b = 0; b < 0x100; ++b) {
      float c = F8E4M3ToFloat(static_cast<uint8_t>(b));
      if (std::isnan(c)) continue;
      ASSERT_LE(std::fabs(q - f), std::fabs(c - f)) << f;
    }
  }
}

TEST(DTypeTest, ConvertToFloatAllTypes) {
  uint16_t bf[2] = {FloatToBF16(1.5f), FloatToBF16(-3.0f)};
  int8_t i8[2] = {-128, 127};
  int64_t i64[2] = {-5, 1ll << 40};
  float out[2];
  ConvertToFloat(DType::kBF16, bf, out, 2);
  EXPECT_FLOAT_EQ(out[0], 1.5f);
  EXPECT_FLOAT_EQ(out[1], -3.0f);
  ConvertToFloat(DType::kI8, i8, out, 2);
  EXPECT_FLOAT_EQ(out[0], -128.0f);
  EXPECT_FLOAT_EQ(out[1], 127.0f);
  ConvertToFloat(DType::kI64, i64, out, 2);
  EXPECT_FLOAT_EQ(out[0], -5.0f);
  EXPECT_FLOAT_EQ(out[1], 1099511627776.0f);
}

}  // namespace
}  // namespace krasis
