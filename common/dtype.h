// Element types of checkpoint tensors and the scalar conversions between them.
//
// DType names follow the safetensors format ("BF16", "F8_E4M3", ...). The
// conversions are bit-exact with PyTorch's: round-to-nearest-even, NaN kept NaN,
// F16 overflow to infinity, subnormals kept; F8 E4M3 is the "fn" variant (no
// infinities, max 448, NaN = S.1111.111), and like torch a float that rounds past
// 448 (magnitude above 464, or an infinity) becomes NaN unless the caller asks for
// saturation.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string_view>

namespace krasis {

enum class DType : uint8_t {
  kBF16,
  kF16,
  kF32,
  kF8E4M3,
  kI8,
  kU8,
  kI32,
  kI64,
};

// Bytes per element.
size_t DTypeSize(DType dtype);
// The safetensors spelling: "BF16", "F16", "F32", "F8_E4M3", "I8", "U8", "I32", "I64".
std::string_view DTypeName(DType dtype);
// Inverse of DTypeName; nullopt for anything else.
std::optional<DType> ParseDType(std::string_view name);
// True for the floating-point types.
bool IsFloatingDType(DType dtype);

float BF16ToFloat(uint16_t bits);
uint16_t FloatToBF16(float value);
float F16ToFloat(uint16_t bits);
uint16_t FloatToF16(float value);
float F8E4M3ToFloat(uint8_t bits);
// saturate=false: torch semantics (|x| > 464 or inf -> NaN). saturate=true: clamp
// to +-448 (what quantizers want); NaN stays NaN either way.
uint8_t FloatToF8E4M3(float value, bool saturate = false);

// Converts `count` elements of `dtype` at `src` to float32 in `dst`. Integer types
// convert by value.
void ConvertToFloat(DType dtype, const void* src, float* dst, size_t count);

// The inverse for the float types a KV cache or a GPU upload stores: `count`
// floats at `src` to F32, BF16 or F16 at `dst` (round to nearest even); any
// other dtype is written as F32.
void ConvertFromFloat(DType dtype, const float* src, void* dst, size_t count);

}  // namespace krasis
