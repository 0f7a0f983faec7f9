// GGUF reader: metadata values, the validating parser (pure, fuzzed) and mmap'ed
// files. The ggml block formats are in gguf_quants.cc, expert lookup in
// gguf_experts.cc. See gguf.h.
#include "common/gguf.h"

#include "common/mapped_file.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstring>
#include <limits>
#include <tuple>

#include "absl/strings/escaping.h"
#include "common/status.h"

namespace krasis {

static_assert(std::endian::native == std::endian::little,
              "GGUF data is little-endian and read in place");

// ---------------------------------------------------------------------------
// Metadata values

namespace {

constexpr uint32_t kNumValueTypes = 13;

// Bytes of one scalar element in the file; 0 for strings and arrays.
size_t ScalarWidth(GgufValueType type) {
  switch (type) {
    case GgufValueType::kUint8:
    case GgufValueType::kInt8:
    case GgufValueType::kBool:
      return 1;
    case GgufValueType::kUint16:
    case GgufValueType::kInt16:
      return 2;
    case GgufValueType::kUint32:
    case GgufValueType::kInt32:
    case GgufValueType::kFloat32:
      return 4;
    case GgufValueType::kUint64:
    case GgufValueType::kInt64:
    case GgufValueType::kFloat64:
      return 8;
    case GgufValueType::kString:
    case GgufValueType::kArray:
      return 0;
  }
  return 0;
}

// Fewest bytes one element of `type` takes in the file (strings: the length;
// arrays: element type and count).
uint64_t MinEncodedBytes(GgufValueType type) {
  if (type == GgufValueType::kString) return 8;
  if (type == GgufValueType::kArray) return 12;
  return ScalarWidth(type);
}

bool IsSigned(GgufValueType type) {
  return type == GgufValueType::kInt8 || type == GgufValueType::kInt16 ||
         type == GgufValueType::kInt32 || type == GgufValueType::kInt64;
}

// Decodes a scalar stored little-endian at `p` (ScalarWidth(type) bytes).
GgufValue DecodeScalar(GgufValueType type, const uint8_t* p) {
  uint64_t bits = 0;
  std::memcpy(&bits, p, ScalarWidth(type));
  switch (type) {
    case GgufValueType::kBool:
      return GgufValue::Bool(bits != 0);
    case GgufValueType::kFloat32:
      return GgufValue::Float(type, std::bit_cast<float>(static_cast<uint32_t>(bits)));
    case GgufValueType::kFloat64:
      return GgufValue::Float(type, std::bit_cast<double>(bits));
    case GgufValueType::kInt8:
      bits = static_cast<uint64_t>(int64_t{static_cast<int8_t>(bits)});
      break;
    case GgufValueType::kInt16:
      bits = static_cast<uint64_t>(int64_t{static_cast<int16_t>(bits)});
      break;
    case GgufValueType::kInt32:
      bits = static_cast<uint64_t>(int64_t{static_cast<int32_t>(bits)});
      break;
    default:
      break;
  }
  return GgufValue::Integer(type, bits);
}

}  // namespace

std::string_view GgufValueTypeName(GgufValueType type) {
  static constexpr std::string_view kNames[kNumValueTypes] = {
      "uint8", "int8",   "uint16", "int16",  "uint32", "int32",  "float32",
      "bool",  "string", "array",  "uint64", "int64",  "float64"};
  const auto i = static_cast<uint32_t>(type);
  return i < kNumValueTypes ? kNames[i] : "unknown";
}

GgufValue GgufValue::Integer(GgufValueType type, uint64_t bits) {
  GgufValue v;
  v.type_ = type;
  v.bits_ = bits;
  return v;
}

GgufValue GgufValue::Float(GgufValueType type, double value) {
  GgufValue v;
  v.type_ = type;
  v.bits_ = std::bit_cast<uint64_t>(value);
  return v;
}

GgufValue GgufValue::Bool(bool value) {
  GgufValue v;
  v.type_ = GgufValueType::kBool;
  v.bits_ = value ? 1 : 0;
  return v;
}

GgufValue GgufValue::String(std::string value) {
  GgufValue v;
  v.type_ = GgufValueType::kString;
  v.string_ = std::move(value);
  return v;
}

GgufValue GgufValue::Array(std::shared_ptr<const GgufArray> array) {
  GgufValue v;
  v.type_ = GgufValueType::kArray;
  v.array_ = std::move(array);
  return v;
}

bool GgufValue::is_integer() const {
  return ScalarWidth(type_) > 0 && !is_float() && type_ != GgufValueType::kBool;
}

std::optional<int64_t> GgufValue::AsInt() const {
  if (!is_integer()) return std::nullopt;
  if (!IsSigned(type_) && bits_ > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
    return std::nullopt;
  }
  return static_cast<int64_t>(bits_);
}

std::optional<uint64_t> GgufValue::AsUint() const {
  if (!is_integer()) return std::nullopt;
  if (IsSigned(type_) && static_cast<int64_t>(bits_) < 0) return std::nullopt;
  return bits_;
}

std::optional<double> GgufValue::AsFloat() const {
  if (is_float()) return std::bit_cast<double>(bits_);
  if (!is_integer()) return std::nullopt;
  return IsSigned(type_) ? static_cast<double>(static_cast<int64_t>(bits_))
                         : static_cast<double>(bits_);
}

std::optional<bool> GgufValue::AsBool() const {
  if (type_ != GgufValueType::kBool) return std::nullopt;
  return bits_ != 0;
}

const std::string* GgufValue::AsString() const {
  return type_ == GgufValueType::kString ? &string_ : nullptr;
}

const GgufArray* GgufValue::AsArray() const { return array_.get(); }

GgufValue GgufArray::at(size_t i) const {
  if (type_ == GgufValueType::kString) return GgufValue::String(strings_.at(i));
  if (type_ == GgufValueType::kArray) return arrays_.at(i);
  const size_t width = ScalarWidth(type_);
  return DecodeScalar(type_, raw_.data() + width * i);
}

std::optional<std::vector<int64_t>> GgufArray::ToInts() const {
  std::vector<int64_t> out;
  out.reserve(ScalarWidth(type_) > 0 ? size_ : 0);
  for (size_t i = 0; i < size_; ++i) {
    std::optional<int64_t> v = at(i).AsInt();
    if (!v) return std::nullopt;
    out.push_back(*v);
  }
  return out;
}

std::optional<std::vector<double>> GgufArray::ToFloats() const {
  std::vector<double> out;
  out.reserve(ScalarWidth(type_) > 0 ? size_ : 0);
  for (size_t i = 0; i < size_; ++i) {
    std::optional<double> v = at(i).AsFloat();
    if (!v) return std::nullopt;
    out.push_back(*v);
  }
  return out;
}

// ---------------------------------------------------------------------------
// Parser

namespace {

constexpr char kMagic[4] = {'G', 'G', 'U', 'F'};
constexpr std::string_view kAlignmentKey = "general.alignment";
constexpr uint64_t kMaxAlignment = uint64_t{1} << 30;
constexpr uint64_t kMaxKeyBytes = 65535;
// Fewest bytes of one metadata entry (key length, value type, a 1-byte value) and
// of one tensor info (name length, n_dims, type, offset).
constexpr uint64_t kMinEntryBytes = 8 + 4 + 1;
constexpr uint64_t kMinTensorInfoBytes = 8 + 4 + 4 + 8;
// Vectors sized by a count from the file reserve at most this many elements up
// front and grow as elements are actually read, so memory follows the bytes read
// rather than what a header claims.
constexpr uint64_t kMaxReserve = 4096;

size_t ReserveFor(uint64_t count) { return static_cast<size_t>(std::min(count, kMaxReserve)); }

// A name from the file, quoted and escaped for an error message (and cut short).
std::string Quote(std::string_view text) {
  constexpr size_t kMax = 96;
  const bool cut = text.size() > kMax;
  std::string escaped =
      absl::CHexEscape(absl::string_view(text.data(), std::min(text.size(), kMax)));
  return StrCat("'", escaped, cut ? "...'" : "'");
}

}  // namespace

// Reads a GGUF file's bytes front to back. Low-level errors carry no file name;
// Run() prefixes it (and the entry being read) to every error.
class GgufParser {
 public:
  GgufParser(std::span<const std::byte> bytes, GgufFile* file)
      : data_(reinterpret_cast<const uint8_t*>(bytes.data())), size_(bytes.size()), file_(file) {}

  absl::Status Run();

 private:
  uint64_t remaining() const { return size_ - pos_; }

  absl::Status Need(uint64_t n, std::string_view what) const {
    if (n > remaining()) {
      return DataLossError(what, " at byte ", pos_, " needs ", n,
                           " bytes but the file ends at byte ", size_, "; is it truncated?");
    }
    return absl::OkStatus();
  }
  // Unchecked: the caller made sure sizeof(T) bytes remain.
  template <typename T>
  T Take() {
    T value;
    std::memcpy(&value, data_ + pos_, sizeof(T));
    pos_ += sizeof(T);
    return value;
  }
  template <typename T>
  absl::StatusOr<T> Read(std::string_view what) {
    RETURN_IF_ERROR(Need(sizeof(T), what));
    return Take<T>();
  }
  absl::StatusOr<std::string> ReadString(std::string_view what) {
    if (remaining() < sizeof(uint64_t)) return Need(sizeof(uint64_t), StrCat(what, " length"));
    const uint64_t length = Take<uint64_t>();
    if (length > remaining()) {
      return DataLossError(what, " of ", length, " bytes at byte ", pos_,
                           " runs past the end of the ", size_, "-byte file; is it truncated?");
    }
    std::string s(reinterpret_cast<const char*>(data_ + pos_), length);
    pos_ += length;
    return s;
  }
  absl::StatusOr<GgufValueType> ReadValueType(std::string_view what) {
    ASSIGN_OR_RETURN(const uint32_t type, Read<uint32_t>(what));
    if (type >= kNumValueTypes) return InvalidArgumentError("unknown ", what, " ", type);
    return static_cast<GgufValueType>(type);
  }

  absl::StatusOr<GgufValue> ReadValue(GgufValueType type, int depth);
  absl::StatusOr<GgufValue> ReadArray(int depth);
  absl::Status ReadTensorInfo(GgufTensor* tensor);
  absl::Status ReadTensorFields(GgufTensor* tensor);
  absl::Status CheckTensorShape(GgufTensor* tensor, const std::vector<uint64_t>& dims,
                                const GgmlTypeInfo& info) const;
  absl::Status LayOutTensors();

  const uint8_t* data_;
  uint64_t size_;
  uint64_t pos_ = 0;
  GgufFile* file_;
};

absl::StatusOr<GgufValue> GgufParser::ReadValue(GgufValueType type, int depth) {
  switch (type) {
    case GgufValueType::kString: {
      ASSIGN_OR_RETURN(std::string s, ReadString("string"));
      return GgufValue::String(std::move(s));
    }
    case GgufValueType::kArray:
      return ReadArray(depth + 1);
    case GgufValueType::kBool: {
      ASSIGN_OR_RETURN(const uint8_t b, Read<uint8_t>("bool"));
      if (b > 1) return InvalidArgumentError("bool value ", int{b}, " is neither 0 nor 1");
      return GgufValue::Bool(b != 0);
    }
    default: {
      const size_t width = ScalarWidth(type);
      RETURN_IF_ERROR(Need(width, GgufValueTypeName(type)));
      GgufValue v = DecodeScalar(type, data_ + pos_);
      pos_ += width;
      return v;
    }
  }
}

absl::StatusOr<GgufValue> GgufParser::ReadArray(int depth) {
  if (depth > GgufFile::kMaxArrayDepth) {
    return InvalidArgumentError("arrays nested deeper than ", GgufFile::kMaxArrayDepth);
  }
  auto array = std::make_shared<GgufArray>();
  ASSIGN_OR_RETURN(array->type_, ReadValueType("array element type"));
  ASSIGN_OR_RETURN(const uint64_t count, Read<uint64_t>("array length"));
  // Bound the count by the bytes left before allocating anything for it.
  const uint64_t min_bytes = MinEncodedBytes(array->type_);
  if (count > remaining() / min_bytes) {
    return DataLossError("array of ", count, " ", GgufValueTypeName(array->type_), " at byte ",
                         pos_, " runs past the end of the ", size_, "-byte file");
  }
  array->size_ = static_cast<size_t>(count);
  const size_t width = ScalarWidth(array->type_);
  if (width > 0) {
    array->raw_.assign(data_ + pos_, data_ + pos_ + count * width);
    pos_ += count * width;
    if (array->type_ == GgufValueType::kBool) {
      for (uint64_t i = 0; i < count; ++i) {
        if (array->raw_[i] > 1) {
          return InvalidArgumentError("element ", i, ": bool value ", int{array->raw_[i]},
                                      " is neither 0 nor 1");
        }
      }
    }
  } else if (array->type_ == GgufValueType::kString) {
    array->strings_.reserve(ReserveFor(count));
    for (uint64_t i = 0; i < count; ++i) {
      absl::StatusOr<std::string> s = ReadString("string");
      if (!s.ok()) return Annotate(s.status(), StrCat("element ", i));
      array->strings_.push_back(std::move(s).value());
    }
  } else {
    array->arrays_.reserve(ReserveFor(count));
    for (uint64_t i = 0; i < count; ++i) {
      absl::StatusOr<GgufValue> v = ReadArray(depth + 1);
      if (!v.ok()) return Annotate(v.status(), StrCat("element ", i));
      array->arrays_.push_back(std::move(v).value());
    }
  }
  return GgufValue::Array(std::move(array));
}

absl::Status GgufParser::CheckTensorShape(GgufTensor* tensor, const std::vector<uint64_t>& dims,
                                          const GgmlTypeInfo& info) const {
  uint64_t nonzero_product = 1;
  for (size_t i = 0; i < dims.size(); ++i) {
    if (dims[i] > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()) ||
        __builtin_mul_overflow(nonzero_product, std::max<uint64_t>(dims[i], 1), &nonzero_product) ||
        nonzero_product > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
      std::string shown = "[";
      for (size_t j = 0; j < dims.size(); ++j) shown += StrCat(j > 0 ? ", " : "", dims[j]);
      return InvalidArgumentError("dimensions ", shown, "] overflow int64");
    }
  }
  tensor->shape.assign(dims.begin(), dims.end());
  const uint64_t ne0 = dims.empty() ? 1 : dims[0];
  if (ne0 % static_cast<uint64_t>(info.block_size) != 0) {
    return InvalidArgumentError("ne[0] = ", ne0, " is not a multiple of the ", info.name,
                                " block size ", info.block_size);
  }
  const uint64_t numel = static_cast<uint64_t>(NumElements(tensor->shape));
  if (__builtin_mul_overflow(numel / static_cast<uint64_t>(info.block_size),
                             static_cast<uint64_t>(info.type_size), &tensor->nbytes)) {
    return InvalidArgumentError(numel, " elements of ", info.name, " overflow a byte count");
  }
  return absl::OkStatus();
}

absl::Status GgufParser::ReadTensorInfo(GgufTensor* tensor) {
  ASSIGN_OR_RETURN(tensor->name, ReadString("name"));
  if (tensor->name.empty()) return InvalidArgumentError("empty tensor name");
  if (tensor->name.size() > GgufFile::kMaxTensorNameBytes) {
    return InvalidArgumentError("name ", Quote(tensor->name), " is ", tensor->name.size(),
                                " bytes, longer than the format's limit of ",
                                GgufFile::kMaxTensorNameBytes);
  }
  absl::Status status = ReadTensorFields(tensor);
  return status.ok() ? status : Annotate(status, StrCat("tensor ", Quote(tensor->name)));
}

absl::Status GgufParser::ReadTensorFields(GgufTensor* tensor) {
  ASSIGN_OR_RETURN(const uint32_t n_dims, Read<uint32_t>("n_dims"));
  if (n_dims > GgufFile::kMaxDims) {
    return InvalidArgumentError("n_dims ", n_dims, " exceeds ", GgufFile::kMaxDims);
  }
  std::vector<uint64_t> dims(n_dims);
  for (uint32_t i = 0; i < n_dims; ++i) {
    ASSIGN_OR_RETURN(dims[i], Read<uint64_t>("dimension"));
  }
  ASSIGN_OR_RETURN(const uint32_t type, Read<uint32_t>("type"));
  ASSIGN_OR_RETURN(tensor->offset, Read<uint64_t>("offset"));
  const GgmlTypeInfo* info = FindGgmlType(type);
  if (info == nullptr) return InvalidArgumentError("unknown ggml type ", type);
  tensor->type = info->type;
  RETURN_IF_ERROR(CheckTensorShape(tensor, dims, *info));
  if (tensor->offset % file_->alignment_ != 0) {
    return InvalidArgumentError("offset ", tensor->offset, " is not a multiple of the alignment ",
                                file_->alignment_);
  }
  return absl::OkStatus();
}

// Places the data section and checks every tensor lies inside it, apart.
absl::Status GgufParser::LayOutTensors() {
  GgufFile& f = *file_;
  f.data_offset_ = (pos_ + f.alignment_ - 1) / f.alignment_ * f.alignment_;
  const uint64_t data_size = f.data_offset_ <= size_ ? size_ - f.data_offset_ : 0;
  std::vector<size_t> order;
  for (size_t i = 0; i < f.tensors_.size(); ++i) {
    GgufTensor& t = f.tensors_[i];
    if (t.offset > data_size || t.nbytes > data_size - t.offset) {
      return DataLossError(f.name_, ": tensor ", Quote(t.name), ": data at offset ", t.offset, " (",
                           t.nbytes, " bytes) runs past the end of the data section (", data_size,
                           " bytes from file offset ", f.data_offset_, "); is the file truncated?");
    }
    if (t.nbytes == 0) continue;
    t.data = reinterpret_cast<const std::byte*>(data_ + f.data_offset_ + t.offset);
    order.push_back(i);
  }
  std::sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    return std::tie(f.tensors_[a].offset, a) < std::tie(f.tensors_[b].offset, b);
  });
  for (size_t k = 1; k < order.size(); ++k) {
    const GgufTensor& prev = f.tensors_[order[k - 1]];
    const GgufTensor& t = f.tensors_[order[k]];
    if (t.offset < prev.offset + prev.nbytes) {
      return InvalidArgumentError(f.name_, ": tensor ", Quote(t.name), " at [", t.offset, ", ",
                                  t.offset + t.nbytes, ") overlaps tensor ", Quote(prev.name),
                                  " at [", prev.offset, ", ", prev.offset + prev.nbytes, ")");
    }
  }
  return absl::OkStatus();
}

absl::Status GgufParser::Run() {
  GgufFile& f = *file_;
  const std::string& file = f.name_;
  if (size_ < 4 || std::memcmp(data_, kMagic, 4) != 0) {
    const std::string_view head(reinterpret_cast<const char*>(data_), std::min<uint64_t>(size_, 4));
    return InvalidArgumentError(file, ": bad magic ", Quote(head),
                                " (expected 'GGUF'); not a GGUF file");
  }
  pos_ = 4;
  absl::StatusOr<uint32_t> version = Read<uint32_t>("version");
  if (!version.ok()) return Annotate(version.status(), file);
  f.version_ = *version;
  if (f.version_ != 2 && f.version_ != 3) {
    if ((f.version_ & 0xFFFF) == 0 && (f.version_ >> 16) != 0) {
      return InvalidArgumentError(file, ": version ", f.version_,
                                  " looks byte-swapped; big-endian GGUF is not supported");
    }
    return InvalidArgumentError(file, ": unsupported GGUF version ", f.version_,
                                " (supported: 2, 3)");
  }
  absl::StatusOr<uint64_t> tensor_count = Read<uint64_t>("tensor count");
  if (!tensor_count.ok()) return Annotate(tensor_count.status(), file);
  absl::StatusOr<uint64_t> kv_count = Read<uint64_t>("metadata count");
  if (!kv_count.ok()) return Annotate(kv_count.status(), file);
  if (*kv_count > remaining() / kMinEntryBytes) {
    return DataLossError(file, ": metadata count ", *kv_count, " is impossible in a ", size_,
                         "-byte file");
  }
  if (*tensor_count > remaining() / kMinTensorInfoBytes) {
    return DataLossError(file, ": tensor count ", *tensor_count, " is impossible in a ", size_,
                         "-byte file");
  }

  f.metadata_.reserve(ReserveFor(*kv_count));
  for (uint64_t i = 0; i < *kv_count; ++i) {
    const std::string entry = StrCat(file, ": metadata entry ", i);
    absl::StatusOr<std::string> key = ReadString("key");
    if (!key.ok()) return Annotate(key.status(), entry);
    if (key->empty()) return InvalidArgumentError(entry, ": empty key");
    if (key->size() > kMaxKeyBytes) {
      return InvalidArgumentError(entry, ": key of ", key->size(), " bytes exceeds ", kMaxKeyBytes);
    }
    const std::string where = StrCat(file, ": metadata ", Quote(*key));
    absl::StatusOr<GgufValueType> type = ReadValueType("value type");
    if (!type.ok()) return Annotate(type.status(), where);
    absl::StatusOr<GgufValue> value = ReadValue(*type, 0);
    if (!value.ok()) return Annotate(value.status(), where);
    f.metadata_.emplace_back(std::move(key).value(), std::move(value).value());
  }
  for (size_t i = 0; i < f.metadata_.size(); ++i) {
    auto [it, inserted] = f.metadata_index_.emplace(f.metadata_[i].first, i);
    if (!inserted) {
      return InvalidArgumentError(file, ": metadata key ", Quote(f.metadata_[i].first),
                                  " appears twice (entries ", it->second, " and ", i, ")");
    }
  }
  if (const GgufValue* alignment = f.FindMetadata(kAlignmentKey)) {
    const std::optional<uint64_t> a = alignment->AsUint();
    if (!a || *a == 0 || !std::has_single_bit(*a) || *a > kMaxAlignment) {
      std::string shown(GgufValueTypeName(alignment->type()));
      if (a) {
        shown = StrCat(shown, " ", *a);
      } else if (std::optional<int64_t> negative = alignment->AsInt()) {
        shown = StrCat(shown, " ", *negative);
      }
      return InvalidArgumentError(file, ": ", kAlignmentKey, " is ", shown,
                                  ", expected a power of two integer up to ", kMaxAlignment);
    }
    f.alignment_ = *a;
  }

  f.tensors_.reserve(ReserveFor(*tensor_count));
  for (uint64_t i = 0; i < *tensor_count; ++i) {
    GgufTensor tensor;
    absl::Status status = ReadTensorInfo(&tensor);
    if (!status.ok()) return Annotate(status, StrCat(file, ": tensor info ", i));
    f.tensors_.push_back(std::move(tensor));
  }
  for (size_t i = 0; i < f.tensors_.size(); ++i) {
    auto [it, inserted] = f.tensor_index_.emplace(f.tensors_[i].name, i);
    if (!inserted) {
      return InvalidArgumentError(file, ": tensor ", Quote(f.tensors_[i].name),
                                  " appears twice (tensor infos ", it->second, " and ", i, ")");
    }
  }
  return LayOutTensors();
}

// ---------------------------------------------------------------------------
// GgufFile

absl::StatusOr<std::unique_ptr<GgufFile>> GgufFile::Parse(std::span<const std::byte> bytes,
                                                          std::string_view name) {
  std::unique_ptr<GgufFile> file(new GgufFile());
  file->name_ = std::string(name);
  file->bytes_ = bytes;
  RETURN_IF_ERROR(GgufParser(bytes, file.get()).Run());
  return file;
}

absl::StatusOr<std::unique_ptr<GgufFile>> GgufFile::Open(const std::string& path) {
  ASSIGN_OR_RETURN(std::span<const std::byte> bytes, MapFileReadOnly(path));
  const std::byte* map = bytes.empty() ? nullptr : bytes.data();
  const uint64_t size = bytes.size();
  absl::StatusOr<std::unique_ptr<GgufFile>> file = Parse({map, size}, path);
  if (!file.ok()) {
    UnmapFile(bytes);
    return file.status();
  }
  (*file)->mapped_ = map != nullptr;
  return file;
}

GgufFile::~GgufFile() {
  if (mapped_) UnmapFile(bytes_);
}

const GgufValue* GgufFile::FindMetadata(std::string_view key) const {
  auto it = metadata_index_.find(key);
  return it == metadata_index_.end() ? nullptr : &metadata_[it->second].second;
}

absl::StatusOr<const GgufValue*> GgufFile::GetValue(std::string_view key) const {
  const GgufValue* value = FindMetadata(key);
  if (value == nullptr) return NotFoundError(name_, ": metadata key ", Quote(key), " not found");
  return value;
}

namespace {
absl::Status WrongType(const std::string& file, std::string_view key, const GgufValue& value,
                       std::string_view expected) {
  return InvalidArgumentError(file, ": metadata ", Quote(key), " is ",
                              GgufValueTypeName(value.type()), ", expected ", expected);
}
}  // namespace

absl::StatusOr<std::string_view> GgufFile::GetString(std::string_view key) const {
  ASSIGN_OR_RETURN(const GgufValue* value, GetValue(key));
  if (const std::string* s = value->AsString()) return std::string_view(*s);
  return WrongType(name_, key, *value, "a string");
}

absl::StatusOr<int64_t> GgufFile::GetInt(std::string_view key) const {
  ASSIGN_OR_RETURN(const GgufValue* value, GetValue(key));
  if (std::optional<int64_t> v = value->AsInt()) return *v;
  return WrongType(name_, key, *value, "an integer that fits in int64");
}

absl::StatusOr<double> GgufFile::GetFloat(std::string_view key) const {
  ASSIGN_OR_RETURN(const GgufValue* value, GetValue(key));
  if (std::optional<double> v = value->AsFloat()) return *v;
  return WrongType(name_, key, *value, "a number");
}

absl::StatusOr<bool> GgufFile::GetBool(std::string_view key) const {
  ASSIGN_OR_RETURN(const GgufValue* value, GetValue(key));
  if (std::optional<bool> v = value->AsBool()) return *v;
  return WrongType(name_, key, *value, "a bool");
}

absl::StatusOr<const GgufArray*> GgufFile::GetArray(std::string_view key) const {
  ASSIGN_OR_RETURN(const GgufValue* value, GetValue(key));
  if (const GgufArray* a = value->AsArray()) return a;
  return WrongType(name_, key, *value, "an array");
}

const GgufTensor* GgufFile::FindTensor(std::string_view name) const {
  auto it = tensor_index_.find(name);
  return it == tensor_index_.end() ? nullptr : &tensors_[it->second];
}

absl::StatusOr<const GgufTensor*> GgufFile::GetTensor(std::string_view name) const {
  const GgufTensor* t = FindTensor(name);
  if (t == nullptr) return NotFoundError(name_, ": tensor ", Quote(name), " not found");
  return t;
}

}  // namespace krasis
