// Tests for the safetensors reader/writer: round trips of every dtype, sharded
// checkpoints behind an index, and every malformed-file case the reader must turn
// into a clear status (right code, file and tensor named) instead of a crash.
#include "common/safetensors.h"

#include <stdlib.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace krasis {
namespace {

namespace fs = std::filesystem;
using ::testing::AllOf;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

template <typename T>
std::vector<std::byte> ToBytes(const std::vector<T>& values) {
  std::vector<std::byte> bytes(values.size() * sizeof(T));
  if (!bytes.empty()) std::memcpy(bytes.data(), values.data(), bytes.size());
  return bytes;
}

TensorView MakeView(DType dtype, Shape shape, const std::vector<std::byte>& bytes) {
  TensorView view;
  view.dtype = dtype;
  view.shape = std::move(shape);
  view.data = bytes.data();
  return view;
}

// A file image: little-endian length, header text, `data_size` bytes of data.
std::vector<std::byte> MakeFileBytes(const std::string& header, size_t data_size) {
  std::vector<std::byte> bytes(8 + header.size() + data_size, std::byte{0x5a});
  const uint64_t len = header.size();
  for (int i = 0; i < 8; ++i) bytes[i] = static_cast<std::byte>((len >> (8 * i)) & 0xff);
  std::memcpy(bytes.data() + 8, header.data(), header.size());
  return bytes;
}

void WriteRaw(const std::string& path, const std::string& contents) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << contents;
}

void WriteBytes(const std::string& path, const std::vector<std::byte>& bytes) {
  WriteRaw(path, std::string(reinterpret_cast<const char*>(bytes.data()), bytes.size()));
}

class SafetensorsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = ::testing::TempDir() + "/safetensors_test_XXXXXX";
    ASSERT_NE(mkdtemp(tmpl.data()), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override {
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }
  std::string Path(const std::string& name) const { return dir_ + "/" + name; }

  // Writes a shard with float32 tensors named `names`, each [2] = {i, -i}.
  void WriteF32Shard(const std::string& path, const std::vector<std::string>& names) {
    std::vector<std::vector<std::byte>> storage;
    std::vector<std::pair<std::string, TensorView>> tensors;
    storage.reserve(names.size());
    for (size_t i = 0; i < names.size(); ++i) {
      storage.push_back(ToBytes<float>({float(i + 1), -float(i + 1)}));
      tensors.emplace_back(names[i], MakeView(DType::kF32, {2}, storage.back()));
    }
    ASSERT_TRUE(WriteSafetensors(path, tensors).ok());
  }

  std::string dir_;
};

TEST_F(SafetensorsTest, RoundTripsEveryDType) {
  // Real values, as bit patterns: BF16 {1, -2.5, 0.15625}, F16 {1, -2, 65504},
  // F8_E4M3 {1, -448, 0.5}.
  const auto bf16 = ToBytes<uint16_t>({0x3F80, 0xC020, 0x3E20});
  const auto f16 = ToBytes<uint16_t>({0x3C00, 0xC000, 0x7BFF});
  const auto f32 = ToBytes<float>({3.25f, -1e-3f, 6.0e7f, 0.0f, 1.5f, -7.0f});
  const auto f8 = ToBytes<uint8_t>({0x38, 0xFE, 0x30});
  const auto i8 = ToBytes<int8_t>({-128, 0, 127, 5});
  const auto u8 = ToBytes<uint8_t>({0, 200, 255});
  const auto i32 = ToBytes<int32_t>({-2147483647 - 1, 42, 2147483647, -9});
  const auto i64 = ToBytes<int64_t>({-(int64_t{1} << 62), 1234567890123LL});
  const std::vector<std::pair<std::string, TensorView>> tensors = {
      {"bf16", MakeView(DType::kBF16, {3}, bf16)},
      {"f16", MakeView(DType::kF16, {1, 3}, f16)},
      {"f32", MakeView(DType::kF32, {2, 3}, f32)},
      {"f8", MakeView(DType::kF8E4M3, {3}, f8)},
      {"i8", MakeView(DType::kI8, {2, 2}, i8)},
      {"u8", MakeView(DType::kU8, {3, 1}, u8)},
      {"i32", MakeView(DType::kI32, {4}, i32)},
      {"i64", MakeView(DType::kI64, {2}, i64)},
  };
  const std::string path = Path("all.safetensors");
  ASSERT_TRUE(WriteSafetensors(path, tensors, {{"format", "pt"}, {"note", "x"}}).ok());

  auto file = SafetensorsFile::Open(path);
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_EQ((*file)->path(), path);
  EXPECT_EQ((*file)->data_offset() % 8, 0u);
  EXPECT_EQ((*file)->file_size(), fs::file_size(path));
  EXPECT_EQ((*file)->metadata().at("format"), "pt");
  EXPECT_EQ((*file)->metadata().at("note"), "x");
  // File order: by element size, largest first, so every tensor is aligned.
  std::vector<std::string> file_order;
  for (const TensorInfo& info : (*file)->tensors()) file_order.push_back(info.name);
  EXPECT_THAT(file_order, ElementsAre("i64", "f32", "i32", "bf16", "f16", "f8", "i8", "u8"));
  for (const auto& [name, expected] : tensors) {
    SCOPED_TRACE(name);
    const TensorInfo* found = (*file)->Find(name);
    ASSERT_NE(found, nullptr);
    const TensorInfo& info = *found;
    EXPECT_EQ(info.file, path);
    EXPECT_TRUE((*file)->IsAligned(info));
    EXPECT_EQ(info.nbytes(), expected.nbytes());
    auto view = (*file)->GetTensor(name);
    ASSERT_TRUE(view.ok()) << view.status();
    EXPECT_EQ(view->dtype, expected.dtype);
    EXPECT_EQ(view->shape, expected.shape);
    EXPECT_EQ(std::memcmp(view->data, expected.data, expected.nbytes()), 0);
    EXPECT_EQ(view->data, (*file)->Bytes(info).data());
  }
  EXPECT_EQ((*file)->GetTensor("f32")->as<float>()[2], 6.0e7f);
  EXPECT_EQ((*file)->GetTensor("i64")->as<int64_t>()[1], 1234567890123LL);
  EXPECT_EQ((*file)->GetTensor("i32")->as<int32_t>()[0], -2147483647 - 1);
  EXPECT_EQ((*file)->GetTensor("bf16")->as<uint16_t>()[1], 0xC020);
}

TEST_F(SafetensorsTest, ViewsPointIntoTheFileAtDataOffset) {
  const auto data = ToBytes<int32_t>({1, 2, 3, 4, 5, 6});
  const std::string path = Path("offsets.safetensors");
  ASSERT_TRUE(WriteSafetensors(path, {{"a", MakeView(DType::kI32, {2}, data)},
                                      {"b", MakeView(DType::kI32, {4}, data)}})
                  .ok());
  auto file = SafetensorsFile::Open(path);
  ASSERT_TRUE(file.ok()) << file.status();
  const TensorInfo* b = (*file)->Find("b");
  ASSERT_NE(b, nullptr);
  EXPECT_EQ(b->begin, 8u);
  EXPECT_EQ(b->end, 24u);
  std::ifstream in(path, std::ios::binary);
  in.seekg(static_cast<std::streamoff>((*file)->data_offset() + b->begin));
  int32_t first = 0;
  in.read(reinterpret_cast<char*>(&first), sizeof(first));
  EXPECT_EQ(first, 1);
  EXPECT_EQ((*file)->Find("nope"), nullptr);
}

// Old writers did not pad the header; such files still load, and IsAligned says
// the view must be copied rather than read through as<T>().
TEST_F(SafetensorsTest, UnpaddedHeaderGivesUnalignedViews) {
  const std::string header = R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})";
  ASSERT_NE(header.size() % 4, 0u);
  std::vector<std::byte> bytes = MakeFileBytes(header, 4);
  const float value = -0.75f;
  std::memcpy(bytes.data() + 8 + header.size(), &value, sizeof(value));
  WriteBytes(Path("old.safetensors"), bytes);
  auto file = SafetensorsFile::Open(Path("old.safetensors"));
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_FALSE((*file)->IsAligned(*(*file)->Find("w")));
  auto view = (*file)->GetTensor("w");
  ASSERT_TRUE(view.ok());
  float read = 0;
  std::memcpy(&read, view->data, sizeof(read));
  EXPECT_EQ(read, value);
}

TEST_F(SafetensorsTest, ScalarAndEmptyTensors) {
  const auto one = ToBytes<float>({2.5f});
  const std::vector<std::byte> none;
  const std::string path = Path("edge.safetensors");
  ASSERT_TRUE(WriteSafetensors(path, {{"scalar", MakeView(DType::kF32, {}, one)},
                                      {"empty", MakeView(DType::kBF16, {0, 4}, none)}})
                  .ok());
  auto file = SafetensorsFile::Open(path);
  ASSERT_TRUE(file.ok()) << file.status();
  auto scalar = (*file)->GetTensor("scalar");
  ASSERT_TRUE(scalar.ok());
  EXPECT_TRUE(scalar->shape.empty());
  EXPECT_EQ(scalar->as<float>()[0], 2.5f);
  auto empty = (*file)->GetTensor("empty");
  ASSERT_TRUE(empty.ok());
  EXPECT_THAT(empty->shape, ElementsAre(0, 4));
  EXPECT_TRUE((*file)->metadata().empty());
}

TEST_F(SafetensorsTest, MissingTensorNamesFileAndTensor) {
  const std::string path = Path("one.safetensors");
  WriteF32Shard(path, {"w"});
  auto file = SafetensorsFile::Open(path);
  ASSERT_TRUE(file.ok());
  auto missing = (*file)->GetTensor("model.norm.weight");
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(missing.status().message(), AllOf(HasSubstr(path), HasSubstr("model.norm.weight")));
}

// Every malformed header: the status code, and text the message must contain.
struct BadHeaderCase {
  std::string label;
  std::string header;
  size_t data_size;
  absl::StatusCode code;
  std::vector<std::string> must_mention;
};

class BadHeaderTest : public ::testing::TestWithParam<BadHeaderCase> {};

TEST_P(BadHeaderTest, IsRejectedWithAClearStatus) {
  const BadHeaderCase& c = GetParam();
  auto parsed = ParseSafetensorsHeader(MakeFileBytes(c.header, c.data_size), "bad.safetensors");
  ASSERT_FALSE(parsed.ok());
  EXPECT_EQ(parsed.status().code(), c.code) << parsed.status();
  EXPECT_THAT(parsed.status().message(), HasSubstr("bad.safetensors")) << parsed.status();
  for (const std::string& text : c.must_mention) {
    EXPECT_THAT(parsed.status().message(), HasSubstr(text)) << parsed.status();
  }
}

constexpr auto kInvalid = absl::StatusCode::kInvalidArgument;
constexpr auto kDataLoss = absl::StatusCode::kDataLoss;

INSTANTIATE_TEST_SUITE_P(
    All, BadHeaderTest,
    ::testing::ValuesIn(std::vector<BadHeaderCase>{
        {"InvalidJson", R"({"w": {"dtype": "F32",)", 0, kInvalid, {"not valid JSON"}},
        {"Garbage", "\x01\x02\xff", 0, kInvalid, {"not valid JSON"}},
        {"NotAnObjectArray", "[1, 2]", 0, kInvalid, {"array"}},
        {"NotAnObjectString", "\"w\"", 0, kInvalid, {"string"}},
        {"EntryNotObject", R"({"w": [1]})", 0, kInvalid, {"'w'", "expected an object"}},
        {"MissingDtype", R"({"w": {"shape": [1], "data_offsets": [0, 4]}})", 4, kInvalid,
         {"'w'", "dtype"}},
        {"MissingShape", R"({"w": {"dtype": "F32", "data_offsets": [0, 4]}})", 4, kInvalid,
         {"'w'", "shape"}},
        {"MissingOffsets", R"({"w": {"dtype": "F32", "shape": [1]}})", 4, kInvalid,
         {"'w'", "data_offsets"}},
        {"DtypeNotString", R"({"w": {"dtype": 5, "shape": [1], "data_offsets": [0, 4]}})", 4,
         kInvalid, {"'w'", "dtype"}},
        {"ShapeNotArray", R"({"w": {"dtype": "F32", "shape": "1", "data_offsets": [0, 4]}})", 4,
         kInvalid, {"'w'", "shape"}},
        {"OffsetsNotArray", R"({"w": {"dtype": "F32", "shape": [1], "data_offsets": {"a": 0}}})",
         4, kInvalid, {"'w'", "data_offsets"}},
        {"OffsetsOneElement", R"({"w": {"dtype": "F32", "shape": [1], "data_offsets": [4]}})", 4,
         kInvalid, {"'w'", "1 elements"}},
        {"OffsetsThreeElements",
         R"({"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4, 8]}})", 8, kInvalid,
         {"'w'", "3 elements"}},
        {"OffsetString", R"({"w": {"dtype": "F32", "shape": [1], "data_offsets": ["0", 4]}})", 4,
         kInvalid, {"'w'", "data_offsets"}},
        {"NegativeOffset", R"({"w": {"dtype": "F32", "shape": [1], "data_offsets": [-4, 0]}})", 4,
         kInvalid, {"'w'", "-4"}},
        {"NegativeDim", R"({"w": {"dtype": "F32", "shape": [2, -3], "data_offsets": [0, 4]}})", 4,
         kInvalid, {"'w'", "dimension 1 is -3"}},
        {"FloatDim", R"({"w": {"dtype": "F32", "shape": [2.5], "data_offsets": [0, 4]}})", 4,
         kInvalid, {"'w'", "2.5"}},
        {"StringDim", R"({"w": {"dtype": "F32", "shape": ["2"], "data_offsets": [0, 8]}})", 8,
         kInvalid, {"'w'", "dimension 0"}},
        {"HugeDim",
         R"({"w": {"dtype": "U8", "shape": [18446744073709551615], "data_offsets": [0, 4]}})", 4,
         kInvalid, {"'w'", "overflows"}},
        {"DimPastUint64",
         R"({"w": {"dtype": "U8", "shape": [18446744073709551616], "data_offsets": [0, 4]}})", 4,
         kInvalid, {"'w'", "dimension 0"}},
        {"ShapeOverflow",
         R"({"w": {"dtype": "BF16", "shape": [4294967296, 4294967296], "data_offsets": [0, 0]}})",
         0, kInvalid, {"'w'", "overflows"}},
        {"ByteSizeOverflow",
         R"({"w": {"dtype": "I64", "shape": [4611686018427387904], "data_offsets": [0, 0]}})", 0,
         kInvalid, {"'w'", "overflows"}},
        {"OverflowBehindZeroDim",
         R"({"w": {"dtype": "F32", "shape": [0, 4294967296, 4294967296], "data_offsets": [0, 0]}})",
         0, kInvalid, {"'w'", "overflows"}},
        {"UnknownDtype", R"({"w": {"dtype": "F64", "shape": [1], "data_offsets": [0, 8]}})", 8,
         kInvalid, {"'w'", "unknown dtype 'F64'"}},
        {"LowercaseDtype", R"({"w": {"dtype": "bf16", "shape": [1], "data_offsets": [0, 2]}})", 2,
         kInvalid, {"'w'", "bf16"}},
        {"EndBeforeBegin", R"({"w": {"dtype": "F32", "shape": [1], "data_offsets": [8, 4]}})", 8,
         kInvalid, {"'w'", "[8, 4]"}},
        {"EndPastData", R"({"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}})", 12,
         kDataLoss, {"'w'", "[0, 16]", "12 bytes"}},
        {"BeginPastData", R"({"w": {"dtype": "F32", "shape": [1], "data_offsets": [100, 104]}})",
         16, kDataLoss, {"'w'", "[100, 104]"}},
        {"ShapeMismatch", R"({"w": {"dtype": "BF16", "shape": [4, 8], "data_offsets": [0, 100]}})",
         100, kInvalid, {"'w'", "data_offsets [0, 100] do not match shape [4, 8] of BF16 (64 bytes)"}},
        {"Overlap",
         R"({"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]},
             "b": {"dtype": "F32", "shape": [2], "data_offsets": [8, 16]}})",
         16, kInvalid, {"'a'", "'b'", "overlap"}},
        {"OverlapContained",
         R"({"a": {"dtype": "U8", "shape": [16], "data_offsets": [0, 16]},
             "b": {"dtype": "U8", "shape": [2], "data_offsets": [4, 6]},
             "c": {"dtype": "U8", "shape": [2], "data_offsets": [10, 12]}})",
         16, kInvalid, {"'a'", "overlap"}},
        {"DuplicateName",
         R"({"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]},
             "w": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}})",
         8, kInvalid, {"'w'", "twice"}},
        {"MetadataNotObject", R"({"__metadata__": [1]})", 0, kInvalid, {"__metadata__"}},
        {"MetadataValueNotString", R"({"__metadata__": {"format": 1}})", 0, kInvalid,
         {"__metadata__", "'format'"}},
    }),
    [](const ::testing::TestParamInfo<BadHeaderCase>& info) { return info.param.label; });

TEST(ParseSafetensorsHeaderTest, ExactShapeMismatchMessage) {
  auto parsed = ParseSafetensorsHeader(
      MakeFileBytes(R"({"model.layers.0.mlp.gate.weight": {"dtype": "BF16", "shape": [4, 8],
                        "data_offsets": [0, 100]}})",
                    100),
      "model-00002-of-00003.safetensors");
  EXPECT_EQ(parsed.status().message(),
            "model-00002-of-00003.safetensors: tensor 'model.layers.0.mlp.gate.weight': "
            "data_offsets [0, 100] do not match shape [4, 8] of BF16 (64 bytes)");
}

TEST(ParseSafetensorsHeaderTest, RejectsShortAndTruncatedFiles) {
  for (size_t size : {0, 1, 7}) {
    std::vector<std::byte> bytes(size, std::byte{0});
    auto parsed = ParseSafetensorsHeader(bytes, "short.safetensors");
    EXPECT_EQ(parsed.status().code(), absl::StatusCode::kDataLoss);
    EXPECT_THAT(parsed.status().message(), HasSubstr("short.safetensors"));
  }
  // The header length is one byte more than the file holds.
  std::vector<std::byte> bytes = MakeFileBytes("{}", 0);
  bytes[0] = std::byte{3};
  auto parsed = ParseSafetensorsHeader(bytes, "x.safetensors");
  EXPECT_EQ(parsed.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(parsed.status().message(), HasSubstr("x.safetensors"));
}

TEST(ParseSafetensorsHeaderTest, RejectsHeaderLengthPastEndAndAbsurd) {
  std::vector<std::byte> bytes = MakeFileBytes("{}", 0);
  bytes[0] = std::byte{200};
  auto past_end = ParseSafetensorsHeader(bytes, "trunc.safetensors");
  EXPECT_EQ(past_end.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(past_end.status().message(), AllOf(HasSubstr("trunc.safetensors"), HasSubstr("200")));

  bytes[7] = std::byte{0x80};  // 2^63 + 200
  auto absurd = ParseSafetensorsHeader(bytes, "huge.safetensors");
  EXPECT_EQ(absurd.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(absurd.status().message(), HasSubstr("huge.safetensors"));
}

TEST(ParseSafetensorsHeaderTest, AcceptsGapsPaddingAndNullMetadata) {
  auto parsed = ParseSafetensorsHeader(
      MakeFileBytes(R"({"__metadata__": null, "b": {"dtype": "U8", "shape": [2],
                        "data_offsets": [6, 8]}, "a": {"dtype": "U8", "shape": [2],
                        "data_offsets": [0, 2]}, "e": {"dtype": "F32", "shape": [0],
                        "data_offsets": [1, 1]}}      )",
                    10),
      "ok.safetensors");
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  ASSERT_EQ(parsed->tensors.size(), 3u);
  EXPECT_EQ(parsed->tensors[0].name, "a");  // sorted by offset
  EXPECT_EQ(parsed->tensors[1].name, "e");
  EXPECT_EQ(parsed->tensors[2].name, "b");
  EXPECT_EQ(parsed->data_size, 10u);
  EXPECT_EQ(parsed->tensors[2].file, "ok.safetensors");
}

// Random corruption of a valid file never crashes (the fuzzer does this at scale).
TEST(ParseSafetensorsHeaderTest, SurvivesRandomCorruption) {
  const std::string header =
      R"({"__metadata__": {"format": "pt"}, "a": {"dtype": "BF16", "shape": [2, 3],
          "data_offsets": [0, 12]}, "b": {"dtype": "I64", "shape": [1], "data_offsets": [12, 20]}})";
  const std::vector<std::byte> valid = MakeFileBytes(header, 20);
  ASSERT_TRUE(ParseSafetensorsHeader(valid, "v").ok());
  std::mt19937 rng(1234);
  for (int iter = 0; iter < 3000; ++iter) {
    std::vector<std::byte> bytes = valid;
    const int flips = 1 + static_cast<int>(rng() % 4);
    for (int f = 0; f < flips; ++f) bytes[rng() % bytes.size()] = static_cast<std::byte>(rng());
    if (rng() % 4 == 0) bytes.resize(rng() % bytes.size());
    (void)ParseSafetensorsHeader(bytes, "corrupt");
  }
}

TEST_F(SafetensorsTest, OpenReportsMissingShortTruncatedAndNonRegularFiles) {
  auto missing = SafetensorsFile::Open(Path("nope.safetensors"));
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(missing.status().message(), HasSubstr("nope.safetensors"));

  WriteRaw(Path("empty.safetensors"), "");
  auto empty = SafetensorsFile::Open(Path("empty.safetensors"));
  EXPECT_EQ(empty.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(empty.status().message(), HasSubstr("empty.safetensors"));

  const std::string path = Path("cut.safetensors");
  WriteF32Shard(path, {"a", "b"});
  fs::resize_file(path, fs::file_size(path) - 3);
  auto cut = SafetensorsFile::Open(path);
  EXPECT_EQ(cut.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(cut.status().message(), AllOf(HasSubstr(path), HasSubstr("'b'")));

  fs::resize_file(path, 12);  // inside the header
  cut = SafetensorsFile::Open(path);
  EXPECT_EQ(cut.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(cut.status().message(), HasSubstr(path));

  const std::string mismatch = Path("mismatch.safetensors");
  WriteBytes(mismatch, MakeFileBytes(
                           R"({"w": {"dtype": "F16", "shape": [3], "data_offsets": [0, 4]}})", 4));
  auto bad = SafetensorsFile::Open(mismatch);
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(bad.status().message(), AllOf(HasSubstr(mismatch), HasSubstr("'w'")));

  auto dir = SafetensorsFile::Open(dir_);
  EXPECT_EQ(dir.status().code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(SafetensorsTest, ShardedModelWithIndex) {
  const std::string d = Path("model");
  fs::create_directory(d);
  WriteF32Shard(d + "/model-00001-of-00003.safetensors", {"embed", "layers.0.w"});
  WriteF32Shard(d + "/model-00002-of-00003.safetensors", {"layers.1.w"});
  WriteF32Shard(d + "/model-00003-of-00003.safetensors", {"lm_head", "norm"});
  WriteF32Shard(d + "/consolidated.safetensors", {"embed"});  // ignored: not in the index
  WriteRaw(d + "/model.safetensors.index.json", R"({"metadata": {"total_size": 40},
    "weight_map": {"embed": "model-00001-of-00003.safetensors",
                   "layers.0.w": "model-00001-of-00003.safetensors",
                   "layers.1.w": "model-00002-of-00003.safetensors",
                   "lm_head": "model-00003-of-00003.safetensors",
                   "norm": "model-00003-of-00003.safetensors"}})");
  auto model = SafetensorsModel::Open(d);
  ASSERT_TRUE(model.ok()) << model.status();
  EXPECT_EQ((*model)->index_path(), d + "/model.safetensors.index.json");
  EXPECT_THAT((*model)->shard_paths(), ElementsAre(d + "/model-00001-of-00003.safetensors",
                                                   d + "/model-00002-of-00003.safetensors",
                                                   d + "/model-00003-of-00003.safetensors"));
  EXPECT_THAT((*model)->tensor_names(),
              ElementsAre("embed", "layers.0.w", "layers.1.w", "lm_head", "norm"));
  EXPECT_EQ((*model)->num_tensors(), 5u);
  EXPECT_TRUE((*model)->Contains("norm"));
  EXPECT_EQ((*model)->Find("layers.1.w")->file, d + "/model-00002-of-00003.safetensors");
  EXPECT_EQ((*model)->ShardOf("lm_head")->path(), d + "/model-00003-of-00003.safetensors");
  auto norm = (*model)->GetTensor("norm");
  ASSERT_TRUE(norm.ok());
  EXPECT_EQ(norm->as<float>()[0], 2.0f);
  EXPECT_EQ(norm->as<float>()[1], -2.0f);
  auto missing = (*model)->GetTensor("model.nope");
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(missing.status().message(), "tensor 'model.nope' not found in " + d);

  // The index itself can be named.
  auto by_index = SafetensorsModel::Open(d + "/model.safetensors.index.json");
  ASSERT_TRUE(by_index.ok()) << by_index.status();
  EXPECT_EQ((*by_index)->num_tensors(), 5u);
}

TEST_F(SafetensorsTest, ModelFromFileSingleFileDirAndGlob) {
  WriteF32Shard(Path("solo.safetensors"), {"x"});
  auto file = SafetensorsModel::Open(Path("solo.safetensors"));
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_THAT((*file)->tensor_names(), ElementsAre("x"));

  fs::create_directory(Path("single"));
  WriteF32Shard(Path("single/model.safetensors"), {"y"});
  WriteF32Shard(Path("single/other.safetensors"), {"y"});  // ignored
  auto single = SafetensorsModel::Open(Path("single"));
  ASSERT_TRUE(single.ok()) << single.status();
  EXPECT_THAT((*single)->shard_paths(), ElementsAre(Path("single/model.safetensors")));

  fs::create_directory(Path("glob"));
  WriteF32Shard(Path("glob/b.safetensors"), {"b"});
  WriteF32Shard(Path("glob/a.safetensors"), {"a"});
  WriteRaw(Path("glob/README.md"), "hi");
  auto glob = SafetensorsModel::Open(Path("glob"));
  ASSERT_TRUE(glob.ok()) << glob.status();
  EXPECT_THAT((*glob)->shard_paths(),
              ElementsAre(Path("glob/a.safetensors"), Path("glob/b.safetensors")));

  fs::create_directory(Path("none"));
  auto none = SafetensorsModel::Open(Path("none"));
  EXPECT_EQ(none.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(none.status().message(), HasSubstr(Path("none")));
  auto absent = SafetensorsModel::Open(Path("absent"));
  EXPECT_EQ(absent.status().code(), absl::StatusCode::kNotFound);
}

TEST_F(SafetensorsTest, DuplicateNamesAcrossShards) {
  fs::create_directory(Path("dup"));
  WriteF32Shard(Path("dup/a.safetensors"), {"w", "x"});
  WriteF32Shard(Path("dup/b.safetensors"), {"w"});
  auto glob = SafetensorsModel::Open(Path("dup"));
  EXPECT_EQ(glob.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(glob.status().message(),
              AllOf(HasSubstr("'w'"), HasSubstr("a.safetensors"), HasSubstr("b.safetensors")));

  WriteRaw(Path("dup/model.safetensors.index.json"),
           R"({"weight_map": {"w": "a.safetensors", "x": "a.safetensors", "y": "b.safetensors"}})");
  auto indexed = SafetensorsModel::Open(Path("dup"));
  EXPECT_EQ(indexed.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(indexed.status().message(), HasSubstr("'w'"));
}

// Each malformed index: (index text, code, text the message must contain).
TEST_F(SafetensorsTest, BadIndexes) {
  struct Case {
    std::string index;
    absl::StatusCode code;
    std::string mention;
  };
  const std::vector<Case> cases = {
      {R"({"weight_map": {"w": "a.safetensors",)", kInvalid, "not valid JSON"},
      {R"([1, 2])", kInvalid, "expected an object"},
      {R"({"metadata": {}})", kInvalid, "weight_map"},
      {R"({"weight_map": ["a.safetensors"]})", kInvalid, "weight_map"},
      {R"({"weight_map": {"w": 3}})", kInvalid, "'w'"},
      {R"({"weight_map": {"w": "../a.safetensors"}})", kInvalid, "'w'"},
      {R"({"weight_map": {"w": "/etc/passwd"}})", kInvalid, "'w'"},
      {R"({"weight_map": {"w": "a.safetensors", "v": "gone.safetensors"}})",
       absl::StatusCode::kNotFound, "gone.safetensors"},
      {R"({"weight_map": {"w": "a.safetensors", "q": "a.safetensors"}})",
       absl::StatusCode::kNotFound, "'q'"},
      {R"({"weight_map": {"w": "b.safetensors", "z": "b.safetensors"}})",
       absl::StatusCode::kNotFound, "'w'"},
      {R"({"weight_map": {"w": "a.safetensors", "c": "corrupt.safetensors"}})", kDataLoss,
       "corrupt.safetensors"},
  };
  const std::string d = Path("idx");
  fs::create_directory(d);
  WriteF32Shard(d + "/a.safetensors", {"w"});
  WriteF32Shard(d + "/b.safetensors", {"z"});
  WriteRaw(d + "/corrupt.safetensors", "\x10\x00\x00");
  for (const Case& c : cases) {
    SCOPED_TRACE(c.index);
    WriteRaw(d + "/model.safetensors.index.json", c.index);
    auto model = SafetensorsModel::Open(d);
    ASSERT_FALSE(model.ok());
    EXPECT_EQ(model.status().code(), c.code) << model.status();
    EXPECT_THAT(model.status().message(), HasSubstr(c.mention)) << model.status();
    EXPECT_THAT(model.status().message(), HasSubstr(d)) << model.status();
  }
}

TEST_F(SafetensorsTest, WriterRejectsBadInput) {
  const auto data = ToBytes<float>({1.0f});
  const TensorView view = MakeView(DType::kF32, {1}, data);
  EXPECT_EQ(WriteSafetensors(Path("d.safetensors"), {{"a", view}, {"a", view}}).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(WriteSafetensors(Path("m.safetensors"), {{"__metadata__", view}}).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(WriteSafetensors(Path("u.safetensors"), {{"bad\xff", view}}).code(),
            absl::StatusCode::kInvalidArgument);
  TensorView no_data = view;
  no_data.data = nullptr;
  EXPECT_EQ(WriteSafetensors(Path("n.safetensors"), {{"a", no_data}}).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_FALSE(fs::exists(Path("d.safetensors")));
  EXPECT_EQ(WriteSafetensors(Path("no/such/dir.safetensors"), {{"a", view}}).code(),
            absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace krasis
