// The paged KV cache's storage dtypes: what goes in comes out rounded exactly as
// the scalar conversions in common/dtype.h round, for every layer's rows, and the
// flag parser names the flag when it refuses a value.
#include "common/models/kv_cache.h"

#include <gtest/gtest.h>

#include <cmath>
#include <random>

namespace krasis {
namespace {

std::vector<float> Random(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> dist(0.0f, 3.0f);
  std::vector<float> v(n);
  for (float& x : v) x = dist(rng);
  return v;
}

float Rounded(DType dtype, float x) {
  switch (dtype) {
    case DType::kBF16: return BF16ToFloat(FloatToBF16(x));
    case DType::kF16: return F16ToFloat(FloatToF16(x));
    default: return x;
  }
}

TEST(PagedKvCacheTest, RowsRoundTripThroughEveryDtype) {
  // Two attention layers of different widths around a linear-attention layer.
  const std::vector<int64_t> floats = {24, 0, 40};
  for (DType dtype : {DType::kF32, DType::kBF16, DType::kF16}) {
    SCOPED_TRACE(DTypeName(dtype));
    PagedKvCache cache(8, 4, floats, dtype);
    EXPECT_EQ(cache.dtype(), dtype);
    EXPECT_EQ(cache.ElementBytes(), DTypeSize(dtype));
    EXPECT_EQ(cache.SlotStride(), 64);
    SequenceState seq;
    seq.linear.resize(3);
    ASSERT_TRUE(seq.Reserve(cache, 11).ok());
    EXPECT_EQ(seq.block_table.size(), 3u);
    for (int layer : {0, 2}) {
      const int64_t f = cache.LayerFloats(layer);
      std::vector<float> in = Random(static_cast<size_t>(11 * f), 7 + layer);
      seq.WriteRows(cache, layer, 0, 11, in.data());
      std::vector<float> out(in.size(), NAN);
      seq.ReadRows(cache, layer, 0, 11, out.data());
      for (size_t i = 0; i < in.size(); ++i) ASSERT_EQ(out[i], Rounded(dtype, in[i])) << "layer " << layer << " " << i;
      // A row stored at an offset lands there and nowhere else.
      std::vector<float> part = Random(5, 99);
      seq.StoreRow(cache, layer, 6, 3, part.data(), 5);
      seq.ReadRows(cache, layer, 6, 1, out.data());
      for (int64_t i = 0; i < f; ++i) {
        const float want = i >= 3 && i < 8 ? Rounded(dtype, part[i - 3]) : Rounded(dtype, in[6 * f + i]);
        EXPECT_EQ(out[i], want) << i;
      }
    }
    // Layer 2's rows did not disturb layer 0's.
    std::vector<float> in0 = Random(static_cast<size_t>(11 * 24), 7);
    std::vector<float> out0(in0.size());
    seq.ReadRows(cache, 0, 0, 11, out0.data());
    EXPECT_EQ(out0[0], Rounded(dtype, in0[0]));
    EXPECT_EQ(out0[10 * 24 + 23], Rounded(dtype, in0[10 * 24 + 23]));
    seq.Release(cache);
    EXPECT_EQ(cache.free_blocks(), 8);
  }
}

TEST(PagedKvCacheTest, SixteenBitCachesHalveTheStorage) {
  PagedKvCache wide(4, 16, {128}, DType::kF32), narrow(4, 16, {128}, DType::kBF16);
  EXPECT_EQ(wide.Slot(1, 0, 0) - wide.Slot(0, 0, 0), 16 * 128 * 4);
  EXPECT_EQ(narrow.Slot(1, 0, 0) - narrow.Slot(0, 0, 0), 16 * 128 * 2);
}

TEST(PagedKvCacheTest, ParsesTheFlagAndNamesItWhenWrong) {
  EXPECT_EQ(*ParseKvCacheDtype("bf16"), DType::kBF16);
  EXPECT_EQ(*ParseKvCacheDtype("bfloat16"), DType::kBF16);
  EXPECT_EQ(*ParseKvCacheDtype("f16"), DType::kF16);
  EXPECT_EQ(*ParseKvCacheDtype("fp16"), DType::kF16);
  EXPECT_EQ(*ParseKvCacheDtype("f32"), DType::kF32);
  auto bad = ParseKvCacheDtype("fp8");
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(bad.status().message().find("--kv-cache-dtype fp8"), std::string::npos);
}

}  // namespace
}  // namespace krasis
