// GGUF reader (llama.cpp's checkpoint format), for taking MoE expert weights from
// GGUF files, and the dequantization of the ggml block formats they come in.
//
// A GGUF file (versions 2 and 3, little-endian) is: magic "GGUF", u32 version,
// u64 tensor count, u64 metadata count; the metadata (key string, u32 value type,
// value); the tensor infos (name string, u32 n_dims, u64 ne[n_dims], u32 ggml type,
// u64 offset); padding to `general.alignment` (default 32); the data section, where
// each tensor starts at its offset (a multiple of the alignment). Strings are u64
// length + bytes; arrays are u32 element type + u64 count + elements. Shapes are in
// ggml order: ne[0] is the contiguous dimension (a [rows, cols] matrix is ne =
// [cols, rows]), and quantized types pack ne[0] in blocks (Q4_K: 256 elements in
// 144 bytes).
//
// Files are mmap'ed read-only and tensors are zero-copy pointers into the mapping.
// Everything is validated up front so a corrupt or hostile file yields a status
// naming the file and the field or tensor, never a crash or a huge allocation:
// kDataLoss for truncated files and data past the end, kInvalidArgument for the
// rest; kNotFound for missing files, keys and tensors. Parsing is fuzzed
// (tests/fuzz/gguf_fuzz.cc).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/tensor.h"

namespace krasis {

// ---------------------------------------------------------------------------
// ggml tensor types

// ggml's type numbers (ggml.h `enum ggml_type`); the gaps are types ggml removed.
enum class GgmlType : uint32_t {
  kF32 = 0,
  kF16 = 1,
  kQ4_0 = 2,
  kQ4_1 = 3,
  kQ5_0 = 6,
  kQ5_1 = 7,
  kQ8_0 = 8,
  kQ8_1 = 9,
  kQ2_K = 10,
  kQ3_K = 11,
  kQ4_K = 12,
  kQ5_K = 13,
  kQ6_K = 14,
  kQ8_K = 15,
  kIQ2_XXS = 16,
  kIQ2_XS = 17,
  kIQ3_XXS = 18,
  kIQ1_S = 19,
  kIQ4_NL = 20,
  kIQ3_S = 21,
  kIQ2_S = 22,
  kIQ4_XS = 23,
  kI8 = 24,
  kI16 = 25,
  kI32 = 26,
  kI64 = 27,
  kF64 = 28,
  kIQ1_M = 29,
  kBF16 = 30,
  kTQ1_0 = 34,
  kTQ2_0 = 35,
  kMXFP4 = 39,
};

struct GgmlTypeInfo {
  GgmlType type;
  std::string_view name;  // ggml's spelling: "Q4_K", "BF16", ...
  int64_t block_size;     // elements per block (1 for plain types)
  int64_t type_size;      // bytes per block
  bool dequantizable;     // DequantizeRow supports it
};

// nullptr for numbers that are not (or no longer) ggml types.
const GgmlTypeInfo* FindGgmlType(uint32_t value);
// The entry of a valid GgmlType.
const GgmlTypeInfo& GetGgmlTypeInfo(GgmlType type);
std::string_view GgmlTypeName(GgmlType type);
// Bytes of `n` consecutive elements; kInvalidArgument unless n >= 0 is a multiple
// of the block size (and the size fits).
absl::StatusOr<uint64_t> GgmlRowBytes(GgmlType type, int64_t n);

// Converts `n` elements of `type` at `src` (n / block_size whole blocks, no
// alignment needed) to float32, with the formulas of the ggml format: F32, F16,
// BF16, Q4_0, Q4_1, Q8_0, Q4_K, Q5_K, Q6_K. kUnimplemented for other types,
// kInvalidArgument when n is negative or not a multiple of the block size.
absl::Status DequantizeRow(GgmlType type, const void* src, int64_t n, float* out);

// ---------------------------------------------------------------------------
// Metadata values

// GGUF metadata value types (gguf_type).
enum class GgufValueType : uint32_t {
  kUint8 = 0,
  kInt8 = 1,
  kUint16 = 2,
  kInt16 = 3,
  kUint32 = 4,
  kInt32 = 5,
  kFloat32 = 6,
  kBool = 7,
  kString = 8,
  kArray = 9,
  kUint64 = 10,
  kInt64 = 11,
  kFloat64 = 12,
};

// "uint8", "float32", "string", "array", ...; "unknown" otherwise.
std::string_view GgufValueTypeName(GgufValueType type);

class GgufArray;

// One metadata value (a scalar, a string or an array). Copies are cheap: arrays
// are shared.
class GgufValue {
 public:
  GgufValue() = default;
  static GgufValue Integer(GgufValueType type, uint64_t bits);  // integer types, bits as stored
  static GgufValue Float(GgufValueType type, double value);     // kFloat32 / kFloat64
  static GgufValue Bool(bool value);
  static GgufValue String(std::string value);
  static GgufValue Array(std::shared_ptr<const GgufArray> array);

  GgufValueType type() const { return type_; }
  bool is_integer() const;  // the eight integer types (not bool)
  bool is_float() const {
    return type_ == GgufValueType::kFloat32 || type_ == GgufValueType::kFloat64;
  }

  // The value if it is of that kind and fits; nullopt / nullptr otherwise.
  std::optional<int64_t> AsInt() const;    // integer types
  std::optional<uint64_t> AsUint() const;  // integer types, non-negative
  std::optional<double> AsFloat() const;   // float types, and integers (converted)
  std::optional<bool> AsBool() const;
  const std::string* AsString() const;
  const GgufArray* AsArray() const;

 private:
  GgufValueType type_ = GgufValueType::kUint8;
  uint64_t bits_ = 0;  // integers (signed ones sign-extended), bool, double bits
  std::string string_;
  std::shared_ptr<const GgufArray> array_;
};

// A metadata array: one element type, `size()` elements. Numbers are kept as the
// file stores them (so an array costs about what it takes in the file).
class GgufArray {
 public:
  GgufValueType type() const { return type_; }
  size_t size() const { return size_; }
  // Element `i` (< size()) as a value.
  GgufValue at(size_t i) const;
  // Whole-array conversions; nullopt when an element is not of that kind or does
  // not fit (as GgufValue::AsInt / AsFloat).
  std::optional<std::vector<int64_t>> ToInts() const;
  std::optional<std::vector<double>> ToFloats() const;
  // The elements of a string array (empty for other types).
  const std::vector<std::string>& strings() const { return strings_; }

 private:
  friend class GgufParser;
  GgufValueType type_ = GgufValueType::kUint8;
  size_t size_ = 0;
  std::vector<uint8_t> raw_;          // numbers and bools, little-endian as in the file
  std::vector<std::string> strings_;  // kString
  std::vector<GgufValue> arrays_;     // kArray: each a value holding an array
};

// ---------------------------------------------------------------------------
// Files

// One tensor of a GGUF file.
struct GgufTensor {
  std::string name;
  GgmlType type = GgmlType::kF32;
  Shape shape;          // ggml order: shape[0] = ne[0], the contiguous dimension
  uint64_t offset = 0;  // from the start of the data section; a multiple of the alignment
  uint64_t nbytes = 0;  // (ne[0] / block_size) * type_size * ne[1] * ...
  const std::byte* data = nullptr;  // into the file's bytes; null when nbytes == 0

  int64_t num_elements() const { return NumElements(shape); }
};

// A validated GGUF file. Every tensor has a known type, at most 4 non-negative
// dimensions whose element count fits in int64, ne[0] a multiple of the block
// size, an aligned offset, its bytes inside the file, and no two non-empty tensors
// overlap. Metadata keys and tensor names are unique.
class GgufFile {
 public:
  static constexpr uint64_t kDefaultAlignment = 32;
  static constexpr int kMaxDims = 4;
  static constexpr size_t kMaxTensorNameBytes = 64;  // the format's limit
  static constexpr int kMaxArrayDepth = 8;           // nested arrays

  // Opens, maps and validates `path`. kNotFound if it does not exist.
  static absl::StatusOr<std::unique_ptr<GgufFile>> Open(const std::string& path);
  // Validates a whole file given as bytes, which must outlive the result (tensor
  // data points into them). `name` goes into error messages. Pure: no I/O, safe on
  // arbitrary input (fuzzed).
  static absl::StatusOr<std::unique_ptr<GgufFile>> Parse(std::span<const std::byte> bytes,
                                                         std::string_view name);

  ~GgufFile();
  GgufFile(const GgufFile&) = delete;
  GgufFile& operator=(const GgufFile&) = delete;

  // The path given to Open, or the name given to Parse.
  const std::string& name() const { return name_; }
  uint32_t version() const { return version_; }
  uint64_t alignment() const { return alignment_; }
  // File offset of the data section (end of the tensor infos, rounded up to the
  // alignment); may equal file_size() when no tensor has data.
  uint64_t data_offset() const { return data_offset_; }
  uint64_t file_size() const { return bytes_.size(); }

  // Metadata in file order.
  const std::vector<std::pair<std::string, GgufValue>>& metadata() const { return metadata_; }
  // nullptr when absent.
  const GgufValue* FindMetadata(std::string_view key) const;
  // Typed getters: kNotFound when absent, kInvalidArgument (naming the key and the
  // type found) when of another type or out of range.
  absl::StatusOr<std::string_view> GetString(std::string_view key) const;
  absl::StatusOr<int64_t> GetInt(std::string_view key) const;
  absl::StatusOr<double> GetFloat(std::string_view key) const;  // float or integer
  absl::StatusOr<bool> GetBool(std::string_view key) const;
  absl::StatusOr<const GgufArray*> GetArray(std::string_view key) const;

  // Tensors in the order of the tensor infos.
  const std::vector<GgufTensor>& tensors() const { return tensors_; }
  // nullptr when absent.
  const GgufTensor* FindTensor(std::string_view name) const;
  // kNotFound naming the file and tensor when absent.
  absl::StatusOr<const GgufTensor*> GetTensor(std::string_view name) const;

 private:
  friend class GgufParser;
  GgufFile() = default;
  absl::StatusOr<const GgufValue*> GetValue(std::string_view key) const;

  std::string name_;
  std::span<const std::byte> bytes_;
  bool mapped_ = false;  // bytes_ is our mmap (unmapped by the destructor)
  uint32_t version_ = 0;
  uint64_t alignment_ = kDefaultAlignment;
  uint64_t data_offset_ = 0;
  std::vector<std::pair<std::string, GgufValue>> metadata_;
  std::unordered_map<std::string_view, size_t> metadata_index_;  // keys point into metadata_
  std::vector<GgufTensor> tensors_;
  std::unordered_map<std::string_view, size_t> tensor_index_;  // keys point into tensors_
};

// ---------------------------------------------------------------------------
// MoE experts

// The three matrices of a SwiGLU expert: down(silu(gate(x)) * up(x)).
enum class ExpertProj { kGate, kUp, kDown };
std::string_view ExpertProjName(ExpertProj which);  // "gate", "up", "down"

// A [rows, cols] matrix inside a GGUF tensor: row r is cols elements of `type`
// starting at data + r * row_stride.
struct GgufMatrixView {
  GgmlType type = GgmlType::kF32;
  int64_t rows = 0;
  int64_t cols = 0;         // ne[0], a multiple of the block size
  uint64_t row_stride = 0;  // bytes; == GgmlRowBytes(type, cols)
  const std::byte* data = nullptr;
  std::string tensor;  // the tensor it was taken from
};

// Finds one expert matrix of layer `layer`, either in the merged tensor
// blk.L.ffn_{gate,up,down}_exps.weight (ne = [cols, rows, n_expert]) or in a
// per-expert one, blk.L.ffn_{gate,up,down}.E.weight or
// blk.L.ffn_{gate,up,down}_exps.E.weight (ne = [cols, rows]). kNotFound naming the
// names tried when absent, kInvalidArgument for a tensor of the wrong rank, an
// expert out of range, or a layer that has both forms.
absl::StatusOr<GgufMatrixView> FindExpert(const GgufFile& file, int64_t layer, int64_t expert,
                                          ExpertProj which);
// Experts in layer `layer`: ne[2] of the merged gate tensor, or the number of
// consecutive per-expert gate tensors from 0. kNotFound when the layer has none.
absl::StatusOr<int64_t> CountExperts(const GgufFile& file, int64_t layer);

// Dequantizes `view` into out[rows * cols] (row-major, as DequantizeRow per row).
absl::Status DequantizeMatrix(const GgufMatrixView& view, float* out);

}  // namespace krasis
