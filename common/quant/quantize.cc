// Weight and activation quantization (see quantize.h, quant_format.h).
#include "common/quant/quantize.h"

// GCC 12 reports its own _mm512_undefined_* inside the AVX-512 reductions as
// "maybe uninitialized" (a false positive in its headers).
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#include <immintrin.h>

#include <algorithm>
#include <cmath>

#include "common/dtype.h"
#include "common/quant/qgemm.h"
#include "common/status.h"

namespace krasis::quant {

std::string_view QuantFormatName(QuantFormat format) {
  return format == QuantFormat::kInt8 ? "int8" : "int4";
}

int64_t ChooseGroupSize(int64_t cols, int64_t requested) {
  int64_t g = 1;
  while (g * 2 <= requested) g *= 2;
  for (; g >= 32; g /= 2) {
    if (cols % g == 0) return g;
  }
  return 0;
}

namespace {

// Round to nearest, ties to even, for |v| < 2^22 (all codes here), inline and
// vectorizable: the same result as std::lrint in the default rounding mode,
// without a libm call per weight.
// (Without -ffast-math the compiler may not fold (v + M) - M.)
inline float RoundNearest(float v) {
  constexpr float kMagic = 12582912.0f;  // 1.5 * 2^23
  return (v + kMagic) - kMagic;
}

// Squared error of quantizing w[0, n) to INT4 codes with `scale` (n % 8 == 0).
__attribute__((target("avx2,fma"))) float Int4ErrorAvx2(const float* w, int64_t n, float scale, float inv) {
  const __m256 vinv = _mm256_set1_ps(inv), vscale = _mm256_set1_ps(scale);
  const __m256 lo = _mm256_set1_ps(-8.0f), hi = _mm256_set1_ps(7.0f);
  __m256 acc = _mm256_setzero_ps();
  for (int64_t k = 0; k < n; k += 8) {
    const __m256 x = _mm256_loadu_ps(w + k);
    __m256 q = _mm256_round_ps(_mm256_mul_ps(x, vinv), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    q = _mm256_min_ps(hi, _mm256_max_ps(lo, q));
    const __m256 d = _mm256_fnmadd_ps(q, vscale, x);
    acc = _mm256_fmadd_ps(d, d, acc);
  }
  alignas(32) float lanes[8];
  _mm256_store_ps(lanes, acc);
  float sum = 0.0f;
  for (float v : lanes) sum += v;
  return sum;
}

// INT4 scale of one group: the largest magnitude should be able to use code -8,
// so the sign is -sign(that weight); among amax / (7 + i/4), i = 0..8, with that
// sign, and amax / 7 with the other, the one whose codes clamped to [-8, 7]
// reconstruct the group with the least squared error.
float Int4Scale(const float* w, int64_t n, float amax) {
  if (amax == 0.0f) return 0.0f;
  float signed_max = 0.0f;
  for (int64_t k = 0; k < n; ++k) {
    if (std::fabs(w[k]) == amax) {
      signed_max = w[k];
      break;
    }
  }
  const float sign = signed_max > 0.0f ? -1.0f : 1.0f;
  float candidates[10];
  for (int i = 0; i <= 8; ++i) candidates[i] = sign * amax / (7.0f + 0.25f * static_cast<float>(i));
  candidates[9] = -sign * amax / 7.0f;
  float best = candidates[0];
  float best_err = -1.0f;
  static const bool avx2 = IsaSupported(Isa::kAvx2);
  for (float scale : candidates) {
    const float inv = 1.0f / scale;
    float err = 0.0f;
    if (avx2 && n % 8 == 0) {
      err = Int4ErrorAvx2(w, n, scale, inv);
    } else {
      for (int64_t k = 0; k < n; ++k) {
        const float q = std::min(7.0f, std::max(-8.0f, RoundNearest(w[k] * inv)));
        const float d = w[k] - q * scale;
        err += d * d;
      }
    }
    if (best_err < 0.0f || err < best_err) {
      best_err = err;
      best = scale;
    }
  }
  return best;
}

}  // namespace

int QuantizedMatrix::Code(int64_t row, int64_t col) const {
  const int64_t tile = row / kTileRows, r = row % kTileRows;
  const int64_t g = col / group_size, k = col % group_size;
  const uint8_t* base = data + (tile * groups() + g) * group_bytes();
  if (format == QuantFormat::kInt8) {
    return static_cast<int>(base[(k / 4) * 64 + r * 4 + k % 4]) - 128;
  }
  const int64_t octet = k / 8, j = k % 8;
  const uint8_t byte = base[octet * 64 + r * 4 + (j % 4)];
  return static_cast<int>(j < 4 ? (byte & 0x0F) : (byte >> 4)) - 8;
}

absl::StatusOr<QuantizedMatrix> QuantizeMatrix(const float* w, int64_t rows, int64_t cols, QuantFormat format,
                                               int64_t group_size, std::string_view what) {
  const int64_t g = ChooseGroupSize(cols, group_size);
  if (rows < 1 || g == 0) {
    return InvalidArgumentError(what, ": a [", rows, ", ", cols, "] matrix cannot be group-quantized (",
                                "columns must be a multiple of 32)");
  }
  QuantizedMatrix m;
  m.format = format;
  m.rows = rows;
  m.cols = cols;
  m.group_size = g;
  m.owned_data.assign(m.data_bytes(), 0);
  m.owned_scales.assign(m.scale_count(), 0.0f);
  const int qmax = QuantMax(format);
  const int offset = QuantOffset(format);
  // Padding rows keep code 0 (stored as the offset) and scale 0.
  if (format == QuantFormat::kInt8) {
    std::fill(m.owned_data.begin(), m.owned_data.end(), static_cast<uint8_t>(offset));
  } else {
    std::fill(m.owned_data.begin(), m.owned_data.end(), static_cast<uint8_t>(offset | (offset << 4)));
  }
  for (int64_t row = 0; row < rows; ++row) {
    const int64_t tile = row / kTileRows, r = row % kTileRows;
    for (int64_t grp = 0; grp < m.groups(); ++grp) {
      const float* src = w + row * cols + grp * g;
      float amax = 0.0f;
      for (int64_t k = 0; k < g; ++k) amax = std::max(amax, std::fabs(src[k]));
      const float scale = format == QuantFormat::kInt8 ? amax / static_cast<float>(qmax) : Int4Scale(src, g, amax);
      const float inv = scale != 0.0f ? 1.0f / scale : 0.0f;
      m.owned_scales[static_cast<size_t>((tile * m.groups() + grp) * kTileRows + r)] = scale;
      uint8_t* base = m.owned_data.data() + (tile * m.groups() + grp) * m.group_bytes();
      for (int64_t k = 0; k < g; ++k) {
        int q = static_cast<int>(RoundNearest(src[k] * inv));
        q = std::clamp(q, QuantMin(format), qmax);
        const auto u = static_cast<uint8_t>(q + offset);
        if (format == QuantFormat::kInt8) {
          base[(k / 4) * 64 + r * 4 + k % 4] = u;
        } else {
          uint8_t& byte = base[(k / 8) * 64 + r * 4 + (k % 8) % 4];
          byte = (k % 8) < 4 ? static_cast<uint8_t>((byte & 0xF0) | u) : static_cast<uint8_t>((byte & 0x0F) | (u << 4));
        }
      }
    }
  }
  m.data = m.owned_data.data();
  m.scales = m.owned_scales.data();
  return m;
}

absl::StatusOr<QuantizedMatrix> QuantizeMatrix(const TensorView& w, QuantFormat format, int64_t group_size,
                                               std::string_view what) {
  if (w.rank() != 2) return InvalidArgumentError(what, ": expected a matrix, got rank ", w.rank());
  std::vector<float> f = ToFloatVector(w);
  return QuantizeMatrix(f.data(), w.dim(0), w.dim(1), format, group_size, what);
}

std::vector<float> DequantizeMatrix(const QuantizedMatrix& m) {
  std::vector<float> out(static_cast<size_t>(m.rows * m.cols));
  for (int64_t row = 0; row < m.rows; ++row) {
    for (int64_t col = 0; col < m.cols; ++col) {
      out[static_cast<size_t>(row * m.cols + col)] = static_cast<float>(m.Code(row, col)) * m.Scale(row, col);
    }
  }
  return out;
}

namespace {
// One group of activations (n a multiple of 16) with the scalar loop's exact
// results: the same amax, scale and 1/scale, and cvtps rounds to nearest even
// as RoundNearest does. Decode quantizes every projection's input this way on
// the calling thread, between dispatches, so the scalar loop was serial time.
__attribute__((target("avx512f,avx512bw,avx512vl"))) void QuantizeGroupAvx512(const float* src, int64_t n,
                                                                              int8_t* dst, float* scale_out,
                                                                              int32_t* sum_out) {
  __m512 m = _mm512_setzero_ps();
  for (int64_t k = 0; k < n; k += 16) m = _mm512_max_ps(m, _mm512_abs_ps(_mm512_loadu_ps(src + k)));
  const float amax = _mm512_reduce_max_ps(m);
  const float scale = amax / 127.0f;
  const float inv = scale > 0.0f ? 1.0f / scale : 0.0f;
  const __m512 vinv = _mm512_set1_ps(inv);
  const __m512i lo = _mm512_set1_epi32(-127), hi = _mm512_set1_epi32(127);
  __m512i sum = _mm512_setzero_si512();
  for (int64_t k = 0; k < n; k += 16) {
    __m512i q = _mm512_cvtps_epi32(_mm512_mul_ps(_mm512_loadu_ps(src + k), vinv));
    q = _mm512_min_epi32(_mm512_max_epi32(q, lo), hi);
    sum = _mm512_add_epi32(sum, q);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + k), _mm512_cvtepi32_epi8(q));
  }
  *scale_out = scale;
  *sum_out = _mm512_reduce_add_epi32(sum);
}
}  // namespace

void QuantizeActivations(const float* x, int64_t n, int64_t cols, int64_t group_size, QuantizedActivations* out,
                         bool simd) {
  out->n = n;
  out->cols = cols;
  out->group_size = group_size;
  const int64_t groups = cols / group_size;
  out->q.resize(static_cast<size_t>(n * cols));
  out->scale.resize(static_cast<size_t>(n * groups));
  out->sum.resize(static_cast<size_t>(n * groups));
  static const bool avx512 = HasAvx512(BestIsa());
  for (int64_t t = 0; t < n; ++t) {
    for (int64_t g = 0; g < groups; ++g) {
      const float* src = x + t * cols + g * group_size;
      int8_t* dst = out->q.data() + t * cols + g * group_size;
      if (simd && avx512 && group_size % 16 == 0) {
        QuantizeGroupAvx512(src, group_size, dst, &out->scale[static_cast<size_t>(t * groups + g)],
                            &out->sum[static_cast<size_t>(t * groups + g)]);
        continue;
      }
      float amax = 0.0f;
      for (int64_t k = 0; k < group_size; ++k) amax = std::max(amax, std::fabs(src[k]));
      const float scale = amax / 127.0f;
      const float inv = scale > 0.0f ? 1.0f / scale : 0.0f;
      int32_t sum = 0;
      for (int64_t k = 0; k < group_size; ++k) {
        const int q = std::clamp(static_cast<int>(RoundNearest(src[k] * inv)), -127, 127);
        dst[k] = static_cast<int8_t>(q);
        sum += q;
      }
      out->scale[static_cast<size_t>(t * groups + g)] = scale;
      out->sum[static_cast<size_t>(t * groups + g)] = sum;
    }
  }
}

}  // namespace krasis::quant
