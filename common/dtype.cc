// Element types and scalar conversions (see dtype.h). Bit manipulation follows
// IEEE 754 binary16 / bfloat16 and the OCP FP8 E4M3 ("fn") definition, rounding
// to nearest even as PyTorch does.
#include "common/dtype.h"

#include <bit>
#include <cmath>
#include <cstring>
#include <limits>

namespace krasis {

size_t DTypeSize(DType dtype) {
  switch (dtype) {
    case DType::kBF16:
    case DType::kF16:
      return 2;
    case DType::kF32:
    case DType::kI32:
      return 4;
    case DType::kF8E4M3:
    case DType::kI8:
    case DType::kU8:
      return 1;
    case DType::kI64:
      return 8;
  }
  return 0;
}

std::string_view DTypeName(DType dtype) {
  switch (dtype) {
    case DType::kBF16: return "BF16";
    case DType::kF16: return "F16";
    case DType::kF32: return "F32";
    case DType::kF8E4M3: return "F8_E4M3";
    case DType::kI8: return "I8";
    case DType::kU8: return "U8";
    case DType::kI32: return "I32";
    case DType::kI64: return "I64";
  }
  return "?";
}

std::optional<DType> ParseDType(std::string_view name) {
  for (DType d : {DType::kBF16, DType::kF16, DType::kF32, DType::kF8E4M3, DType::kI8,
                  DType::kU8, DType::kI32, DType::kI64}) {
    if (DTypeName(d) == name) return d;
  }
  return std::nullopt;
}

bool IsFloatingDType(DType dtype) {
  return dtype == DType::kBF16 || dtype == DType::kF16 || dtype == DType::kF32 ||
         dtype == DType::kF8E4M3;
}

float BF16ToFloat(uint16_t bits) {
  return std::bit_cast<float>(static_cast<uint32_t>(bits) << 16);
}

uint16_t FloatToBF16(float value) {
  uint32_t u = std::bit_cast<uint32_t>(value);
  if (std::isnan(value)) {
    // Keep sign and payload's top bits, force a quiet NaN.
    return static_cast<uint16_t>((u >> 16) | 0x0040);
  }
  uint32_t rounding_bias = 0x7FFF + ((u >> 16) & 1);
  return static_cast<uint16_t>((u + rounding_bias) >> 16);
}

float F16ToFloat(uint16_t bits) {
  uint32_t sign = static_cast<uint32_t>(bits & 0x8000) << 16;
  uint32_t exp = (bits >> 10) & 0x1F;
  uint32_t mant = bits & 0x3FF;
  if (exp == 0) {
    // Zero or subnormal: mant * 2^-24.
    float v = std::ldexp(static_cast<float>(mant), -24);
    return sign ? -v : v;
  }
  if (exp == 0x1F) {
    return std::bit_cast<float>(sign | 0x7F800000u | (mant << 13));
  }
  return std::bit_cast<float>(sign | ((exp + 112) << 23) | (mant << 13));
}

uint16_t FloatToF16(float value) {
  uint32_t u = std::bit_cast<uint32_t>(value);
  uint16_t sign = static_cast<uint16_t>((u >> 16) & 0x8000);
  uint32_t abs = u & 0x7FFFFFFF;
  if (abs > 0x7F800000) return sign | 0x7E00 | static_cast<uint16_t>((abs >> 13) & 0x3FF);  // NaN
  if (abs >= 0x477FF000) return sign | 0x7C00;  // rounds to >= 65520: infinity
  if (abs < 0x38800000) {
    // Result is subnormal (or zero) in half: value / 2^-24, rounded to nearest even.
    float a = std::bit_cast<float>(abs);
    float scaled = a * 16777216.0f;  // exact: power of two
    float r = std::nearbyint(scaled);  // default rounding mode is nearest-even
    return sign | static_cast<uint16_t>(r);
  }
  // Normal: rebias exponent, round mantissa 23 -> 10 bits to nearest even.
  uint32_t rebased = abs - (112u << 23);
  uint32_t bias = 0xFFF + ((rebased >> 13) & 1);
  return sign | static_cast<uint16_t>((rebased + bias) >> 13);
}

float F8E4M3ToFloat(uint8_t bits) {
  uint32_t sign = bits & 0x80;
  uint32_t exp = (bits >> 3) & 0xF;
  uint32_t mant = bits & 0x7;
  float v;
  if (exp == 0xF && mant == 0x7) {
    v = std::numeric_limits<float>::quiet_NaN();
  } else if (exp == 0) {
    v = std::ldexp(static_cast<float>(mant), -9);  // subnormal: mant/8 * 2^-6
  } else {
    v = std::ldexp(1.0f + static_cast<float>(mant) / 8.0f, static_cast<int>(exp) - 7);
  }
  return sign ? -v : v;
}

uint8_t FloatToF8E4M3(float value, bool saturate) {
  uint32_t u = std::bit_cast<uint32_t>(value);
  uint8_t sign = static_cast<uint8_t>((u >> 24) & 0x80);
  float a = std::fabs(value);
  if (std::isnan(value)) return sign | 0x7F;
  if (a >= 480.0f || std::isinf(value)) return saturate ? (sign | 0x7E) : (sign | 0x7F);
  if (a < 0.015625f) {
    // Subnormal range (below 2^-6): multiples of 2^-9, nearest even.
    float r = std::nearbyint(a * 512.0f);
    return sign | static_cast<uint8_t>(r);  // r == 8 lands on the smallest normal
  }
  int exp;
  float frac = std::frexp(a, &exp);  // a = frac * 2^exp, frac in [0.5, 1)
  // a = (1 + m/8) * 2^(exp-1); mantissa units of 2^(exp-4).
  float m = std::nearbyint((frac * 2.0f - 1.0f) * 8.0f);
  int e = exp - 1 + 7;
  if (m >= 8.0f) {
    m = 0.0f;
    ++e;
  }
  uint8_t bits = static_cast<uint8_t>((e << 3) | static_cast<int>(m));
  // 464 < a < 480 rounds to S.1111.111, the NaN pattern, exactly as torch does.
  if (bits > 0x7E) bits = saturate ? 0x7E : 0x7F;
  return sign | bits;
}

void ConvertFromFloat(DType dtype, const float* src, void* dst, size_t count) {
  auto* out = static_cast<uint16_t*>(dst);
  switch (dtype) {
    case DType::kBF16:
      for (size_t i = 0; i < count; ++i) out[i] = FloatToBF16(src[i]);
      return;
    case DType::kF16:
      for (size_t i = 0; i < count; ++i) out[i] = FloatToF16(src[i]);
      return;
    default:
      std::memcpy(dst, src, count * sizeof(float));
  }
}

void ConvertToFloat(DType dtype, const void* src, float* dst, size_t count) {
  switch (dtype) {
    case DType::kBF16: {
      auto* s = static_cast<const uint16_t*>(src);
      for (size_t i = 0; i < count; ++i) dst[i] = BF16ToFloat(s[i]);
      return;
    }
    case DType::kF16: {
      auto* s = static_cast<const uint16_t*>(src);
      for (size_t i = 0; i < count; ++i) dst[i] = F16ToFloat(s[i]);
      return;
    }
    case DType::kF32: {
      auto* s = static_cast<const float*>(src);
      for (size_t i = 0; i < count; ++i) dst[i] = s[i];
      return;
    }
    case DType::kF8E4M3: {
      auto* s = static_cast<const uint8_t*>(src);
      for (size_t i = 0; i < count; ++i) dst[i] = F8E4M3ToFloat(s[i]);
      return;
    }
    case DType::kI8: {
      auto* s = static_cast<const int8_t*>(src);
      for (size_t i = 0; i < count; ++i) dst[i] = s[i];
      return;
    }
    case DType::kU8: {
      auto* s = static_cast<const uint8_t*>(src);
      for (size_t i = 0; i < count; ++i) dst[i] = s[i];
      return;
    }
    case DType::kI32: {
      auto* s = static_cast<const int32_t*>(src);
      for (size_t i = 0; i < count; ++i) dst[i] = static_cast<float>(s[i]);
      return;
    }
    case DType::kI64: {
      auto* s = static_cast<const int64_t*>(src);
      for (size_t i = 0; i < count; ++i) dst[i] = static_cast<float>(s[i]);
      return;
    }
  }
}

}  // namespace krasis
