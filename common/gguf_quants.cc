// ggml block formats: the type table (block sizes, bytes per block) and the
// dequantization of F32, F16, BF16, Q4_0, Q4_1, Q8_0, Q4_K, Q5_K and Q6_K, written
// from the format's description of each block. See gguf.h.
#include <cstring>

#include "common/dtype.h"
#include "common/gguf.h"
#include "common/status.h"

namespace krasis {

namespace {

// Block sizes and bytes per block from ggml's block structs (ggml-common.h).
constexpr GgmlTypeInfo kGgmlTypes[] = {
    {GgmlType::kF32, "F32", 1, 4, true},
    {GgmlType::kF16, "F16", 1, 2, true},
    {GgmlType::kQ4_0, "Q4_0", 32, 18, true},
    {GgmlType::kQ4_1, "Q4_1", 32, 20, true},
    {GgmlType::kQ5_0, "Q5_0", 32, 22, false},
    {GgmlType::kQ5_1, "Q5_1", 32, 24, false},
    {GgmlType::kQ8_0, "Q8_0", 32, 34, true},
    {GgmlType::kQ8_1, "Q8_1", 32, 36, false},
    {GgmlType::kQ2_K, "Q2_K", 256, 84, false},
    {GgmlType::kQ3_K, "Q3_K", 256, 110, false},
    {GgmlType::kQ4_K, "Q4_K", 256, 144, true},
    {GgmlType::kQ5_K, "Q5_K", 256, 176, true},
    {GgmlType::kQ6_K, "Q6_K", 256, 210, true},
    {GgmlType::kQ8_K, "Q8_K", 256, 292, false},
    {GgmlType::kIQ2_XXS, "IQ2_XXS", 256, 66, false},
    {GgmlType::kIQ2_XS, "IQ2_XS", 256, 74, false},
    {GgmlType::kIQ3_XXS, "IQ3_XXS", 256, 98, false},
    {GgmlType::kIQ1_S, "IQ1_S", 256, 50, false},
    {GgmlType::kIQ4_NL, "IQ4_NL", 32, 18, false},
    {GgmlType::kIQ3_S, "IQ3_S", 256, 110, false},
    {GgmlType::kIQ2_S, "IQ2_S", 256, 82, false},
    {GgmlType::kIQ4_XS, "IQ4_XS", 256, 136, false},
    {GgmlType::kI8, "I8", 1, 1, false},
    {GgmlType::kI16, "I16", 1, 2, false},
    {GgmlType::kI32, "I32", 1, 4, false},
    {GgmlType::kI64, "I64", 1, 8, false},
    {GgmlType::kF64, "F64", 1, 8, false},
    {GgmlType::kIQ1_M, "IQ1_M", 256, 56, false},
    {GgmlType::kBF16, "BF16", 1, 2, true},
    {GgmlType::kTQ1_0, "TQ1_0", 256, 54, false},
    {GgmlType::kTQ2_0, "TQ2_0", 256, 66, false},
    {GgmlType::kMXFP4, "MXFP4", 32, 17, false},
};

uint16_t Load16(const uint8_t* p) { return static_cast<uint16_t>(p[0] | (p[1] << 8)); }
float LoadF16(const uint8_t* p) { return F16ToFloat(Load16(p)); }

// Q4_0 block (18 bytes): f16 d, 16 bytes of nibbles. Element j < 16 is the low
// nibble of byte j, element j + 16 its high nibble; value = d * (q - 8).
void DequantizeQ4_0(const uint8_t* x, int64_t blocks, float* y) {
  for (int64_t b = 0; b < blocks; ++b, x += 18, y += 32) {
    const float d = LoadF16(x);
    const uint8_t* qs = x + 2;
    for (int j = 0; j < 16; ++j) {
      y[j] = d * static_cast<float>((qs[j] & 0xF) - 8);
      y[j + 16] = d * static_cast<float>((qs[j] >> 4) - 8);
    }
  }
}

// Q4_1 block (20 bytes): f16 d, f16 m, nibbles as Q4_0; value = d * q + m.
void DequantizeQ4_1(const uint8_t* x, int64_t blocks, float* y) {
  for (int64_t b = 0; b < blocks; ++b, x += 20, y += 32) {
    const float d = LoadF16(x);
    const float m = LoadF16(x + 2);
    const uint8_t* qs = x + 4;
    for (int j = 0; j < 16; ++j) {
      y[j] = d * static_cast<float>(qs[j] & 0xF) + m;
      y[j + 16] = d * static_cast<float>(qs[j] >> 4) + m;
    }
  }
}

// Q8_0 block (34 bytes): f16 d, 32 int8; value = d * q.
void DequantizeQ8_0(const uint8_t* x, int64_t blocks, float* y) {
  for (int64_t b = 0; b < blocks; ++b, x += 34, y += 32) {
    const float d = LoadF16(x);
    for (int j = 0; j < 32; ++j) y[j] = d * static_cast<float>(static_cast<int8_t>(x[2 + j]));
  }
}

// The 8 six-bit scales and mins of a Q4_K/Q5_K super-block, packed in 12 bytes:
// bytes 0-3 hold scales 0-3 (low 6 bits) and the top 2 bits of scales 4-7; bytes
// 4-7 the same for the mins; bytes 8-11 the low nibbles of scale (low half) and
// min (high half) 4-7.
void UnpackScalesMins(const uint8_t* s, uint8_t* scales, uint8_t* mins) {
  for (int j = 0; j < 4; ++j) {
    scales[j] = s[j] & 63;
    mins[j] = s[j + 4] & 63;
    scales[j + 4] = static_cast<uint8_t>((s[j + 8] & 0xF) | ((s[j] >> 6) << 4));
    mins[j + 4] = static_cast<uint8_t>((s[j + 8] >> 4) | ((s[j + 4] >> 6) << 4));
  }
}

// Q4_K super-block (144 bytes): f16 d, f16 dmin, 12 bytes of scales/mins, 128
// bytes of nibbles. 8 sub-blocks of 32; each 64 elements share 32 bytes, the low
// nibbles giving sub-block 2c and the high ones 2c + 1. value = d * scale * q -
// dmin * min.
void DequantizeQ4_K(const uint8_t* x, int64_t blocks, float* y) {
  for (int64_t b = 0; b < blocks; ++b, x += 144, y += 256) {
    const float d = LoadF16(x);
    const float dmin = LoadF16(x + 2);
    uint8_t scales[8], mins[8];
    UnpackScalesMins(x + 4, scales, mins);
    const uint8_t* qs = x + 16;
    for (int c = 0; c < 4; ++c) {
      const uint8_t* q = qs + 32 * c;
      const float d1 = d * scales[2 * c], m1 = dmin * mins[2 * c];
      const float d2 = d * scales[2 * c + 1], m2 = dmin * mins[2 * c + 1];
      float* out = y + 64 * c;
      for (int l = 0; l < 32; ++l) {
        out[l] = d1 * static_cast<float>(q[l] & 0xF) - m1;
        out[l + 32] = d2 * static_cast<float>(q[l] >> 4) - m2;
      }
    }
  }
}

// Q5_K super-block (176 bytes): as Q4_K with 32 bytes of fifth bits (qh) before
// the nibbles: bit s of qh[l] is the high bit of element l of sub-block s.
void DequantizeQ5_K(const uint8_t* x, int64_t blocks, float* y) {
  for (int64_t b = 0; b < blocks; ++b, x += 176, y += 256) {
    const float d = LoadF16(x);
    const float dmin = LoadF16(x + 2);
    uint8_t scales[8], mins[8];
    UnpackScalesMins(x + 4, scales, mins);
    const uint8_t* qh = x + 16;
    const uint8_t* qs = x + 48;
    for (int c = 0; c < 4; ++c) {
      const uint8_t* q = qs + 32 * c;
      const float d1 = d * scales[2 * c], m1 = dmin * mins[2 * c];
      const float d2 = d * scales[2 * c + 1], m2 = dmin * mins[2 * c + 1];
      float* out = y + 64 * c;
      for (int l = 0; l < 32; ++l) {
        const int lo = (q[l] & 0xF) | (((qh[l] >> (2 * c)) & 1) << 4);
        const int hi = (q[l] >> 4) | (((qh[l] >> (2 * c + 1)) & 1) << 4);
        out[l] = d1 * static_cast<float>(lo) - m1;
        out[l + 32] = d2 * static_cast<float>(hi) - m2;
      }
    }
  }
}

// Q6_K super-block (210 bytes): 128 bytes of low nibbles (ql), 64 bytes of high
// 2-bit pairs (qh), 16 int8 scales (one per 16 elements), f16 d. Each half of 128
// elements uses 64 bytes of ql and 32 of qh: element 32k + l (k < 4, l < 32) takes
// the low (k even) or high (k odd) nibble of ql[l + 32 * (k & 1)] and bits 2k, 2k+1
// of qh[l]. value = d * scale * (q - 32).
void DequantizeQ6_K(const uint8_t* x, int64_t blocks, float* y) {
  for (int64_t b = 0; b < blocks; ++b, x += 210, y += 256) {
    const float d = LoadF16(x + 208);
    const int8_t* sc = reinterpret_cast<const int8_t*>(x + 192);
    for (int h = 0; h < 2; ++h) {
      const uint8_t* ql = x + 64 * h;
      const uint8_t* qh = x + 128 + 32 * h;
      float* out = y + 128 * h;
      for (int l = 0; l < 32; ++l) {
        const int s = 8 * h + l / 16;
        const int q1 = ((ql[l] & 0xF) | (((qh[l] >> 0) & 3) << 4)) - 32;
        const int q2 = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32;
        const int q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
        const int q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
        out[l] = d * static_cast<float>(sc[s]) * static_cast<float>(q1);
        out[l + 32] = d * static_cast<float>(sc[s + 2]) * static_cast<float>(q2);
        out[l + 64] = d * static_cast<float>(sc[s + 4]) * static_cast<float>(q3);
        out[l + 96] = d * static_cast<float>(sc[s + 6]) * static_cast<float>(q4);
      }
    }
  }
}

}  // namespace

const GgmlTypeInfo* FindGgmlType(uint32_t value) {
  for (const GgmlTypeInfo& info : kGgmlTypes) {
    if (static_cast<uint32_t>(info.type) == value) return &info;
  }
  return nullptr;
}

const GgmlTypeInfo& GetGgmlTypeInfo(GgmlType type) {
  const GgmlTypeInfo* info = FindGgmlType(static_cast<uint32_t>(type));
  return info != nullptr ? *info : kGgmlTypes[0];
}

std::string_view GgmlTypeName(GgmlType type) {
  const GgmlTypeInfo* info = FindGgmlType(static_cast<uint32_t>(type));
  return info != nullptr ? info->name : "unknown";
}

absl::StatusOr<uint64_t> GgmlRowBytes(GgmlType type, int64_t n) {
  const GgmlTypeInfo* info = FindGgmlType(static_cast<uint32_t>(type));
  if (info == nullptr)
    return InvalidArgumentError("unknown ggml type ", static_cast<uint32_t>(type));
  if (n < 0 || n % info->block_size != 0) {
    return InvalidArgumentError(n, " elements of ", info->name, " are not whole blocks of ",
                                info->block_size);
  }
  uint64_t bytes = 0;
  if (__builtin_mul_overflow(static_cast<uint64_t>(n / info->block_size),
                             static_cast<uint64_t>(info->type_size), &bytes)) {
    return InvalidArgumentError(n, " elements of ", info->name, " overflow a byte count");
  }
  return bytes;
}

absl::Status DequantizeRow(GgmlType type, const void* src, int64_t n, float* out) {
  const GgmlTypeInfo* info = FindGgmlType(static_cast<uint32_t>(type));
  if (info == nullptr)
    return InvalidArgumentError("unknown ggml type ", static_cast<uint32_t>(type));
  if (!info->dequantizable) {
    return UnimplementedError("cannot dequantize ggml type ", info->name);
  }
  if (n < 0 || n % info->block_size != 0) {
    return InvalidArgumentError("cannot dequantize ", n, " elements of ", info->name,
                                ": not a multiple of its block size ", info->block_size);
  }
  const auto* x = static_cast<const uint8_t*>(src);
  const int64_t blocks = n / info->block_size;
  switch (type) {
    case GgmlType::kF32:
      if (n > 0) std::memcpy(out, x, static_cast<size_t>(n) * sizeof(float));
      break;
    case GgmlType::kF16:
      for (int64_t i = 0; i < n; ++i) out[i] = F16ToFloat(Load16(x + 2 * i));
      break;
    case GgmlType::kBF16:
      for (int64_t i = 0; i < n; ++i) out[i] = BF16ToFloat(Load16(x + 2 * i));
      break;
    case GgmlType::kQ4_0:
      DequantizeQ4_0(x, blocks, out);
      break;
    case GgmlType::kQ4_1:
      DequantizeQ4_1(x, blocks, out);
      break;
    case GgmlType::kQ8_0:
      DequantizeQ8_0(x, blocks, out);
      break;
    case GgmlType::kQ4_K:
      DequantizeQ4_K(x, blocks, out);
      break;
    case GgmlType::kQ5_K:
      DequantizeQ5_K(x, blocks, out);
      break;
    case GgmlType::kQ6_K:
      DequantizeQ6_K(x, blocks, out);
      break;
    default:
      return UnimplementedError("cannot dequantize ggml type ", info->name);
  }
  return absl::OkStatus();
}

}  // namespace krasis
