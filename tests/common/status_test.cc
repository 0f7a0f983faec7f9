// Tests for the status macros, Annotate, the tensor view and logging setup.
#include "common/status.h"

#include <gtest/gtest.h>

#include "common/logging.h"
#include "common/tensor.h"

namespace krasis {
namespace {

absl::StatusOr<int> Half(int x) {
  if (x % 2 != 0) return InvalidArgumentError("odd value ", x);
  return x / 2;
}

absl::StatusOr<int> Quarter(int x) {
  ASSIGN_OR_RETURN(int h, Half(x));
  ASSIGN_OR_RETURN(int q, Half(h));
  return q;
}

absl::Status CheckEven(int x) {
  RETURN_IF_ERROR(Half(x).status());
  return absl::OkStatus();
}

TEST(StatusTest, AssignOrReturnPropagates) {
  EXPECT_EQ(*Quarter(8), 2);
  auto bad = Quarter(6);
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(bad.status().message(), "odd value 3");
  EXPECT_TRUE(CheckEven(4).ok());
  EXPECT_EQ(CheckEven(5).message(), "odd value 5");
}

TEST(StatusTest, AnnotateKeepsCode) {
  absl::Status s = Annotate(absl::NotFoundError("no such file"), "model.safetensors");
  EXPECT_EQ(s.code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(s.message(), "model.safetensors: no such file");
  EXPECT_TRUE(Annotate(absl::OkStatus(), "x").ok());
}

TEST(TensorTest, ViewBasics) {
  float data[6] = {1, 2, 3, 4, 5, 6};
  TensorView v{DType::kF32, {2, 3}, reinterpret_cast<const std::byte*>(data)};
  EXPECT_EQ(v.numel(), 6);
  EXPECT_EQ(v.nbytes(), 24u);
  EXPECT_EQ(ShapeToString(v.shape), "[2, 3]");
  TensorView row = v.Slice0(1);
  EXPECT_EQ(row.shape, (Shape{3}));
  EXPECT_EQ(ToFloatVector(row), (std::vector<float>{4, 5, 6}));
  EXPECT_TRUE(CheckShape(v, {2, 3}, "w").ok());
  absl::Status s = CheckShape(v, {3, 2}, "layer.0.w");
  EXPECT_EQ(s.message(), "layer.0.w has shape [2, 3], expected [3, 2]");
  EXPECT_EQ(NumElements({}), 1);
}

TEST(LoggingTest, LevelsParseAndLoggerIsNamed) {
  EXPECT_EQ(*ParseLogLevel("WARNING"), spdlog::level::warn);
  EXPECT_EQ(*ParseLogLevel("debug"), spdlog::level::debug);
  EXPECT_FALSE(ParseLogLevel("loud").ok());
  EXPECT_TRUE(InitLogging("decode", "debug").ok());
  EXPECT_EQ(spdlog::default_logger()->name(), "decode");
  EXPECT_EQ(spdlog::default_logger()->level(), spdlog::level::debug);
  absl::Status bad = InitLogging("gateway", "loud");
  EXPECT_EQ(bad.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(spdlog::default_logger()->name(), "gateway");
  EXPECT_EQ(spdlog::default_logger()->level(), spdlog::level::info);
}

}  // namespace
}  // namespace krasis
