// Tests for the GGUF reader: metadata of every type, tensor layout with default and
// custom alignment, every malformed file the reader must reject with a status that
// names the file and the problem, every truncation of a valid file, dequantization
// of each supported ggml format against the format's formulas (blocks built by the
// packers in gguf_test_util.h from known values), and MoE expert lookup in merged
// and per-expert files.
#include "common/gguf.h"

#include <stdlib.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include "common/dtype.h"
#include "common/status.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/common/gguf_test_util.h"

namespace krasis {
namespace {

namespace fs = std::filesystem;
using namespace gguf_test;  // NOLINT: the test vocabulary
using ::testing::AllOf;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

std::span<const std::byte> AsSpan(const Bytes& bytes) {
  return {reinterpret_cast<const std::byte*>(bytes.data()), bytes.size()};
}

absl::StatusOr<std::unique_ptr<GgufFile>> ParseBytes(const Bytes& bytes,
                                                     std::string_view name = "test.gguf") {
  return GgufFile::Parse(AsSpan(bytes), name);
}

template <typename T>
Bytes ToBytes(const std::vector<T>& values) {
  Bytes out(values.size() * sizeof(T));
  if (!out.empty()) std::memcpy(out.data(), values.data(), out.size());
  return out;
}

// f16 bits of +-2^e (normal range).
uint16_t F16Pow2(int e, bool negative = false) {
  return static_cast<uint16_t>((negative ? 0x8000 : 0) | ((e + 15) << 10));
}
float Pow2(int e, bool negative = false) { return (negative ? -1.0f : 1.0f) * std::ldexp(1.0f, e); }

// ---------------------------------------------------------------------------
// ggml types

TEST(GgmlTypeTest, KnowsBlockSizesOfEveryType) {
  struct Expected {
    uint32_t number;
    std::string_view name;
    int64_t block, bytes;
  };
  for (const Expected& e : std::vector<Expected>{
           {0, "F32", 1, 4},         {1, "F16", 1, 2},         {2, "Q4_0", 32, 18},
           {3, "Q4_1", 32, 20},      {6, "Q5_0", 32, 22},      {7, "Q5_1", 32, 24},
           {8, "Q8_0", 32, 34},      {9, "Q8_1", 32, 36},      {10, "Q2_K", 256, 84},
           {11, "Q3_K", 256, 110},   {12, "Q4_K", 256, 144},   {13, "Q5_K", 256, 176},
           {14, "Q6_K", 256, 210},   {15, "Q8_K", 256, 292},   {16, "IQ2_XXS", 256, 66},
           {17, "IQ2_XS", 256, 74},  {18, "IQ3_XXS", 256, 98}, {19, "IQ1_S", 256, 50},
           {20, "IQ4_NL", 32, 18},   {21, "IQ3_S", 256, 110},  {22, "IQ2_S", 256, 82},
           {23, "IQ4_XS", 256, 136}, {24, "I8", 1, 1},         {25, "I16", 1, 2},
           {26, "I32", 1, 4},        {27, "I64", 1, 8},        {28, "F64", 1, 8},
           {29, "IQ1_M", 256, 56},   {30, "BF16", 1, 2},       {34, "TQ1_0", 256, 54},
           {35, "TQ2_0", 256, 66},   {39, "MXFP4", 32, 17}}) {
    SCOPED_TRACE(e.name);
    const GgmlTypeInfo* info = FindGgmlType(e.number);
    ASSERT_NE(info, nullptr);
    EXPECT_EQ(static_cast<uint32_t>(info->type), e.number);
    EXPECT_EQ(info->name, e.name);
    EXPECT_EQ(GgmlTypeName(info->type), e.name);
    EXPECT_EQ(info->block_size, e.block);
    EXPECT_EQ(info->type_size, e.bytes);
  }
  for (uint32_t removed : {4u, 5u, 31u, 32u, 33u, 36u, 37u, 38u, 40u, 1000u}) {
    EXPECT_EQ(FindGgmlType(removed), nullptr) << removed;
  }
  EXPECT_EQ(*GgmlRowBytes(GgmlType::kQ4_K, 512), 288u);
  EXPECT_EQ(*GgmlRowBytes(GgmlType::kBF16, 7), 14u);
  EXPECT_EQ(GgmlRowBytes(GgmlType::kQ8_0, 48).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(GgmlRowBytes(GgmlType::kF32, -1).status().code(), absl::StatusCode::kInvalidArgument);
}

// ---------------------------------------------------------------------------
// Metadata

TEST(GgufMetadataTest, RoundTripsEveryType) {
  GgufBuilder b;
  b.Kv("u8", U8(200))
      .Kv("i8", I8(-100))
      .Kv("u16", U16(60000))
      .Kv("i16", I16(-30000))
      .Kv("u32", U32(4000000000u))
      .Kv("i32", I32(-2000000000))
      .Kv("f32", F32(1.5f))
      .Kv("true", Bool(true))
      .Kv("false", Bool(false))
      .Kv("str", Str("h\xc3\xa9llo, GGUF"))
      .Kv("empty_str", Str(""))
      .Kv("u64", U64((uint64_t{1} << 63) + 5))
      .Kv("i64", I64(-(int64_t{1} << 62)))
      .Kv("f64", F64(-1e300))
      .Kv("arr_i32", Arr(kI32, {I32(1), I32(-2), I32(3)}))
      .Kv("arr_f32", Arr(kF32, {F32(0.25f), F32(-8.0f)}))
      .Kv("arr_u8", Arr(kU8, {U8(0), U8(255)}))
      .Kv("arr_bool", Arr(kBool, {Bool(true), Bool(false), Bool(true)}))
      .Kv("arr_str", Arr(kStr, {Str("a"), Str(""), Str("<|im_end|>")}))
      .Kv("arr_u64", Arr(kU64, {U64(~uint64_t{0})}))
      .Kv("arr_f64", Arr(kF64, {F64(2.5)}))
      .Kv("arr_i16", Arr(kI16, {I16(-7)}))
      .Kv("arr_empty", Arr(kF32, {}))
      .Kv("nested",
          Arr(kArr, {Arr(kI32, {I32(1), I32(2)}), Arr(kI32, {I32(3)}), Arr(kStr, {Str("x")})}));
  auto file = ParseBytes(b.Build());
  ASSERT_TRUE(file.ok()) << file.status();
  const GgufFile& f = **file;
  EXPECT_EQ(f.version(), 3u);
  EXPECT_EQ(f.alignment(), 32u);
  EXPECT_TRUE(f.tensors().empty());
  ASSERT_EQ(f.metadata().size(), 24u);
  EXPECT_EQ(f.metadata()[0].first, "u8");  // file order
  EXPECT_EQ(f.metadata()[23].first, "nested");

  EXPECT_EQ(*f.GetInt("u8"), 200);
  EXPECT_EQ(*f.GetInt("i8"), -100);
  EXPECT_EQ(*f.GetInt("u16"), 60000);
  EXPECT_EQ(*f.GetInt("i16"), -30000);
  EXPECT_EQ(*f.GetInt("u32"), 4000000000LL);
  EXPECT_EQ(*f.GetInt("i32"), -2000000000);
  EXPECT_EQ(*f.GetFloat("f32"), 1.5);
  EXPECT_EQ(*f.GetBool("true"), true);
  EXPECT_EQ(*f.GetBool("false"), false);
  EXPECT_EQ(*f.GetString("str"), "h\xc3\xa9llo, GGUF");
  EXPECT_EQ(*f.GetString("empty_str"), "");
  EXPECT_EQ(f.FindMetadata("u64")->AsUint(), (uint64_t{1} << 63) + 5);
  EXPECT_EQ(f.FindMetadata("u64")->AsInt(), std::nullopt);  // does not fit
  EXPECT_EQ(*f.GetInt("i64"), -(int64_t{1} << 62));
  EXPECT_EQ(f.FindMetadata("i64")->AsUint(), std::nullopt);
  EXPECT_EQ(*f.GetFloat("f64"), -1e300);
  EXPECT_EQ(*f.GetFloat("i32"), -2e9);  // integers convert
  for (const auto& [key, type] :
       std::vector<std::pair<std::string, GgufValueType>>{{"u8", GgufValueType::kUint8},
                                                          {"i8", GgufValueType::kInt8},
                                                          {"u16", GgufValueType::kUint16},
                                                          {"i16", GgufValueType::kInt16},
                                                          {"u32", GgufValueType::kUint32},
                                                          {"i32", GgufValueType::kInt32},
                                                          {"f32", GgufValueType::kFloat32},
                                                          {"true", GgufValueType::kBool},
                                                          {"str", GgufValueType::kString},
                                                          {"arr_i32", GgufValueType::kArray},
                                                          {"u64", GgufValueType::kUint64},
                                                          {"i64", GgufValueType::kInt64},
                                                          {"f64", GgufValueType::kFloat64}}) {
    EXPECT_EQ(f.FindMetadata(key)->type(), type) << key;
  }

  EXPECT_THAT(*(*f.GetArray("arr_i32"))->ToInts(), ElementsAre(1, -2, 3));
  EXPECT_EQ((*f.GetArray("arr_i32"))->type(), GgufValueType::kInt32);
  EXPECT_THAT(*(*f.GetArray("arr_f32"))->ToFloats(), ElementsAre(0.25, -8.0));
  EXPECT_THAT(*(*f.GetArray("arr_u8"))->ToInts(), ElementsAre(0, 255));
  const GgufArray* bools = *f.GetArray("arr_bool");
  ASSERT_EQ(bools->size(), 3u);
  EXPECT_EQ(bools->at(0).AsBool(), true);
  EXPECT_EQ(bools->at(1).AsBool(), false);
  EXPECT_EQ(bools->ToInts(), std::nullopt);
  EXPECT_THAT((*f.GetArray("arr_str"))->strings(), ElementsAre("a", "", "<|im_end|>"));
  EXPECT_EQ(*(*f.GetArray("arr_str"))->at(2).AsString(), "<|im_end|>");
  EXPECT_EQ((*f.GetArray("arr_u64"))->at(0).AsUint(), ~uint64_t{0});
  EXPECT_EQ((*f.GetArray("arr_f64"))->at(0).AsFloat(), 2.5);
  EXPECT_THAT(*(*f.GetArray("arr_i16"))->ToInts(), ElementsAre(-7));
  EXPECT_EQ((*f.GetArray("arr_empty"))->size(), 0u);
  const GgufArray* nested = *f.GetArray("nested");
  ASSERT_EQ(nested->size(), 3u);
  EXPECT_EQ(nested->type(), GgufValueType::kArray);
  EXPECT_THAT(*nested->at(0).AsArray()->ToInts(), ElementsAre(1, 2));
  EXPECT_THAT(*nested->at(1).AsArray()->ToInts(), ElementsAre(3));
  EXPECT_THAT(nested->at(2).AsArray()->strings(), ElementsAre("x"));
}

TEST(GgufMetadataTest, GettersNameTheKeyAndTheTypeFound) {
  auto file = ParseBytes(
      GgufBuilder().Kv("general.name", Str("m")).Kv("n", U64(~uint64_t{0})).Build(), "meta.gguf");
  ASSERT_TRUE(file.ok()) << file.status();
  auto missing = (*file)->GetString("general.architecture");
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(missing.status().message(),
              AllOf(HasSubstr("meta.gguf"), HasSubstr("general.architecture")));
  auto wrong = (*file)->GetInt("general.name");
  EXPECT_EQ(wrong.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(wrong.status().message(), AllOf(HasSubstr("'general.name'"), HasSubstr("string")));
  EXPECT_THAT((*file)->GetInt("n").status().message(), HasSubstr("uint64"));
  EXPECT_FALSE((*file)->GetArray("n").ok());
  EXPECT_FALSE((*file)->GetBool("n").ok());
  EXPECT_EQ((*file)->FindMetadata("nope"), nullptr);
}

// ---------------------------------------------------------------------------
// Tensors

TEST(GgufTensorTest, InfosAndOffsetsWithDefaultAlignment) {
  const Bytes w = ToBytes<float>({1, 2, 3, 4, 5, 6});           // [3, 2] F32: 24 bytes
  const Bytes h = ToBytes<uint16_t>({0x3C00, 0xC000, 0x3800});  // [3] F16: 6 bytes
  Bytes q(18 * 2, 0x11);                                        // [32, 2] Q4_0: 36 bytes
  GgufBuilder b;
  b.Kv("general.architecture", Str("test"))
      .Tensor({"w", kTF32, {3, 2}, w})
      .Tensor({"h", kTF16, {3}, h})
      .Tensor({"q", kTQ4_0, {32, 2}, q});
  const Bytes bytes = b.Build();
  auto file = ParseBytes(bytes);
  ASSERT_TRUE(file.ok()) << file.status();
  const GgufFile& f = **file;
  EXPECT_EQ(f.data_offset() % 32, 0u);
  EXPECT_EQ(f.data_offset(), b.DataOffset());
  EXPECT_EQ(f.file_size(), bytes.size());
  ASSERT_EQ(f.tensors().size(), 3u);
  const std::vector<std::tuple<std::string, GgmlType, Shape, uint64_t, uint64_t>> expected = {
      {"w", GgmlType::kF32, {3, 2}, 0, 24},
      {"h", GgmlType::kF16, {3}, 32, 6},
      {"q", GgmlType::kQ4_0, {32, 2}, 64, 36}};
  for (size_t i = 0; i < expected.size(); ++i) {
    const GgufTensor& t = f.tensors()[i];
    const auto& [name, type, shape, offset, nbytes] = expected[i];
    SCOPED_TRACE(name);
    EXPECT_EQ(t.name, name);
    EXPECT_EQ(t.type, type);
    EXPECT_EQ(t.shape, shape);
    EXPECT_EQ(t.offset, offset);
    EXPECT_EQ(t.offset, b.OffsetOf(i));
    EXPECT_EQ(t.nbytes, nbytes);
    EXPECT_EQ(t.data, AsSpan(bytes).data() + f.data_offset() + offset);
    EXPECT_EQ(f.FindTensor(name), &t);
  }
  EXPECT_EQ(f.tensors()[2].num_elements(), 64);
  EXPECT_EQ(std::memcmp(f.tensors()[0].data, w.data(), w.size()), 0);
  EXPECT_EQ(std::memcmp(f.tensors()[1].data, h.data(), h.size()), 0);
  EXPECT_EQ(f.FindTensor("nope"), nullptr);
  auto missing = f.GetTensor("blk.0.nope.weight");
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(missing.status().message(),
              AllOf(HasSubstr("test.gguf"), HasSubstr("blk.0.nope.weight")));
}

TEST(GgufTensorTest, CustomAlignment) {
  for (uint32_t alignment : {1u, 8u, 64u, 4096u}) {
    SCOPED_TRACE(alignment);
    GgufBuilder b;
    b.Alignment(alignment)
        .Tensor({"a", kTF32, {3}, ToBytes<float>({1, 2, 3})})
        .Tensor({"b", kTBF16, {5}, ToBytes<uint16_t>({0x3F80, 0xC020, 0, 0, 0x4000})});
    const Bytes bytes = b.Build();
    auto file = ParseBytes(bytes);
    ASSERT_TRUE(file.ok()) << file.status();
    EXPECT_EQ((*file)->alignment(), alignment);
    EXPECT_EQ((*file)->data_offset() % alignment, 0u);
    EXPECT_EQ((*file)->data_offset(), b.DataOffset());
    const GgufTensor* t = (*file)->FindTensor("b");
    ASSERT_NE(t, nullptr);
    EXPECT_EQ(t->offset,
              alignment >= 12 ? alignment : (12 + alignment - 1) / alignment * alignment);
    float out[5];
    ASSERT_TRUE(DequantizeRow(t->type, t->data, 5, out).ok());
    EXPECT_THAT(out, ElementsAre(1.0f, -2.5f, 0.0f, 0.0f, 2.0f));
  }
}

TEST(GgufTensorTest, VersionTwoScalarsEmptyTensorsAndNoTensors) {
  GgufBuilder b;
  b.Version(2)
      .Tensor({"scalar", kTF32, {}, ToBytes<float>({2.5f})})
      .Tensor({"empty", kTQ4_K, {256, 0}, {}})
      .Tensor({"after", kTF32, {1}, ToBytes<float>({-1.0f})});
  auto file = ParseBytes(b.Build());
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_EQ((*file)->version(), 2u);
  const GgufTensor* scalar = (*file)->FindTensor("scalar");
  EXPECT_TRUE(scalar->shape.empty());
  EXPECT_EQ(scalar->nbytes, 4u);
  const GgufTensor* empty = (*file)->FindTensor("empty");
  EXPECT_EQ(empty->nbytes, 0u);
  EXPECT_EQ(empty->data, nullptr);
  EXPECT_EQ(empty->num_elements(), 0);

  // Only metadata: the data section may be absent (no padding at the end).
  auto bare = ParseBytes(GgufBuilder().Kv("k", U8(1)).Build());
  ASSERT_TRUE(bare.ok()) << bare.status();
  EXPECT_TRUE((*bare)->tensors().empty());
  auto nothing = ParseBytes(GgufBuilder().Build());
  ASSERT_TRUE(nothing.ok()) << nothing.status();
}

class GgufFileTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = ::testing::TempDir() + "/gguf_test_XXXXXX";
    ASSERT_NE(mkdtemp(tmpl.data()), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override {
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }
  std::string Write(const std::string& name, const Bytes& bytes) {
    const std::string path = dir_ + "/" + name;
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out.write(reinterpret_cast<const char*>(bytes.data()),
              static_cast<std::streamsize>(bytes.size()));
    return path;
  }
  std::string dir_;
};

TEST_F(GgufFileTest, OpenMapsTheFile) {
  const std::string path = Write("m.gguf", GgufBuilder()
                                               .Kv("general.architecture", Str("qwen3moe"))
                                               .Tensor({"w", kTF32, {2}, ToBytes<float>({7, -7})})
                                               .Build());
  auto file = GgufFile::Open(path);
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_EQ((*file)->name(), path);
  EXPECT_EQ((*file)->file_size(), fs::file_size(path));
  EXPECT_EQ(*(*file)->GetString("general.architecture"), "qwen3moe");
  float out[2];
  const GgufTensor* w = *(*file)->GetTensor("w");
  ASSERT_TRUE(DequantizeRow(w->type, w->data, 2, out).ok());
  EXPECT_THAT(out, ElementsAre(7.0f, -7.0f));
}

TEST_F(GgufFileTest, OpenReportsMissingAndBadFiles) {
  auto missing = GgufFile::Open(dir_ + "/nope.gguf");
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(missing.status().message(), HasSubstr("nope.gguf"));
  auto directory = GgufFile::Open(dir_);
  EXPECT_EQ(directory.status().code(), absl::StatusCode::kInvalidArgument);
  const std::string empty = Write("empty.gguf", {});
  auto empty_file = GgufFile::Open(empty);
  EXPECT_FALSE(empty_file.ok());
  EXPECT_THAT(empty_file.status().message(), AllOf(HasSubstr(empty), HasSubstr("magic")));
  const Bytes valid = GgufBuilder().Tensor({"w", kTF32, {4}, ToBytes<float>({1, 2, 3, 4})}).Build();
  const std::string cut = Write("cut.gguf", Bytes(valid.begin(), valid.end() - 1));
  auto cut_file = GgufFile::Open(cut);
  EXPECT_EQ(cut_file.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(cut_file.status().message(), AllOf(HasSubstr(cut), HasSubstr("'w'")));
}

// ---------------------------------------------------------------------------
// Malformed files

struct BadFileCase {
  std::string label;
  std::function<Bytes()> make;
  absl::StatusCode code;
  std::vector<std::string> must_mention;
};

void PrintTo(const BadFileCase& c, std::ostream* os) { *os << c.label; }

class BadGgufTest : public ::testing::TestWithParam<BadFileCase> {};

TEST_P(BadGgufTest, IsRejectedWithAClearStatus) {
  const BadFileCase& c = GetParam();
  auto parsed = ParseBytes(c.make(), "bad.gguf");
  ASSERT_FALSE(parsed.ok());
  EXPECT_EQ(parsed.status().code(), c.code) << parsed.status();
  EXPECT_THAT(parsed.status().message(), HasSubstr("bad.gguf")) << parsed.status();
  for (const std::string& text : c.must_mention) {
    EXPECT_THAT(parsed.status().message(), HasSubstr(text)) << parsed.status();
  }
}

constexpr auto kInvalid = absl::StatusCode::kInvalidArgument;
constexpr auto kDataLoss = absl::StatusCode::kDataLoss;

// A valid file to break: one string, one F32 [4, 2] tensor.
GgufBuilder Valid() {
  GgufBuilder b;
  b.Kv("general.architecture", Str("test")).Tensor({"w", kTF32, {4, 2}, Bytes(32, 0)});
  return b;
}

Bytes Nested(int depth) {
  Val v = Arr(kI32, {I32(1)});
  for (int i = 1; i < depth; ++i) v = Arr(kArr, {v});
  return GgufBuilder().Kv("deep", v).Build();
}

Bytes Entry(uint64_t key_length, const std::string& rest) {
  Bytes e;
  PutU64(e, key_length);
  e.insert(e.end(), rest.begin(), rest.end());
  return e;
}

INSTANTIATE_TEST_SUITE_P(
    All, BadGgufTest,
    ::testing::ValuesIn(std::vector<BadFileCase>{
        {"Empty", [] { return Bytes{}; }, kInvalid, {"bad magic"}},
        {"BadMagic", [] { return Valid().Magic("GGML").Build(); }, kInvalid, {"bad magic", "GGML"}},
        {"Version1",
         [] { return Valid().Version(1).Build(); },
         kInvalid,
         {"unsupported GGUF version 1"}},
        {"Version4", [] { return Valid().Version(4).Build(); }, kInvalid, {"version 4"}},
        {"BigEndian", [] { return Valid().Version(0x03000000).Build(); }, kInvalid, {"big-endian"}},
        {"TruncatedHeader",
         [] {
           Bytes b = Valid().Build();
           b.resize(10);
           return b;
         },
         kDataLoss,
         {"tensor count at byte 8", "file ends at byte 10", "truncated"}},
        {"AbsurdTensorCount",
         [] { return Valid().TensorCount(uint64_t{1} << 60).Build(); },
         kDataLoss,
         {"tensor count 1152921504606846976"}},
        {"AbsurdMetadataCount",
         [] { return Valid().KvCount(uint64_t{1} << 60).Build(); },
         kDataLoss,
         {"metadata count"}},
        {"MetadataCountTooHigh",
         [] { return GgufBuilder().Kv("a", Str(std::string(40, 'x'))).KvCount(2).Build(); },
         kDataLoss,
         {"metadata entry 1", "truncated", "key length"}},
        {"AbsurdKeyLength",
         [] { return Valid().RawKv(Entry(uint64_t{1} << 62, "k")).Build(); },
         kDataLoss,
         {"metadata entry 1", "key", "runs past the end"}},
        {"EmptyKey",
         [] { return Valid().Kv("", U8(1)).Build(); },
         kInvalid,
         {"entry 1", "empty key"}},
        {"DuplicateKey",
         [] { return Valid().Kv("a", U8(1)).Kv("a", U8(2)).Build(); },
         kInvalid,
         {"'a'", "appears twice"}},
        {"UnknownValueType",
         [] {
           return Valid().Kv("k", Val{13, {0, 0, 0, 0}}).Build();
         },
         kInvalid,
         {"'k'", "unknown value type 13"}},
        {"UnknownArrayElementType",
         [] { return Valid().Kv("k", Arr(99, {})).Build(); },
         kInvalid,
         {"'k'", "unknown array element type 99"}},
        {"AbsurdArrayLength",
         [] { return Valid().Kv("k", Arr(kU32, {}, uint64_t{1} << 61)).Build(); },
         kDataLoss,
         {"'k'", "array of 2305843009213693952 uint32"}},
        {"AbsurdStringArrayLength",
         [] { return Valid().Kv("tokenizer.ggml.tokens", Arr(kStr, {Str("a")}, 1000)).Build(); },
         kDataLoss,
         {"'tokenizer.ggml.tokens'", "array of 1000 string"}},
        {"StringRunsPastEnd",
         [] {
           Val v{kStr, {}};
           PutU64(v.payload, 1000);
           v.payload.push_back('x');
           return GgufBuilder().Kv("s", v).Build();
         },
         kDataLoss,
         {"'s'", "string of 1000 bytes"}},
        {"StringElementRunsPastEnd",
         [] {
           Val v = Arr(kStr, {Str("ok")}, 2);
           PutU64(v.payload, 500);
           return GgufBuilder().Kv("s", v).Build();
         },
         kDataLoss,
         {"'s'", "element 1", "string of 500 bytes"}},
        {"ArraysNestedTooDeep",
         [] { return Nested(12); },
         kInvalid,
         {"'deep'", "nested deeper than 8"}},
        {"BoolNotZeroOrOne",
         [] { return Valid().Kv("flag", BoolRaw(2)).Build(); },
         kInvalid,
         {"'flag'", "bool value 2"}},
        {"BoolArrayElementNotZeroOrOne",
         [] {
           return Valid().Kv("flags", Arr(kBool, {Bool(true), BoolRaw(7)})).Build();
         },
         kInvalid,
         {"'flags'", "element 1", "bool value 7"}},
        {"AlignmentNotPowerOfTwo",
         [] { return Valid().Kv("general.alignment", U32(48)).LayoutAlignment(48).Build(); },
         kInvalid,
         {"general.alignment", "48", "power of two"}},
        {"AlignmentZero",
         [] { return Valid().Kv("general.alignment", U32(0)).Build(); },
         kInvalid,
         {"general.alignment", "uint32 0"}},
        {"AlignmentNegative",
         [] { return Valid().Kv("general.alignment", I32(-32)).Build(); },
         kInvalid,
         {"general.alignment", "int32 -32"}},
        {"AlignmentHuge",
         [] { return Valid().Kv("general.alignment", U64(uint64_t{1} << 40)).Build(); },
         kInvalid,
         {"general.alignment", "uint64 1099511627776"}},
        {"AlignmentNotAnInteger",
         [] { return Valid().Kv("general.alignment", Str("32")).Build(); },
         kInvalid,
         {"general.alignment", "string"}},
        {"EmptyTensorName",
         [] {
           return Valid().Tensor({"", kTF32, {1}, Bytes(4, 0)}).Build();
         },
         kInvalid,
         {"tensor info 1", "empty tensor name"}},
        {"TensorNameTooLong",
         [] {
           return Valid().Tensor({std::string(65, 'n'), kTF32, {1}, Bytes(4, 0)}).Build();
         },
         kInvalid,
         {"tensor info 1", "65 bytes", "64"}},
        {"TooManyDims",
         [] {
           return Valid().Tensor({"t5", kTF32, {1, 1, 1, 1, 1}, Bytes(4, 0)}).Build();
         },
         kInvalid,
         {"'t5'", "n_dims 5"}},
        {"UnknownGgmlType",
         [] {
           return Valid().Tensor({"old", 4, {32}, Bytes(20, 0)}).Build();
         },
         kInvalid,
         {"'old'", "unknown ggml type 4"}},
        {"UnknownGgmlTypeLarge",
         [] {
           return Valid().Tensor({"x", 12345, {32}, Bytes(20, 0)}).Build();
         },
         kInvalid,
         {"'x'", "unknown ggml type 12345"}},
        {"DimTooLarge",
         [] {
           return Valid().Tensor({"big", kTF32, {uint64_t{1} << 63}, {}}).Build();
         },
         kInvalid,
         {"'big'", "overflow"}},
        {"DimsOverflow",
         [] {
           return Valid()
               .Tensor({"big", kTF32, {uint64_t{1} << 32, uint64_t{1} << 32}, {}})
               .Build();
         },
         kInvalid,
         {"'big'", "[4294967296, 4294967296] overflow"}},
        {"BytesOverflow",
         [] {
           return Valid().Tensor({"huge", kTF32, {(uint64_t{1} << 62) + 3}, {}}).Build();
         },
         kInvalid,
         {"'huge'", "4611686018427387907 elements of F32 overflow"}},
        {"RowNotWholeBlocks",
         [] {
           return Valid().Tensor({"q", kTQ4_0, {33}, Bytes(36, 0)}).Build();
         },
         kInvalid,
         {"'q'", "33", "Q4_0", "32"}},
        {"KQuantRowNotWholeBlocks",
         [] {
           return Valid().Tensor({"k", kTQ6_K, {128, 2}, Bytes(210, 0)}).Build();
         },
         kInvalid,
         {"'k'", "Q6_K", "256"}},
        {"OffsetNotAligned",
         [] {
           return GgufBuilder().Tensor({"w", kTF32, {4}, Bytes(16, 0), 16}).Build();
         },
         kInvalid,
         {"'w'", "offset 16", "alignment 32"}},
        {"OffsetNotAlignedCustom",
         [] {
           return GgufBuilder().Alignment(64).Tensor({"w", kTF32, {4}, Bytes(16, 0), 32}).Build();
         },
         kInvalid,
         {"'w'", "offset 32", "alignment 64"}},
        {"DataPastEnd",
         [] {
           return GgufBuilder().Tensor({"w", kTF32, {4, 2}, Bytes(16, 0)}).Build();
         },
         kDataLoss,
         {"'w'", "runs past the end", "32 bytes"}},
        {"OffsetPastEnd",
         [] {
           return Valid().Tensor({"far", kTF32, {1}, {}, uint64_t{1} << 62}).Build();
         },
         kDataLoss,
         {"'far'", "runs past the end"}},
        {"OffsetPlusSizeWraps",
         [] {
           return Valid().Tensor({"wrap", kTF32, {8}, {}, ~uint64_t{31}}).Build();
         },
         kDataLoss,
         {"'wrap'", "runs past the end"}},
        {"OverlappingTensors",
         [] {
           return Valid().Tensor({"v", kTF32, {4}, Bytes(16, 0), 0}).Build();
         },
         kInvalid,
         {"'v'", "overlaps tensor 'w'"}},
        {"OverlappingTensorsOutOfOrder",
         [] {
           return GgufBuilder()
               .Tensor({"late", kTF32, {16}, Bytes(64, 0), 64})
               .Tensor({"early", kTF32, {24}, Bytes(96, 0), 0})
               .Build();
         },
         kInvalid,
         {"'late'", "overlaps tensor 'early'"}},
        {"DuplicateTensorName",
         [] {
           return Valid().Tensor({"w", kTF32, {1}, Bytes(4, 0)}).Build();
         },
         kInvalid,
         {"tensor 'w' appears twice"}},
        {"TruncatedInTensorInfo",
         [] {
           GgufBuilder b = Valid();
           Bytes bytes = b.Build();
           bytes.resize(b.HeaderSize() - 6);
           return bytes;
         },
         kDataLoss,
         {"tensor info 0", "tensor 'w': offset at byte", "truncated"}},
        {"TensorCountTooHigh",
         [] { return GgufBuilder().Kv("a", Str(std::string(40, 'x'))).TensorCount(1).Build(); },
         kDataLoss,
         {"tensor info 0", "truncated", "name length"}},
    }),
    [](const ::testing::TestParamInfo<BadFileCase>& info) { return info.param.label; });

// Every prefix of a small valid file (metadata of several types, arrays, two
// tensors) is rejected, without reading past the bytes given.
TEST(GgufTruncationTest, EveryPrefixOfAValidFileIsRejected) {
  GgufBuilder b;
  b.Kv("general.architecture", Str("llama"))
      .Kv("llama.block_count", U32(2))
      .Kv("f", F32(0.5f))
      .Kv("flag", Bool(true))
      .Kv("ids", Arr(kI64, {I64(1), I64(-1)}))
      .Kv("toks", Arr(kStr, {Str("a"), Str("bc")}))
      .Kv("nest", Arr(kArr, {Arr(kU16, {U16(1)})}))
      .Alignment(16)
      .Tensor({"a", kTF16, {3}, Bytes(6, 0x3C)})
      .Tensor({"q", kTQ8_0, {32}, Bytes(34, 0x01)});
  const Bytes full = b.Build();
  ASSERT_TRUE(ParseBytes(full).ok());
  for (size_t k = 0; k < full.size(); ++k) {
    std::vector<std::byte> prefix(reinterpret_cast<const std::byte*>(full.data()),
                                  reinterpret_cast<const std::byte*>(full.data()) + k);
    auto parsed = GgufFile::Parse(prefix, "cut.gguf");
    ASSERT_FALSE(parsed.ok()) << "prefix of " << k << " bytes parsed";
    EXPECT_THAT(parsed.status().message(), HasSubstr("cut.gguf")) << k;
  }
}

// ---------------------------------------------------------------------------
// Dequantization

// A row of blocks built from random known fields, and the floats the format's
// formula gives for them. With `exact`, every scale is +-2^e, so each formula is
// exact in float whatever the order of the operations.
struct Encoded {
  Bytes bytes;
  std::vector<float> values;
};

class RowMaker {
 public:
  RowMaker(uint32_t seed, bool exact) : rng_(seed), exact_(exact) {}

  Encoded Make(uint32_t type, int64_t n) {
    Encoded e;
    switch (type) {
      case kTF32:
        for (int64_t i = 0; i < n; ++i) e.values.push_back(Uniform(-100.0f, 100.0f));
        e.bytes = ToBytes(e.values);
        break;
      case kTF16:
        for (int64_t i = 0; i < n; ++i) {
          const uint16_t bits = FloatToF16(Uniform(-1000.0f, 1000.0f));
          PutF16(e.bytes, bits);
          e.values.push_back(F16ToFloat(bits));
        }
        break;
      case kTBF16:
        for (int64_t i = 0; i < n; ++i) {
          const uint32_t bits = static_cast<uint32_t>(Int(0, 0xFFFF)) & 0xBFFF;  // no inf/nan
          PutF16(e.bytes, static_cast<uint16_t>(bits));
          float v;
          const uint32_t wide = bits << 16;
          std::memcpy(&v, &wide, 4);
          e.values.push_back(v);
        }
        break;
      case kTQ4_0:
        for (int64_t b = 0; b < n / 32; ++b) {
          const auto [d_bits, d] = Scale();
          uint8_t q[32];
          for (int i = 0; i < 32; ++i) q[i] = static_cast<uint8_t>(Int(0, 15));
          PackQ4_0(e.bytes, d_bits, q);
          for (int i = 0; i < 32; ++i) e.values.push_back(d * static_cast<float>(q[i] - 8));
        }
        break;
      case kTQ4_1:
        for (int64_t b = 0; b < n / 32; ++b) {
          const auto [d_bits, d] = Scale();
          const auto [m_bits, m] = Scale();
          uint8_t q[32];
          for (int i = 0; i < 32; ++i) q[i] = static_cast<uint8_t>(Int(0, 15));
          PackQ4_1(e.bytes, d_bits, m_bits, q);
          for (int i = 0; i < 32; ++i) e.values.push_back(d * static_cast<float>(q[i]) + m);
        }
        break;
      case kTQ8_0:
        for (int64_t b = 0; b < n / 32; ++b) {
          const auto [d_bits, d] = Scale();
          int8_t q[32];
          for (int i = 0; i < 32; ++i) q[i] = static_cast<int8_t>(Int(-128, 127));
          PackQ8_0(e.bytes, d_bits, q);
          for (int i = 0; i < 32; ++i) e.values.push_back(d * static_cast<float>(q[i]));
        }
        break;
      case kTQ4_K:
      case kTQ5_K:
        for (int64_t b = 0; b < n / 256; ++b) {
          const auto [d_bits, d] = Scale();
          const auto [dmin_bits, dmin] = Scale();
          uint8_t sc[8], mn[8], q[256];
          for (int j = 0; j < 8; ++j) {
            sc[j] = static_cast<uint8_t>(Int(0, 63));
            mn[j] = static_cast<uint8_t>(Int(0, 63));
          }
          const int max_q = type == kTQ4_K ? 15 : 31;
          for (int i = 0; i < 256; ++i) q[i] = static_cast<uint8_t>(Int(0, max_q));
          if (type == kTQ4_K) {
            PackQ4_K(e.bytes, d_bits, dmin_bits, sc, mn, q);
          } else {
            PackQ5_K(e.bytes, d_bits, dmin_bits, sc, mn, q);
          }
          // Sub-block i / 32 has scale d * sc and min dmin * mn.
          for (int i = 0; i < 256; ++i) {
            e.values.push_back(d * sc[i / 32] * static_cast<float>(q[i]) - dmin * mn[i / 32]);
          }
        }
        break;
      case kTQ6_K:
        for (int64_t b = 0; b < n / 256; ++b) {
          const auto [d_bits, d] = Scale();
          int8_t sc[16];
          uint8_t q[256];
          for (int j = 0; j < 16; ++j) sc[j] = static_cast<int8_t>(Int(-128, 127));
          for (int i = 0; i < 256; ++i) q[i] = static_cast<uint8_t>(Int(0, 63));
          PackQ6_K(e.bytes, d_bits, sc, q);
          // 16 sub-blocks of 16 elements, each with its int8 scale.
          for (int i = 0; i < 256; ++i) {
            e.values.push_back(d * static_cast<float>(sc[i / 16]) * static_cast<float>(q[i] - 32));
          }
        }
        break;
      default:
        ADD_FAILURE() << "no maker for type " << type;
    }
    return e;
  }

 private:
  int Int(int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng_); }
  float Uniform(float lo, float hi) { return std::uniform_real_distribution<float>(lo, hi)(rng_); }
  // f16 bits and value of a block scale.
  std::pair<uint16_t, float> Scale() {
    if (exact_) {
      const int e = Int(-12, 3);
      const bool negative = Int(0, 1) == 1;
      return {F16Pow2(e, negative), Pow2(e, negative)};
    }
    const uint16_t bits = FloatToF16(Uniform(-0.05f, 0.05f));
    return {bits, F16ToFloat(bits)};
  }

  std::mt19937 rng_;
  bool exact_;
};

std::vector<float> Dequantize(GgmlType type, const Bytes& bytes, int64_t n) {
  std::vector<float> out(static_cast<size_t>(n), std::nanf(""));
  absl::Status status = DequantizeRow(type, bytes.data(), n, out.data());
  EXPECT_TRUE(status.ok()) << status;
  return out;
}

TEST(DequantizeTest, PlainTypesKnownValues) {
  EXPECT_THAT(Dequantize(GgmlType::kF32, ToBytes<float>({1.5f, -0.0f, 3e38f}), 3),
              ElementsAre(1.5f, -0.0f, 3e38f));
  // 1, -2, 65504 (largest f16), 2^-24 (smallest subnormal), +inf.
  const auto f16 =
      Dequantize(GgmlType::kF16, ToBytes<uint16_t>({0x3C00, 0xC000, 0x7BFF, 0x0001, 0x7C00}), 5);
  EXPECT_THAT(f16, ElementsAre(1.0f, -2.0f, 65504.0f, std::ldexp(1.0f, -24), INFINITY));
  // 1, -2.5, 0.15625, bf16 max.
  EXPECT_THAT(Dequantize(GgmlType::kBF16, ToBytes<uint16_t>({0x3F80, 0xC020, 0x3E20, 0x7F7F}), 4),
              ElementsAre(1.0f, -2.5f, 0.15625f, 3.3895313892515355e38f));
}

TEST(DequantizeTest, Q4_0KnownValues) {
  uint8_t q[32];
  for (int i = 0; i < 32; ++i) q[i] = static_cast<uint8_t>(i % 16);
  Bytes block;
  PackQ4_0(block, F16Pow2(-1), q);       // d = 0.5
  PackQ4_0(block, F16Pow2(1, true), q);  // d = -2
  ASSERT_EQ(block.size(), 36u);
  EXPECT_EQ(block[2], 0x00);  // elements 0 and 16 share byte 0: low nibble 0, high nibble 0
  EXPECT_EQ(block[3], 0x11);
  const std::vector<float> out = Dequantize(GgmlType::kQ4_0, block, 64);
  for (int i = 0; i < 64; ++i) {
    const float d = i < 32 ? 0.5f : -2.0f;
    EXPECT_EQ(out[i], d * static_cast<float>(q[i % 32] - 8)) << i;
  }
  EXPECT_EQ(out[0], -4.0f);
  EXPECT_EQ(out[15], 3.5f);
  EXPECT_EQ(out[17], -3.5f);
  EXPECT_EQ(out[32 + 31], -14.0f);
}

TEST(DequantizeTest, Q4_1KnownValues) {
  uint8_t q[32];
  for (int i = 0; i < 32; ++i) q[i] = static_cast<uint8_t>((i * 7) % 16);
  Bytes block;
  PackQ4_1(block, F16Pow2(-2), F16Pow2(0, true), q);  // d = 0.25, m = -1
  const std::vector<float> out = Dequantize(GgmlType::kQ4_1, block, 32);
  for (int i = 0; i < 32; ++i) EXPECT_EQ(out[i], 0.25f * q[i] - 1.0f) << i;
  EXPECT_EQ(out[3], 0.25f * 5 - 1.0f);  // q = 21 % 16
}

TEST(DequantizeTest, Q8_0KnownValues) {
  int8_t q[32];
  for (int i = 0; i < 32; ++i) q[i] = static_cast<int8_t>(i * 8 - 128);
  Bytes block;
  PackQ8_0(block, F16Pow2(-3), q);  // d = 0.125
  const std::vector<float> out = Dequantize(GgmlType::kQ8_0, block, 32);
  for (int i = 0; i < 32; ++i) EXPECT_EQ(out[i], 0.125f * q[i]) << i;
  EXPECT_EQ(out[0], -16.0f);
  EXPECT_EQ(out[31], 15.0f);
}

// Scales above 15 exercise the high bits of the 12-byte scale packing.
constexpr uint8_t kScales[8] = {1, 17, 33, 63, 38, 45, 52, 59};
constexpr uint8_t kMins[8] = {63, 0, 21, 5, 16, 38, 47, 9};

TEST(DequantizeTest, Q4_KKnownValues) {
  uint8_t q[256];
  for (int i = 0; i < 256; ++i) q[i] = static_cast<uint8_t>(i % 16);
  Bytes block;
  PackQ4_K(block, F16Pow2(-1), F16Pow2(-2), kScales, kMins, q);  // d = 0.5, dmin = 0.25
  ASSERT_EQ(block.size(), 144u);
  const std::vector<float> out = Dequantize(GgmlType::kQ4_K, block, 256);
  for (int i = 0; i < 256; ++i) {
    EXPECT_EQ(out[i], 0.5f * kScales[i / 32] * q[i] - 0.25f * kMins[i / 32]) << i;
  }
  EXPECT_EQ(out[170], 0.5f * 45 * 10 - 0.25f * 38);  // sub-block 5, q = 10: 215.5
  EXPECT_EQ(out[170], 215.5f);
  EXPECT_EQ(out[0], -15.75f);
}

TEST(DequantizeTest, Q5_KKnownValues) {
  uint8_t q[256];
  for (int i = 0; i < 256; ++i) q[i] = static_cast<uint8_t>((i * 5) % 32);
  Bytes block;
  PackQ5_K(block, F16Pow2(-3), F16Pow2(-1), kScales, kMins, q);  // d = 0.125, dmin = 0.5
  ASSERT_EQ(block.size(), 176u);
  const std::vector<float> out = Dequantize(GgmlType::kQ5_K, block, 256);
  for (int i = 0; i < 256; ++i) {
    EXPECT_EQ(out[i], 0.125f * kScales[i / 32] * q[i] - 0.5f * kMins[i / 32]) << i;
  }
  EXPECT_EQ(out[255], 0.125f * 59 * 27 - 0.5f * 9);  // q = 1275 % 32 = 27 (high bit set)
}

TEST(DequantizeTest, Q6_KKnownValues) {
  uint8_t q[256];
  int8_t scales[16];
  for (int i = 0; i < 256; ++i) q[i] = static_cast<uint8_t>((i * 3) % 64);
  for (int j = 0; j < 16; ++j) scales[j] = static_cast<int8_t>(j * 17 - 128);
  Bytes block;
  PackQ6_K(block, F16Pow2(-4), scales, q);  // d = 1/16
  ASSERT_EQ(block.size(), 210u);
  const std::vector<float> out = Dequantize(GgmlType::kQ6_K, block, 256);
  for (int i = 0; i < 256; ++i) {
    EXPECT_EQ(out[i], 0.0625f * scales[i / 16] * (q[i] - 32)) << i;
  }
  EXPECT_EQ(out[200], 0.0625f * (12 * 17 - 128) * ((600 % 64) - 32));  // 4.75 * -8 = -38
  EXPECT_EQ(out[200], -38.0f);
}

class DequantizeRandomTest : public ::testing::TestWithParam<uint32_t> {};

TEST_P(DequantizeRandomTest, MatchesTheFormulaExactly) {
  const uint32_t type = GetParam();
  const GgmlTypeInfo* info = FindGgmlType(type);
  const int64_t n = 3 * std::max<int64_t>(info->block_size, 32);
  for (uint32_t seed = 1; seed <= 5; ++seed) {
    RowMaker maker(seed * 7919 + type, /*exact=*/true);
    const Encoded e = maker.Make(type, n);
    ASSERT_EQ(e.bytes.size(), *GgmlRowBytes(info->type, n));
    const std::vector<float> out = Dequantize(info->type, e.bytes, n);
    for (int64_t i = 0; i < n; ++i)
      ASSERT_EQ(out[i], e.values[i]) << info->name << " element " << i;
  }
}

TEST_P(DequantizeRandomTest, MatchesTheFormulaWithArbitraryScales) {
  const uint32_t type = GetParam();
  const GgmlTypeInfo* info = FindGgmlType(type);
  const int64_t n = 4 * std::max<int64_t>(info->block_size, 32);
  RowMaker maker(type + 12345, /*exact=*/false);
  const Encoded e = maker.Make(type, n);
  const std::vector<float> out = Dequantize(info->type, e.bytes, n);
  double max_abs = 0;
  for (float v : e.values) max_abs = std::max(max_abs, std::fabs(double{v}));
  ASSERT_GT(max_abs, 0.0);
  for (int64_t i = 0; i < n; ++i) {
    ASSERT_NEAR(out[i], e.values[i], 1e-6 * max_abs) << info->name << " element " << i;
  }
}

INSTANTIATE_TEST_SUITE_P(AllSupported, DequantizeRandomTest,
                         ::testing::Values(kTF32, kTF16, kTBF16, kTQ4_0, kTQ4_1, kTQ8_0, kTQ4_K,
                                           kTQ5_K, kTQ6_K),
                         [](const ::testing::TestParamInfo<uint32_t>& info) {
                           return std::string(FindGgmlType(info.param)->name);
                         });

TEST(DequantizeTest, RejectsUnsupportedTypesAndPartialBlocks) {
  std::vector<float> out(256);
  const Bytes zeros(1024, 0);
  for (GgmlType type : {GgmlType::kQ5_0, GgmlType::kQ2_K, GgmlType::kIQ2_XXS, GgmlType::kMXFP4,
                        GgmlType::kI32, GgmlType::kF64}) {
    absl::Status status = DequantizeRow(type, zeros.data(), 256, out.data());
    EXPECT_EQ(status.code(), absl::StatusCode::kUnimplemented) << status;
    EXPECT_THAT(status.message(), HasSubstr(GgmlTypeName(type)));
  }
  absl::Status partial = DequantizeRow(GgmlType::kQ4_K, zeros.data(), 128, out.data());
  EXPECT_EQ(partial.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(partial.message(), AllOf(HasSubstr("128"), HasSubstr("Q4_K"), HasSubstr("256")));
  EXPECT_EQ(DequantizeRow(GgmlType::kF16, zeros.data(), -2, out.data()).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(DequantizeRow(static_cast<GgmlType>(4), zeros.data(), 32, out.data()).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(DequantizeRow(GgmlType::kQ8_0, zeros.data(), 0, out.data()).ok());
}

// ---------------------------------------------------------------------------
// Experts

// A synthetic 2-layer, 4-expert MoE: layer 0 merged (gate Q4_K, up Q5_K, down
// Q8_0), layer 1 per expert (gate Q6_K as blk.1.ffn_gate.E, up F16/Q4_1
// alternating, down BF16/F32/Q4_0/Q8_0 spelled blk.1.ffn_down_exps.E).
constexpr int64_t kHidden = 256;
constexpr int64_t kInter = 32;
constexpr int64_t kExperts = 4;

struct ExpectedMatrix {
  GgmlType type;
  int64_t rows, cols;
  std::vector<float> values;
};

class GgufExpertsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    RowMaker maker(2024, /*exact=*/true);
    GgufBuilder b;
    b.Kv("general.architecture", Str("qwen3moe")).Kv("qwen3moe.expert_count", U32(kExperts));
    b.Tensor({"token_embd.weight", kTF32, {kHidden, 2}, Bytes(kHidden * 2 * 4, 0)});
    // Layer 0: merged, ne = [cols, rows, n_expert].
    const std::vector<std::tuple<ExpertProj, uint32_t, int64_t, int64_t>> merged = {
        {ExpertProj::kGate, kTQ4_K, kInter, kHidden},
        {ExpertProj::kUp, kTQ5_K, kInter, kHidden},
        {ExpertProj::kDown, kTQ8_0, kHidden, kInter}};
    for (const auto& [which, type, rows, cols] : merged) {
      Bytes data;
      for (int64_t e = 0; e < kExperts; ++e) {
        Encoded enc = maker.Make(type, rows * cols);
        data.insert(data.end(), enc.bytes.begin(), enc.bytes.end());
        expected_[{0, e, which}] = {FindGgmlType(type)->type, rows, cols, std::move(enc.values)};
      }
      b.Tensor({StrCat("blk.0.ffn_", ExpertProjName(which), "_exps.weight"),
                type,
                {static_cast<uint64_t>(cols), static_cast<uint64_t>(rows), kExperts},
                data});
    }
    // Layer 1: per expert, ne = [cols, rows].
    for (int64_t e = 0; e < kExperts; ++e) {
      const uint32_t up_type = e % 2 == 0 ? kTF16 : kTQ4_1;
      const uint32_t down_type = std::vector<uint32_t>{kTBF16, kTF32, kTQ4_0, kTQ8_0}[e];
      AddPerExpert(b, maker, StrCat("blk.1.ffn_gate.", e, ".weight"), e, ExpertProj::kGate, kTQ6_K,
                   kInter, kHidden);
      AddPerExpert(b, maker, StrCat("blk.1.ffn_up.", e, ".weight"), e, ExpertProj::kUp, up_type,
                   kInter, kHidden);
      AddPerExpert(b, maker, StrCat("blk.1.ffn_down_exps.", e, ".weight"), e, ExpertProj::kDown,
                   down_type, kHidden, kInter);
    }
    bytes_ = b.Build();
    auto file = ParseBytes(bytes_, "moe.gguf");
    ASSERT_TRUE(file.ok()) << file.status();
    file_ = std::move(file).value();
  }

  void AddPerExpert(GgufBuilder& b, RowMaker& maker, const std::string& name, int64_t e,
                    ExpertProj which, uint32_t type, int64_t rows, int64_t cols) {
    Encoded enc = maker.Make(type, rows * cols);
    b.Tensor({name, type, {static_cast<uint64_t>(cols), static_cast<uint64_t>(rows)}, enc.bytes});
    expected_[{1, e, which}] = {FindGgmlType(type)->type, rows, cols, std::move(enc.values)};
  }

  Bytes bytes_;
  std::unique_ptr<GgufFile> file_;
  std::map<std::tuple<int64_t, int64_t, ExpertProj>, ExpectedMatrix> expected_;
};

TEST_F(GgufExpertsTest, FindsMergedAndPerExpertMatricesWithMixedTypes) {
  EXPECT_EQ(*CountExperts(*file_, 0), kExperts);
  EXPECT_EQ(*CountExperts(*file_, 1), kExperts);
  ASSERT_EQ(expected_.size(), 24u);
  for (const auto& [key, want] : expected_) {
    const auto& [layer, expert, which] = key;
    SCOPED_TRACE(StrCat("layer ", layer, " expert ", expert, " ", ExpertProjName(which)));
    auto view = FindExpert(*file_, layer, expert, which);
    ASSERT_TRUE(view.ok()) << view.status();
    EXPECT_EQ(view->type, want.type);
    EXPECT_EQ(view->rows, want.rows);
    EXPECT_EQ(view->cols, want.cols);
    EXPECT_EQ(view->row_stride, *GgmlRowBytes(want.type, want.cols));
    const GgufTensor* t = file_->FindTensor(view->tensor);
    ASSERT_NE(t, nullptr);
    if (layer == 0) {
      EXPECT_EQ(view->tensor, StrCat("blk.0.ffn_", ExpertProjName(which), "_exps.weight"));
      EXPECT_EQ(view->data, t->data + expert * want.rows * view->row_stride);
    } else {
      EXPECT_EQ(view->data, t->data);
    }
    std::vector<float> out(static_cast<size_t>(want.rows * want.cols), std::nanf(""));
    ASSERT_TRUE(DequantizeMatrix(*view, out.data()).ok());
    EXPECT_EQ(out, want.values);
  }
}

TEST_F(GgufExpertsTest, ErrorsNameWhatIsMissing) {
  auto no_layer = FindExpert(*file_, 2, 0, ExpertProj::kUp);
  EXPECT_EQ(no_layer.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(
      no_layer.status().message(),
      AllOf(HasSubstr("moe.gguf"), HasSubstr("layer 2"), HasSubstr("blk.2.ffn_up_exps.weight"),
            HasSubstr("blk.2.ffn_up.0.weight"), HasSubstr("blk.2.ffn_up_exps.0.weight")));
  auto merged_range = FindExpert(*file_, 0, kExperts, ExpertProj::kGate);
  EXPECT_EQ(merged_range.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(merged_range.status().message(),
              AllOf(HasSubstr("expert 4 out of range"), HasSubstr("4 experts")));
  auto per_range = FindExpert(*file_, 1, kExperts, ExpertProj::kDown);
  EXPECT_EQ(per_range.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(per_range.status().message(), HasSubstr("blk.1.ffn_down.4.weight"));
  EXPECT_EQ(FindExpert(*file_, -1, 0, ExpertProj::kGate).status().code(),
            absl::StatusCode::kInvalidArgument);
  auto count = CountExperts(*file_, 7);
  EXPECT_EQ(count.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(count.status().message(), HasSubstr("blk.7.ffn_gate_exps.weight"));
}

TEST(GgufExpertsEdgeTest, AmbiguousWrongRankAndUnsupportedTypes) {
  GgufBuilder b;
  b.Tensor({"blk.0.ffn_gate_exps.weight", kTF32, {4, 2, 2}, Bytes(64, 0)})
      .Tensor({"blk.0.ffn_gate.1.weight", kTF32, {4, 2}, Bytes(32, 0)})
      .Tensor({"blk.1.ffn_up_exps.weight", kTF32, {4, 2, 2, 2}, Bytes(128, 0)})
      .Tensor({"blk.2.ffn_down.0.weight", kTF32, {4, 2, 2}, Bytes(64, 0)})
      .Tensor({"blk.3.ffn_gate.0.weight", kTF32, {4, 2}, Bytes(32, 0)})
      .Tensor({"blk.3.ffn_gate_exps.0.weight", kTF32, {4, 2}, Bytes(32, 0)})
      .Tensor({"blk.4.ffn_down_exps.weight", kTIQ2_XXS, {256, 1, 2}, Bytes(132, 0)})
      .Tensor({"blk.5.ffn_gate_exps.weight",
               kTQ8_0,
               {32, 3},
               Bytes(102, 0)});  // 1 expert: ne[2] dropped
  auto file = ParseBytes(b.Build(), "edge.gguf");
  ASSERT_TRUE(file.ok()) << file.status();
  const GgufFile& f = **file;

  auto both = FindExpert(f, 0, 1, ExpertProj::kGate);
  EXPECT_EQ(both.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(both.status().message(),
              AllOf(HasSubstr("both merged"), HasSubstr("blk.0.ffn_gate.1.weight")));
  auto rank4 = FindExpert(f, 1, 0, ExpertProj::kUp);
  EXPECT_EQ(rank4.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(rank4.status().message(), AllOf(HasSubstr("[4, 2, 2, 2]"), HasSubstr("n_expert")));
  auto per_rank3 = FindExpert(f, 2, 0, ExpertProj::kDown);
  EXPECT_EQ(per_rank3.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(per_rank3.status().message(), HasSubstr("blk.2.ffn_down.0.weight"));
  auto two_spellings = FindExpert(f, 3, 0, ExpertProj::kGate);
  EXPECT_EQ(two_spellings.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(two_spellings.status().message(), HasSubstr("blk.3.ffn_gate_exps.0.weight"));

  auto iq = FindExpert(f, 4, 1, ExpertProj::kDown);
  ASSERT_TRUE(iq.ok()) << iq.status();
  EXPECT_EQ(iq->row_stride, 66u);
  std::vector<float> out(256);
  absl::Status unsupported = DequantizeMatrix(*iq, out.data());
  EXPECT_EQ(unsupported.code(), absl::StatusCode::kUnimplemented);
  EXPECT_THAT(unsupported.message(),
              AllOf(HasSubstr("IQ2_XXS"), HasSubstr("blk.4.ffn_down_exps.weight")));

  EXPECT_EQ(*CountExperts(f, 5), 1);
  auto single = FindExpert(f, 5, 0, ExpertProj::kGate);
  ASSERT_TRUE(single.ok()) << single.status();
  EXPECT_EQ(single->rows, 3);
  EXPECT_EQ(single->cols, 32);
  EXPECT_FALSE(FindExpert(f, 5, 1, ExpertProj::kGate).ok());
}

}  // namespace
}  // namespace krasis
