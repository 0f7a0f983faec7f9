// GPU weight placement under a VRAM budget: all resident when it fits; else
// the largest layers' experts resident in what is left after the fixed part
// and two streaming buffers, the rest streamed; a budget too small for that is
// an error that says how much is needed. Sizes of a real fixture, and the
// --vram-budget parser.
#include "common/models/gpu_placement.h"

#include <gtest/gtest.h>

#include <algorithm>

namespace krasis {
namespace {

constexpr int64_t kMiB = int64_t{1} << 20;

// A dense first layer and six MoE layers of uneven expert sizes: 330 MiB fixed
// (100 extra + 50 + 6 x 30), 600 MiB of experts, the largest layer 120 MiB.
GpuPlacementInput Input(int64_t budget) {
  GpuPlacementInput in;
  in.budget_bytes = budget;
  in.fixed_bytes = 100 * kMiB;  // lm_head, KV, workspace
  in.layers = {{50 * kMiB, 0},           {30 * kMiB, 100 * kMiB}, {30 * kMiB, 120 * kMiB}, {30 * kMiB, 100 * kMiB},
               {30 * kMiB, 80 * kMiB},   {30 * kMiB, 100 * kMiB}, {30 * kMiB, 100 * kMiB}};
  return in;
}

TEST(GpuPlacementTest, EverythingResidentWhenItFits) {
  auto plan = PlanGpuPlacement(Input(930 * kMiB));
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_TRUE(plan->all_resident);
  EXPECT_EQ(plan->streamed_bytes, 0);
  EXPECT_EQ(plan->stream_buffer_bytes, 0);
  EXPECT_EQ(plan->device_bytes, 930 * kMiB);
  EXPECT_EQ(plan->experts_resident, std::vector<bool>(7, true));
}

TEST(GpuPlacementTest, LargestLayersStayResidentAndTheRestStream) {
  // 929 - 330 fixed - 2 x 120 buffers leaves 359 MiB: the 120 MiB layer, then
  // two of the four 100 MiB layers, 6 and 1 (spread over the stack: the
  // bit-reversed order of 0..6 is 0, 4, 2, 6, 1, 5, 3); 39 MiB is left, too
  // little for any other.
  auto plan = PlanGpuPlacement(Input(929 * kMiB));
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_FALSE(plan->all_resident);
  EXPECT_EQ(plan->stream_buffer_bytes, 120 * kMiB);
  EXPECT_EQ(plan->stream_parts, 1);  // the layers' expert counts are not given: they are never cut
  EXPECT_EQ(plan->experts_resident, (std::vector<bool>{true, true, true, false, false, false, true}));
  EXPECT_EQ(plan->streamed_bytes, 280 * kMiB);
  EXPECT_EQ(plan->device_bytes, 890 * kMiB);

  // Nothing left over: every MoE layer streams.
  plan = PlanGpuPlacement(Input(570 * kMiB));
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_EQ(plan->experts_resident, (std::vector<bool>{true, false, false, false, false, false, false}));
  EXPECT_EQ(plan->streamed_bytes, 600 * kMiB);
  EXPECT_EQ(plan->device_bytes, 570 * kMiB);
}

TEST(GpuPlacementTest, TooSmallABudgetSaysWhatIsNeeded) {
  auto plan = PlanGpuPlacement(Input(569 * kMiB));
  ASSERT_FALSE(plan.ok());
  EXPECT_EQ(plan.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_NE(plan.status().message().find("0.32 GiB"), std::string::npos) << plan.status();  // the fixed part
  EXPECT_NE(plan.status().message().find("0.23 GiB"), std::string::npos) << plan.status();  // two buffers
}

TEST(GpuPlacementTest, LayersTooLargeForTwoBuffersStreamInParts) {
  // Qwen3-Coder-Next-like: 8 layers of 3 GiB of experts (512 experts each), 2
  // GiB fixed. Buffers: two whole layers 6 GiB; halves 3 x 1.5; quarters 5 x
  // 0.75; eighths 9 x 0.375 GiB (each part with 1 MiB of alignment room).
  constexpr int64_t kGiB = int64_t{1} << 30;
  GpuPlacementInput in;
  in.fixed_bytes = 2 * kGiB;
  for (int l = 0; l < 8; ++l) in.layers.push_back({0, 3 * kGiB, 512});

  // 7 GiB: whole layers do not fit twice; halves do (no room for a resident layer, as with more parts).
  in.budget_bytes = 7 * kGiB;
  auto plan = PlanGpuPlacement(in);
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_EQ(plan->stream_parts, 2);
  EXPECT_EQ(plan->stream_buffers, 3);
  EXPECT_EQ(plan->stream_buffer_bytes, ExpertPartBytes(3 * kGiB, 512, 2));
  EXPECT_GE(plan->stream_buffer_bytes, 3 * kGiB / 2);
  EXPECT_EQ(plan->experts_resident, std::vector<bool>(8, false));
  EXPECT_EQ(plan->streamed_bytes, 8 * 3 * kGiB);
  EXPECT_LE(plan->device_bytes, in.budget_bytes);

  // 8 GiB: two whole-layer buffers fit exactly, and no number of parts saves a layer: whole layers.
  in.budget_bytes = 8 * kGiB;
  plan = PlanGpuPlacement(in);
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_EQ(plan->stream_parts, 1);
  EXPECT_EQ(plan->stream_buffers, 2);
  EXPECT_EQ(plan->stream_buffer_bytes, 3 * kGiB);

  // 15 GiB: whole layers or halves leave room for 2 resident layers, quarters
  // for 3 (as eighths do): quarters, the resident layers spread: 0, 4, 2.
  in.budget_bytes = 15 * kGiB;
  plan = PlanGpuPlacement(in);
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_EQ(plan->stream_parts, 4);
  EXPECT_EQ(plan->stream_buffers, 5);
  EXPECT_EQ(plan->experts_resident, (std::vector<bool>{true, false, true, false, true, false, false, false}));
  EXPECT_EQ(plan->streamed_bytes, 5 * 3 * kGiB);

  // Imposed parts; and a layer that cannot be cut (count 0) never is.
  in.budget_bytes = 7 * kGiB;
  plan = PlanGpuPlacement(in, 4);
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_EQ(plan->stream_parts, 4);
  EXPECT_EQ(ExpertPartBytes(3 * kGiB, 0, 4), 3 * kGiB);
  EXPECT_EQ(ExpertPartBytes(3 * kGiB, 512, 1), 3 * kGiB);

  // Too small even for the buffers of eighths.
  in.budget_bytes = 2 * kGiB + 4 * kMiB;
  plan = PlanGpuPlacement(in);
  ASSERT_FALSE(plan.ok());
  EXPECT_EQ(plan.status().code(), absl::StatusCode::kResourceExhausted);
}

TEST(GpuPlacementTest, LayerSizesOfAFixtureCountEveryTensorOnce) {
  auto model = LoadModel(std::string(KRASIS_TEST_DATA_DIR) + "/models/deepseek_v2");
  ASSERT_TRUE(model.ok()) << model.status();
  std::vector<GpuLayerBytes> sizes = GpuLayerSizes(**model);
  ASSERT_EQ(sizes.size(), (*model)->layers.size());
  const ModelConfig& c = (*model)->config();
  for (size_t l = 0; l < sizes.size(); ++l) {
    EXPECT_GT(sizes[l].resident, 0);
    if (c.IsMoeLayer(static_cast<int>(l))) {
      // Every routed expert: gate, up and down of moe_intermediate_size x hidden, in BF16.
      EXPECT_EQ(sizes[l].experts, c.num_experts * 3 * c.moe_intermediate_size * c.hidden_size * 2) << l;
    } else {
      EXPECT_EQ(sizes[l].experts, 0) << l;
    }
  }
}

TEST(GpuPlacementTest, ParsesByteSizes) {
  EXPECT_EQ(*ParseByteSize("24G", "--vram-budget"), int64_t{24} << 30);
  EXPECT_EQ(*ParseByteSize("16000M", "--vram-budget"), int64_t{16000} << 20);
  EXPECT_EQ(*ParseByteSize("512KiB", "--vram-budget"), int64_t{512} << 10);
  EXPECT_EQ(*ParseByteSize("2gb", "--vram-budget"), int64_t{2} << 30);
  EXPECT_EQ(*ParseByteSize("1073741824", "--vram-budget"), int64_t{1} << 30);
  for (const char* bad : {"", "G", "12X", "-5G", "1.5G", "99999999999999999999"}) {
    auto r = ParseByteSize(bad, "--vram-budget");
    ASSERT_FALSE(r.ok()) << bad;
    EXPECT_NE(r.status().message().find("--vram-budget"), std::string::npos);
  }
}

TEST(GpuPlacementTest, ParsesDeviceLists) {
  EXPECT_EQ(*ParseDeviceList("0", "--cuda-devices"), std::vector<int>{0});
  EXPECT_EQ(*ParseDeviceList("0,1", "--cuda-devices"), (std::vector<int>{0, 1}));
  EXPECT_EQ(*ParseDeviceList("3,1,2", "--cuda-devices"), (std::vector<int>{3, 1, 2}));
  for (const char* bad : {"", ",", "0,", ",1", "0,,1", "a", "-1", "0,0", "1 ,2", "99999"}) {
    auto r = ParseDeviceList(bad, "--cuda-devices");
    ASSERT_FALSE(r.ok()) << bad;
    EXPECT_NE(r.status().message().find("--cuda-devices"), std::string::npos) << bad;
  }
}

}  // namespace
}  // namespace krasis
