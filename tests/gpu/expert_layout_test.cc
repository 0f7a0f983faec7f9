// ExpertLayout (common/cuda/expert_store.h): how a layer's routed experts are
// laid out on the card from their host bytes. Pure host arithmetic, so it runs
// everywhere (no GPU needed): host ranges are coalesced, every matrix's card
// offset points at its own bytes in the range image, alignment modulo 256
// carries over, and quantized experts bring their scales along.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <random>
#include <vector>

#include "common/cuda/expert_store.h"
#include "common/quant/expert_set.h"
#include "common/quant/quantize.h"

namespace krasis {
namespace {

// The card image of a layout: each host range copied to its offset.
std::vector<char> Image(const cuda::ExpertLayout& layout) {
  std::vector<char> image(layout.bytes);
  for (const cuda::HostRange& r : layout.ranges) {
    EXPECT_LE(r.offset + r.bytes, layout.bytes);
    std::memcpy(image.data() + r.offset, r.host, r.bytes);
  }
  return image;
}

// `experts` BF16 experts stored back to back from `at`: gate, up, down of each.
FfnDesc BackToBackExperts(const char* at, int64_t experts, int64_t hidden, int64_t inter) {
  const size_t matrix = static_cast<size_t>(hidden * inter) * 2;
  FfnDesc ffn;
  ffn.kind = FfnDesc::Kind::kMoe;
  for (int64_t e = 0; e < experts; ++e) {
    const std::byte* base = reinterpret_cast<const std::byte*>(at) + 3 * matrix * static_cast<size_t>(e);
    MlpDesc d;
    d.inter = inter;
    d.gate = TensorView{DType::kBF16, {inter, hidden}, base};
    d.up = TensorView{DType::kBF16, {inter, hidden}, base + matrix};
    d.down = TensorView{DType::kBF16, {hidden, inter}, base + 2 * matrix};
    ffn.experts.push_back(d);
  }
  return ffn;
}

TEST(ExpertLayoutTest, CheckpointTensorsCoalesceAndKeepTheirBytesAndAlignment) {
  const int64_t hidden = 64, inter = 32, experts = 4;
  const size_t matrix = static_cast<size_t>(hidden * inter) * 2;
  // Two "shards": experts 0-1 back to back in one (gate, up, down), 2-3 in another
  // far away, with a small gap between tensors; base offset 6 (odd alignment).
  // Both live in one buffer, 256 KiB apart (more than the 64 KiB gap that still merges).
  const size_t shard = 8192 + 3 * 2 * matrix + 1024, apart = shard + (size_t{256} << 10);
  std::vector<char> buffer(apart + shard);
  std::mt19937 rng(5);
  for (char& c : buffer) c = static_cast<char>(rng());
  char* shard_a = buffer.data();
  char* shard_b = buffer.data() + apart;
  FfnDesc ffn;
  ffn.kind = FfnDesc::Kind::kMoe;
  for (int64_t e = 0; e < experts; ++e) {
    char* base = (e < 2 ? shard_a : shard_b) + 6 + (e % 2) * (3 * matrix + 16);
    MlpDesc d;
    d.inter = inter;
    d.gate = TensorView{DType::kBF16, {inter, hidden}, reinterpret_cast<const std::byte*>(base)};
    d.up = TensorView{DType::kBF16, {inter, hidden}, reinterpret_cast<const std::byte*>(base + matrix)};
    d.down = TensorView{DType::kBF16, {hidden, inter}, reinterpret_cast<const std::byte*>(base + 2 * matrix)};
    ffn.experts.push_back(d);
  }
  auto layout = cuda::LayoutExperts(ffn, hidden);
  ASSERT_TRUE(layout.ok()) << layout.status();
  EXPECT_EQ(layout->format, "bf16");
  EXPECT_EQ(layout->inter, inter);
  EXPECT_EQ(layout->ranges.size(), 2u);  // one per shard: the 16-byte gaps merge
  const std::vector<char> image = Image(*layout);
  for (int64_t e = 0; e < experts; ++e) {
    const MlpDesc& d = ffn.experts[static_cast<size_t>(e)];
    const TensorView* views[3] = {&d.gate, &d.up, &d.down};
    for (int k = 0; k < 3; ++k) {
      const cuda::StoredMatrix& m = layout->experts[static_cast<size_t>(e)][static_cast<size_t>(k)];
      EXPECT_EQ(m.quant, 0);
      EXPECT_EQ(m.bytes, matrix);
      EXPECT_EQ(m.offset % 256, reinterpret_cast<uintptr_t>(views[k]->data) % 256);
      EXPECT_EQ(std::memcmp(image.data() + m.offset, views[k]->data, matrix), 0) << e << "/" << k;
    }
  }
  // Gate and up of an expert stay back to back (one GEMM over both).
  const auto& e0 = layout->experts[0];
  EXPECT_EQ(e0[1].offset, e0[0].offset + e0[0].bytes);
}

TEST(ExpertLayoutTest, QuantizedExpertsCarryCodesAndScales) {
  const int64_t hidden = 256, inter = 128;
  std::mt19937 rng(9);
  std::normal_distribution<float> dist(0.0f, 0.02f);
  auto random = [&](int64_t rows, int64_t cols) {
    std::vector<float> w(static_cast<size_t>(rows * cols));
    for (float& x : w) x = dist(rng);
    return w;
  };
  std::vector<quant::QuantExpert> experts(3);
  for (auto& q : experts) {
    q.gate = *quant::QuantizeMatrix(random(inter, hidden).data(), inter, hidden, quant::QuantFormat::kInt4, 128);
    q.up = *quant::QuantizeMatrix(random(inter, hidden).data(), inter, hidden, quant::QuantFormat::kInt4, 128);
    q.down = *quant::QuantizeMatrix(random(hidden, inter).data(), hidden, inter, quant::QuantFormat::kInt4, 128);
  }
  quant::QuantizedExperts set(std::move(experts), hidden, nullptr);
  FfnDesc ffn;
  ffn.kind = FfnDesc::Kind::kMoe;
  ffn.quantized = &set;
  auto layout = cuda::LayoutExperts(ffn, hidden);
  ASSERT_TRUE(layout.ok()) << layout.status();
  EXPECT_EQ(layout->format, "int4");
  ASSERT_EQ(layout->experts.size(), 3u);
  const std::vector<char> image = Image(*layout);
  for (size_t e = 0; e < 3; ++e) {
    const quant::QuantExpert& q = set.experts()[e];
    const quant::QuantizedMatrix* ms[3] = {&q.gate, &q.up, &q.down};
    for (int k = 0; k < 3; ++k) {
      const cuda::StoredMatrix& m = layout->experts[e][static_cast<size_t>(k)];
      EXPECT_EQ(m.quant, static_cast<int>(quant::QuantFormat::kInt4));
      EXPECT_EQ(m.group, 128);
      EXPECT_EQ(m.rows, ms[k]->rows);
      EXPECT_EQ(std::memcmp(image.data() + m.offset, ms[k]->data, ms[k]->data_bytes()), 0);
      EXPECT_EQ(std::memcmp(image.data() + m.scales_offset, ms[k]->scales, ms[k]->scale_count() * sizeof(float)), 0);
      EXPECT_EQ(m.scales_offset % 4, 0u);
    }
  }
}

// Several cards split a layer's experts: each share holds its contiguous block
// of experts (bytes on the card, copied from their own host bytes), the others
// have none, the shares cover every expert once, and a bad share is an error.
TEST(ExpertLayoutTest, SharesSplitTheExpertsBetweenCards) {
  const int64_t hidden = 64, inter = 32, experts = 5;
  const size_t matrix = static_cast<size_t>(hidden * inter) * 2;
  std::vector<char> buffer(3 * matrix * experts);
  std::mt19937 rng(11);
  for (char& c : buffer) c = static_cast<char>(rng());
  const FfnDesc ffn = BackToBackExperts(buffer.data(), experts, hidden, inter);
  std::vector<int> holders(experts, 0);
  for (int share = 0; share < 2; ++share) {
    auto layout = cuda::LayoutExperts(ffn, hidden, share, 2);
    ASSERT_TRUE(layout.ok()) << layout.status();
    EXPECT_EQ(layout->first, share == 0 ? 0 : 2);
    EXPECT_EQ(layout->end, share == 0 ? 2 : 5);
    ASSERT_EQ(layout->experts.size(), static_cast<size_t>(experts));
    const std::vector<char> image = Image(*layout);
    EXPECT_GE(layout->bytes, 3 * matrix * static_cast<size_t>(layout->end - layout->first));
    EXPECT_LT(layout->bytes, 3 * matrix * experts);
    for (int64_t e = 0; e < experts; ++e) {
      const bool held = e >= layout->first && e < layout->end;
      holders[static_cast<size_t>(e)] += held;
      const MlpDesc& d = ffn.experts[static_cast<size_t>(e)];
      const TensorView* views[3] = {&d.gate, &d.up, &d.down};
      for (int k = 0; k < 3; ++k) {
        const cuda::StoredMatrix& m = layout->experts[static_cast<size_t>(e)][static_cast<size_t>(k)];
        EXPECT_EQ(m.bytes, held ? matrix : 0u) << e;
        if (held) {
          EXPECT_EQ(std::memcmp(image.data() + m.offset, views[k]->data, matrix), 0) << e << "/" << k;
        }
      }
    }
  }
  EXPECT_EQ(holders, std::vector<int>(experts, 1));
  for (auto [share, shares] : {std::pair{2, 2}, {-1, 2}, {0, 0}}) {
    EXPECT_EQ(cuda::LayoutExperts(ffn, hidden, share, shares).status().code(), absl::StatusCode::kInvalidArgument);
  }
}

TEST(ExpertLayoutTest, PartsSplitACardsExpertsIntoGroupsLaidOutOnTheirOwn) {
  const int64_t hidden = 64, inter = 32, experts = 7;
  const size_t matrix = static_cast<size_t>(hidden * inter) * 2;
  std::vector<char> buffer(3 * matrix * experts + 64);
  std::mt19937 rng(13);
  for (char& c : buffer) c = static_cast<char>(rng());
  const FfnDesc ffn = BackToBackExperts(buffer.data() + 8, experts, hidden, inter);
  // The second card's share (experts 3..6) in 3 parts, and more parts than experts.
  auto layout = cuda::LayoutExperts(ffn, hidden, 1, 2);
  ASSERT_TRUE(layout.ok()) << layout.status();
  for (int parts : {3, 9}) {
    SCOPED_TRACE(parts);
    const std::vector<cuda::ExpertLayout> split = cuda::SplitLayout(*layout, parts);
    ASSERT_EQ(static_cast<int64_t>(split.size()), std::min<int64_t>(parts, layout->end - layout->first));
    std::vector<int> holders(experts, 0);
    int64_t next = layout->first;
    for (const cuda::ExpertLayout& part : split) {
      EXPECT_EQ(part.first, next);  // contiguous, in order
      EXPECT_GT(part.end, part.first);
      next = part.end;
      const std::vector<char> image = Image(part);
      EXPECT_LT(part.bytes, layout->bytes);
      for (int64_t e = 0; e < experts; ++e) {
        const bool held = e >= part.first && e < part.end;
        holders[static_cast<size_t>(e)] += held;
        const MlpDesc& d = ffn.experts[static_cast<size_t>(e)];
        const TensorView* views[3] = {&d.gate, &d.up, &d.down};
        for (int k = 0; k < 3; ++k) {
          const cuda::StoredMatrix& m = part.experts[static_cast<size_t>(e)][static_cast<size_t>(k)];
          EXPECT_EQ(m.bytes, held ? matrix : 0u) << e;
          if (!held) continue;
          EXPECT_EQ(std::memcmp(image.data() + m.offset, views[k]->data, matrix), 0) << e << "/" << k;
          EXPECT_EQ(m.offset % 256, reinterpret_cast<uintptr_t>(views[k]->data) % 256);
        }
      }
    }
    EXPECT_EQ(next, layout->end);
    EXPECT_EQ(holders, (std::vector<int>{0, 0, 0, 1, 1, 1, 1}));
  }
}

TEST(ExpertLayoutTest, UnsupportedStoredTypeIsAnError) {
  std::vector<char> bytes(64);
  FfnDesc ffn;
  ffn.kind = FfnDesc::Kind::kMoe;
  MlpDesc d;
  d.inter = 4;
  d.gate = d.up = TensorView{DType::kI32, {4, 4}, reinterpret_cast<const std::byte*>(bytes.data())};
  d.down = d.gate;
  ffn.experts.push_back(d);
  auto layout = cuda::LayoutExperts(ffn, 4);
  ASSERT_FALSE(layout.ok());
  EXPECT_NE(layout.status().message().find("I32"), std::string::npos) << layout.status();
}

}  // namespace
}  // namespace krasis
