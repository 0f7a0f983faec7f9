// The group-quantized weight formats of the CPU experts (and the other decode
// weights that choose them), and their memory layout. This header is the one
// place the layout is defined: the quantizer writes it, the kernels read it, the
// conversion cache stores it byte for byte.
//
// Quantization: symmetric (no zero point), per row and per group of `group_size`
// consecutive input columns (default 128; a power of two >= 32 that divides cols):
//   q = round(w / scale) clamped to [QuantMin, QuantMax],  w ~= q * scale
// INT8: scale = max|w| / 127, codes -127..127. INT4: codes -8..7, and the scale
// is the one with the least squared error among s * max|w| / (7 + i/4), i = 0..8,
// where s = -sign of the largest-magnitude weight (so that weight may use code
// -8; the scale is then negative when it is positive), and -s * max|w| / 7.
//
// Layout: rows are cut into tiles of kTileRows = 16 (the last tile padded with
// zero rows). Within a tile, for each group, the codes of the 16 rows are
// interleaved so that one 64-byte load holds 4 (INT8) or 8 (INT4) consecutive
// columns of all 16 rows -- what one AVX-512 VNNI dot-product instruction (or two
// AVX2 halves) consumes against 4 broadcast activation bytes:
//
//   INT8: codes stored unsigned, u = q + 128 (1..255).
//     data[tile][group][quad][row 0..15][byte 0..3], quad = 4 columns:
//     byte j of (row r, quad c) is column group*G + 4c + j of row tile*16 + r.
//     Bytes per tile and group: 16 * G.
//   INT4: codes stored unsigned, u = q + 8 (0..15), two per byte.
//     data[tile][group][octet][row 0..15][byte 0..3], octet = 8 columns:
//     byte j of (row r, octet c) holds column group*G + 8c + j in its low nibble
//     and column group*G + 8c + 4 + j in its high nibble. Bytes per tile and
//     group: 8 * G.
//   scales[tile][group][row 0..15] as float32 (0 for padding rows).
//
// The unsigned offset lets the kernels multiply unsigned weight bytes by signed
// INT8 activations (VNNI's u8 x s8) and subtract offset * sum(activations of the
// group) once per group, instead of sign-extending every weight.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>
#include <vector>

namespace krasis::quant {

enum class QuantFormat : uint8_t { kInt8 = 1, kInt4 = 2 };

inline constexpr int64_t kTileRows = 16;

std::string_view QuantFormatName(QuantFormat format);

// Code range [QuantMin, QuantMax] and the stored offset (128 or 8).
inline constexpr int QuantMax(QuantFormat f) { return f == QuantFormat::kInt8 ? 127 : 7; }
inline constexpr int QuantMin(QuantFormat f) { return f == QuantFormat::kInt8 ? -127 : -8; }
inline constexpr int QuantOffset(QuantFormat f) { return f == QuantFormat::kInt8 ? 128 : 8; }

// A quantized [rows, cols] matrix (y = W x computes rows outputs from cols inputs).
// Owns its bytes, or views bytes owned elsewhere (a mapped cache file).
struct QuantizedMatrix {
  QuantFormat format = QuantFormat::kInt8;
  int64_t rows = 0, cols = 0, group_size = 128;
  const uint8_t* data = nullptr;  // layout above
  const float* scales = nullptr;  // [tiles][groups][16]
  std::vector<uint8_t> owned_data;
  std::vector<float> owned_scales;

  int64_t tiles() const { return (rows + kTileRows - 1) / kTileRows; }
  int64_t groups() const { return cols / group_size; }
  // Bytes of codes per tile and group.
  int64_t group_bytes() const { return format == QuantFormat::kInt8 ? 16 * group_size : 8 * group_size; }
  size_t data_bytes() const { return static_cast<size_t>(tiles() * groups() * group_bytes()); }
  size_t scale_count() const { return static_cast<size_t>(tiles() * groups() * kTileRows); }
  // Bytes a full pass over the matrix reads (codes + scales).
  size_t bytes() const { return data_bytes() + scale_count() * sizeof(float); }

  // The signed code of (row, col), decoded from the layout.
  int Code(int64_t row, int64_t col) const;
  float Scale(int64_t row, int64_t col) const {
    return scales[((row / kTileRows) * groups() + col / group_size) * kTileRows + row % kTileRows];
  }
};

// The group size used for `cols` when `requested` is asked for: the largest
// power of two <= requested, >= 32, dividing cols; 0 when there is none.
int64_t ChooseGroupSize(int64_t cols, int64_t requested);

}  // namespace krasis::quant
