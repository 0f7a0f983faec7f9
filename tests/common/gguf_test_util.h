// A byte-by-byte GGUF writer for tests, and packers for the ggml block formats.
//
// GgufBuilder lays a file out as the format says (header, metadata, tensor infos,
// padding to the alignment, tensors at aligned offsets) and lets a test override
// any field to make malformed files. The packers turn known quant values and
// scales into blocks, written from the GGUF/ggml format description, independently
// of common/gguf_quants.cc.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace krasis::gguf_test {

// Value type numbers of the format (gguf_type).
enum : uint32_t {
  kU8 = 0,
  kI8 = 1,
  kU16 = 2,
  kI16 = 3,
  kU32 = 4,
  kI32 = 5,
  kF32 = 6,
  kBool = 7,
  kStr = 8,
  kArr = 9,
  kU64 = 10,
  kI64 = 11,
  kF64 = 12,
};

// ggml type numbers used by the tests.
enum : uint32_t {
  kTF32 = 0,
  kTF16 = 1,
  kTQ4_0 = 2,
  kTQ4_1 = 3,
  kTQ5_0 = 6,
  kTQ8_0 = 8,
  kTQ4_K = 12,
  kTQ5_K = 13,
  kTQ6_K = 14,
  kTIQ2_XXS = 16,
  kTBF16 = 30,
};

using Bytes = std::vector<uint8_t>;

inline void PutLE(Bytes& out, uint64_t v, int n) {
  for (int i = 0; i < n; ++i) out.push_back(static_cast<uint8_t>(v >> (8 * i)));
}
inline void PutU32(Bytes& out, uint32_t v) { PutLE(out, v, 4); }
inline void PutU64(Bytes& out, uint64_t v) { PutLE(out, v, 8); }
inline void PutStr(Bytes& out, const std::string& s) {
  PutU64(out, s.size());
  out.insert(out.end(), s.begin(), s.end());
}

// One encoded metadata value: its type number and its bytes.
struct Val {
  uint32_t type;
  Bytes payload;
};

inline Val Int(uint32_t type, uint64_t bits, int width) {
  Val v{type, {}};
  PutLE(v.payload, bits, width);
  return v;
}
inline Val U8(uint8_t x) { return Int(kU8, x, 1); }
inline Val I8(int8_t x) { return Int(kI8, static_cast<uint8_t>(x), 1); }
inline Val U16(uint16_t x) { return Int(kU16, x, 2); }
inline Val I16(int16_t x) { return Int(kI16, static_cast<uint16_t>(x), 2); }
inline Val U32(uint32_t x) { return Int(kU32, x, 4); }
inline Val I32(int32_t x) { return Int(kI32, static_cast<uint32_t>(x), 4); }
inline Val U64(uint64_t x) { return Int(kU64, x, 8); }
inline Val I64(int64_t x) { return Int(kI64, static_cast<uint64_t>(x), 8); }
inline Val F32(float x) {
  uint32_t bits;
  std::memcpy(&bits, &x, 4);
  return Int(kF32, bits, 4);
}
inline Val F64(double x) {
  uint64_t bits;
  std::memcpy(&bits, &x, 8);
  return Int(kF64, bits, 8);
}
inline Val BoolRaw(uint8_t byte) { return Int(kBool, byte, 1); }
inline Val Bool(bool x) { return BoolRaw(x ? 1 : 0); }
inline Val Str(const std::string& s) {
  Val v{kStr, {}};
  PutStr(v.payload, s);
  return v;
}
// An array of `elem_type` holding `elems` (their payloads concatenated); `count`
// overrides the element count written.
inline Val Arr(uint32_t elem_type, const std::vector<Val>& elems,
               std::optional<uint64_t> count = std::nullopt) {
  Val v{kArr, {}};
  PutU32(v.payload, elem_type);
  PutU64(v.payload, count.value_or(elems.size()));
  for (const Val& e : elems) v.payload.insert(v.payload.end(), e.payload.begin(), e.payload.end());
  return v;
}

struct TensorSpec {
  TensorSpec(std::string name_, uint32_t type_, std::vector<uint64_t> dims_, Bytes data_,
             std::optional<uint64_t> offset_ = std::nullopt)
      : name(std::move(name_)),
        type(type_),
        dims(std::move(dims_)),
        data(std::move(data_)),
        offset(offset_) {}

  std::string name;
  uint32_t type;
  std::vector<uint64_t> dims;  // ne[0] first
  Bytes data;
  std::optional<uint64_t> offset;  // default: next aligned offset after the previous tensor
};

class GgufBuilder {
 public:
  GgufBuilder& Magic(std::string m) {
    magic_ = std::move(m);
    return *this;
  }
  GgufBuilder& Version(uint32_t v) {
    version_ = v;
    return *this;
  }
  GgufBuilder& TensorCount(uint64_t n) {
    tensor_count_ = n;
    return *this;
  }
  GgufBuilder& KvCount(uint64_t n) {
    kv_count_ = n;
    return *this;
  }
  // A metadata entry (raw type number, so unknown types can be written).
  GgufBuilder& Kv(const std::string& key, const Val& v) {
    PutStr(kvs_, key);
    PutU32(kvs_, v.type);
    kvs_.insert(kvs_.end(), v.payload.begin(), v.payload.end());
    ++num_kvs_;
    return *this;
  }
  // Raw bytes as one metadata entry (for fields Kv cannot get wrong).
  GgufBuilder& RawKv(const Bytes& entry) {
    kvs_.insert(kvs_.end(), entry.begin(), entry.end());
    ++num_kvs_;
    return *this;
  }
  // Writes general.alignment (uint32) and lays the file out with it.
  GgufBuilder& Alignment(uint32_t a) {
    layout_alignment_ = a;
    return Kv("general.alignment", U32(a));
  }
  // Only the layout (for files whose alignment key is bad or absent).
  GgufBuilder& LayoutAlignment(uint64_t a) {
    layout_alignment_ = a;
    return *this;
  }
  GgufBuilder& Tensor(TensorSpec t) {
    tensors_.push_back(std::move(t));
    return *this;
  }

  // The offset (in the data section) tensor `i` gets.
  uint64_t OffsetOf(size_t i) const { return Offsets()[i]; }
  // Bytes before the padding that precedes the data section.
  uint64_t HeaderSize() const { return Header().size(); }
  // File offset of the data section.
  uint64_t DataOffset() const { return AlignUp(Header().size()); }

  Bytes Build() const {
    Bytes out = Header();
    const std::vector<uint64_t> offsets = Offsets();
    uint64_t end = 0;
    for (size_t i = 0; i < tensors_.size(); ++i) {
      if (!tensors_[i].data.empty())
        end = std::max<uint64_t>(end, offsets[i] + tensors_[i].data.size());
    }
    if (tensors_.empty()) return out;
    out.resize(AlignUp(out.size()) + end, 0);
    const uint64_t data = AlignUp(Header().size());
    for (size_t i = 0; i < tensors_.size(); ++i) {
      std::copy(tensors_[i].data.begin(), tensors_[i].data.end(), out.begin() + data + offsets[i]);
    }
    return out;
  }

 private:
  uint64_t AlignUp(uint64_t x) const {
    return (x + layout_alignment_ - 1) / layout_alignment_ * layout_alignment_;
  }
  std::vector<uint64_t> Offsets() const {
    std::vector<uint64_t> offsets;
    uint64_t cursor = 0;
    for (const TensorSpec& t : tensors_) {
      const uint64_t offset = t.offset.value_or(AlignUp(cursor));
      offsets.push_back(offset);
      cursor = offset + t.data.size();
    }
    return offsets;
  }
  Bytes Header() const {
    Bytes out(magic_.begin(), magic_.end());
    PutU32(out, version_);
    PutU64(out, tensor_count_.value_or(tensors_.size()));
    PutU64(out, kv_count_.value_or(num_kvs_));
    out.insert(out.end(), kvs_.begin(), kvs_.end());
    const std::vector<uint64_t> offsets = Offsets();
    for (size_t i = 0; i < tensors_.size(); ++i) {
      const TensorSpec& t = tensors_[i];
      PutStr(out, t.name);
      PutU32(out, static_cast<uint32_t>(t.dims.size()));
      for (uint64_t d : t.dims) PutU64(out, d);
      PutU32(out, t.type);
      PutU64(out, offsets[i]);
    }
    return out;
  }

  std::string magic_ = "GGUF";
  uint32_t version_ = 3;
  std::optional<uint64_t> tensor_count_, kv_count_;
  Bytes kvs_;
  uint64_t num_kvs_ = 0;
  uint64_t layout_alignment_ = 32;
  std::vector<TensorSpec> tensors_;
};

// ---------------------------------------------------------------------------
// Block packers. Quant values are given in element order; scales are f16 bits.

inline void PutF16(Bytes& out, uint16_t bits) { PutLE(out, bits, 2); }

// Q4_0: d, then byte j = q[j] | q[j + 16] << 4 (q in 0..15).
inline void PackQ4_0(Bytes& out, uint16_t d, const uint8_t* q) {
  PutF16(out, d);
  for (int j = 0; j < 16; ++j) out.push_back(static_cast<uint8_t>(q[j] | (q[j + 16] << 4)));
}
// Q4_1: d, m, nibbles as Q4_0.
inline void PackQ4_1(Bytes& out, uint16_t d, uint16_t m, const uint8_t* q) {
  PutF16(out, d);
  PutF16(out, m);
  for (int j = 0; j < 16; ++j) out.push_back(static_cast<uint8_t>(q[j] | (q[j + 16] << 4)));
}
// Q8_0: d, 32 int8.
inline void PackQ8_0(Bytes& out, uint16_t d, const int8_t* q) {
  PutF16(out, d);
  for (int j = 0; j < 32; ++j) out.push_back(static_cast<uint8_t>(q[j]));
}
// The 12-byte packing of 8 six-bit scales and mins (K-quants): byte j < 4 holds
// scale j and the top two bits of scale j + 4; byte 4 + j the same for mins;
// byte 8 + j the low nibbles of scale j + 4 (low) and min j + 4 (high).
inline void PackScalesMins(Bytes& out, const uint8_t* sc, const uint8_t* mn) {
  uint8_t s[12];
  for (int j = 0; j < 4; ++j) {
    s[j] = static_cast<uint8_t>(sc[j] | ((sc[j + 4] >> 4) << 6));
    s[j + 4] = static_cast<uint8_t>(mn[j] | ((mn[j + 4] >> 4) << 6));
    s[j + 8] = static_cast<uint8_t>((sc[j + 4] & 0xF) | ((mn[j + 4] & 0xF) << 4));
  }
  out.insert(out.end(), s, s + 12);
}
// Q4_K: d, dmin, scales/mins, then for each 64 elements 32 bytes: element
// 64c + l in the low nibble of byte 32c + l, element 64c + 32 + l in its high one.
inline void PackQ4_K(Bytes& out, uint16_t d, uint16_t dmin, const uint8_t* sc, const uint8_t* mn,
                     const uint8_t* q) {
  PutF16(out, d);
  PutF16(out, dmin);
  PackScalesMins(out, sc, mn);
  for (int c = 0; c < 4; ++c) {
    for (int l = 0; l < 32; ++l) {
      out.push_back(static_cast<uint8_t>(q[64 * c + l] | (q[64 * c + 32 + l] << 4)));
    }
  }
}
// Q5_K: as Q4_K with q in 0..31; bit s of qh[l] is bit 4 of element 32s + l.
inline void PackQ5_K(Bytes& out, uint16_t d, uint16_t dmin, const uint8_t* sc, const uint8_t* mn,
                     const uint8_t* q) {
  PutF16(out, d);
  PutF16(out, dmin);
  PackScalesMins(out, sc, mn);
  uint8_t qh[32] = {};
  for (int i = 0; i < 256; ++i) qh[i % 32] |= static_cast<uint8_t>(((q[i] >> 4) & 1) << (i / 32));
  out.insert(out.end(), qh, qh + 32);
  for (int c = 0; c < 4; ++c) {
    for (int l = 0; l < 32; ++l) {
      out.push_back(
          static_cast<uint8_t>((q[64 * c + l] & 0xF) | ((q[64 * c + 32 + l] & 0xF) << 4)));
    }
  }
}
// Q6_K: q in 0..63. Element i = 128h + 32k + l: its low nibble goes to the low
// (k < 2) or high (k >= 2) half of ql[64h + 32(k & 1) + l], its top two bits to
// bits 2k, 2k+1 of qh[32h + l]; then 16 int8 scales, then d.
inline void PackQ6_K(Bytes& out, uint16_t d, const int8_t* scales, const uint8_t* q) {
  uint8_t ql[128] = {}, qh[64] = {};
  for (int i = 0; i < 256; ++i) {
    const int h = i / 128, k = (i % 128) / 32, l = i % 32;
    ql[64 * h + 32 * (k & 1) + l] |= static_cast<uint8_t>((q[i] & 0xF) << (k >= 2 ? 4 : 0));
    qh[32 * h + l] |= static_cast<uint8_t>((q[i] >> 4) << (2 * k));
  }
  out.insert(out.end(), ql, ql + 128);
  out.insert(out.end(), qh, qh + 64);
  for (int j = 0; j < 16; ++j) out.push_back(static_cast<uint8_t>(scales[j]));
  PutF16(out, d);
}

}  // namespace krasis::gguf_test
