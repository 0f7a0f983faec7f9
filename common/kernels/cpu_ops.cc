// Fast CPU Ops (see cpu_ops.h). The SIMD loops carry per-function target
// attributes, so the build stays baseline x86-64 and quant::BestIsa() (which
// honours KRASIS_ISA) picks the path at run time.
#include "common/kernels/cpu_ops.h"

// GCC 12 reports its own _mm512_undefined_* inside some conversion intrinsics as
// "maybe uninitialized" (a false positive in its headers).
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
// Vector types inside the attention tiles' templates, compiled for their
// targets only where flattened into the wrappers that carry them.
#pragma GCC diagnostic ignored "-Wpsabi"
#include <immintrin.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <memory>
#include <vector>

#include "common/kernels/reference.h"
#include "common/quant/qgemm.h"

namespace krasis {

namespace {

std::atomic<uint64_t> dense_bytes{0};

using quant::Isa;

// ---------------------------------------------------------------- AVX-512 ---

template <DType D>
__attribute__((target("avx512f,avx512bw,avx512vl"))) inline __m512 Load16(const std::byte* w, int64_t i) {
  if constexpr (D == DType::kF32) {
    return _mm512_loadu_ps(reinterpret_cast<const float*>(w) + i);
  } else {
    const __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(reinterpret_cast<const uint16_t*>(w) + i));
    if constexpr (D == DType::kF16) return _mm512_cvtph_ps(h);
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
  }
}

template <DType D>
__attribute__((target("avx512f,avx512bw,avx512vl"))) inline __m512 Load16Masked(const std::byte* w, int64_t i,
                                                                               int64_t count) {
  const __mmask16 m = static_cast<__mmask16>((1u << count) - 1);
  if constexpr (D == DType::kF32) {
    return _mm512_maskz_loadu_ps(m, reinterpret_cast<const float*>(w) + i);
  } else {
    const __m256i h = _mm256_maskz_loadu_epi16(m, reinterpret_cast<const uint16_t*>(w) + i);
    if constexpr (D == DType::kF16) return _mm512_cvtph_ps(h);
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
  }
}

// y[t * ys + r] = x[t] . w[r] for rows [r0, r1) and tokens t < NB.
template <DType D, int NB>
__attribute__((target("avx512f,avx512bw,avx512vl"))) void RowsAvx512(const float* x, int64_t in,
                                                                    const std::byte* w, int64_t r0, int64_t r1,
                                                                    float* y, int64_t ys) {
  const size_t esize = DTypeSize(D);
  const int64_t full = in / 16 * 16;
  const quant::WeightPrefetch& prefetch = quant::WeightPrefetchSetting();
  // The range's first bytes now, and nothing past its end later (as the
  // quantized batch-1 kernel does; see quant::WeightPrefetch::range_start).
  const std::byte* range_begin = w + static_cast<size_t>(r0 * in) * esize;
  const std::byte* range_end = w + static_cast<size_t>(r1 * in) * esize;
  if (prefetch.bytes != 0 && prefetch.range_start) {
    quant::PrefetchWeightBytes(range_begin, std::min<int64_t>(range_end - range_begin, prefetch.bytes), prefetch.l1);
  } else {
    range_end += prefetch.bytes;
  }
  for (int64_t r = r0; r < r1; ++r) {
    const std::byte* row = w + static_cast<size_t>(r * in) * esize;
    __m512 acc[NB][2];
    for (int b = 0; b < NB; ++b) acc[b][0] = acc[b][1] = _mm512_setzero_ps();
    int64_t i = 0;
    for (; i + 32 <= full; i += 32) {
      // The weight stream ahead of the loads, as the quantized batch-1 kernel does.
      const std::byte* ahead = row + static_cast<size_t>(i) * esize + prefetch.bytes;
      if (prefetch.bytes != 0 && ahead < range_end) quant::PrefetchWeightLine(ahead, prefetch.l1);
      const __m512 w0 = Load16<D>(row, i), w1 = Load16<D>(row, i + 16);
      for (int b = 0; b < NB; ++b) {
        acc[b][0] = _mm512_fmadd_ps(w0, _mm512_loadu_ps(x + b * in + i), acc[b][0]);
        acc[b][1] = _mm512_fmadd_ps(w1, _mm512_loadu_ps(x + b * in + i + 16), acc[b][1]);
      }
    }
    for (; i < full; i += 16) {
      const __m512 w0 = Load16<D>(row, i);
      for (int b = 0; b < NB; ++b) acc[b][0] = _mm512_fmadd_ps(w0, _mm512_loadu_ps(x + b * in + i), acc[b][0]);
    }
    if (i < in) {
      const __m512 w0 = Load16Masked<D>(row, i, in - i);
      const __mmask16 m = static_cast<__mmask16>((1u << (in - i)) - 1);
      for (int b = 0; b < NB; ++b) {
        acc[b][0] = _mm512_fmadd_ps(w0, _mm512_maskz_loadu_ps(m, x + b * in + i), acc[b][0]);
      }
    }
    for (int b = 0; b < NB; ++b) y[b * ys + r] = _mm512_reduce_add_ps(_mm512_add_ps(acc[b][0], acc[b][1]));
  }
}

// a . b for a in float and b in D (widened as loaded).
template <DType D>
__attribute__((target("avx512f,avx512bw,avx512vl"))) float DotAvx512(const float* a, const std::byte* b, int64_t n) {
  __m512 s0 = _mm512_setzero_ps(), s1 = _mm512_setzero_ps();
  int64_t i = 0;
  for (; i + 32 <= n; i += 32) {
    s0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), Load16<D>(b, i), s0);
    s1 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i + 16), Load16<D>(b, i + 16), s1);
  }
  if (i + 16 <= n) {
    s0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), Load16<D>(b, i), s0);
    i += 16;
  }
  if (i < n) {
    const __mmask16 m = static_cast<__mmask16>((1u << (n - i)) - 1);
    s1 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, a + i), Load16Masked<D>(b, i, n - i), s1);
  }
  return _mm512_reduce_add_ps(_mm512_add_ps(s0, s1));
}

// y += alpha * x for x in D.
template <DType D>
__attribute__((target("avx512f,avx512bw,avx512vl"))) void AxpyAvx512(float alpha, const std::byte* x, float* y,
                                                                     int64_t n) {
  const __m512 a = _mm512_set1_ps(alpha);
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) _mm512_storeu_ps(y + i, _mm512_fmadd_ps(a, Load16<D>(x, i), _mm512_loadu_ps(y + i)));
  if (i < n) {
    const __mmask16 m = static_cast<__mmask16>((1u << (n - i)) - 1);
    _mm512_mask_storeu_ps(y + i, m, _mm512_fmadd_ps(a, Load16Masked<D>(x, i, n - i), _mm512_maskz_loadu_ps(m, y + i)));
  }
}


// e^x for x clamped to [-87.3, 88.3] (no infinities, no denormals): x = n ln2 + r
// with |r| <= ln2 / 2, e^r by its Taylor series to r^7 (relative error about
// 1e-8, under float's rounding), times 2^n.
__attribute__((target("avx512f,avx512bw,avx512vl"))) inline __m512 ExpAvx512(__m512 x) {
  // Bound first, x second: max/min return their second operand when either is
  // NaN, so a NaN stays NaN (and reaches the caller) instead of being clamped.
  x = _mm512_min_ps(_mm512_set1_ps(88.3f), _mm512_max_ps(_mm512_set1_ps(-87.3f), x));
  const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504f)),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693145752f), x);  // ln2 in two parts: n * hi is exact
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(1.42860677e-6f), r);
  __m512 p = _mm512_set1_ps(1.0f / 5040);
  for (float c : {1.0f / 720, 1.0f / 120, 1.0f / 24, 1.0f / 6, 0.5f, 1.0f, 1.0f}) {
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(c));
  }
  return _mm512_scalef_ps(p, n);
}

// out = silu(gate) * up (up null: silu(gate)); out may be gate or up.
__attribute__((target("avx512f,avx512bw,avx512vl"))) void SiluMulAvx512(const float* gate, const float* up,
                                                                       int64_t n, float* out) {
  const __m512 one = _mm512_set1_ps(1.0f);
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 m = static_cast<__mmask16>(n - i >= 16 ? 0xFFFF : (1u << (n - i)) - 1);
    const __m512 g = _mm512_maskz_loadu_ps(m, gate + i);
    __m512 y = _mm512_div_ps(g, _mm512_add_ps(one, ExpAvx512(_mm512_sub_ps(_mm512_setzero_ps(), g))));
    if (up != nullptr) y = _mm512_mul_ps(y, _mm512_maskz_loadu_ps(m, up + i));
    _mm512_mask_storeu_ps(out + i, m, y);
  }
}

// x *= sigmoid(gate).
__attribute__((target("avx512f,avx512bw,avx512vl"))) void SigmoidMulAvx512(const float* gate, int64_t n, float* x) {
  const __m512 one = _mm512_set1_ps(1.0f);
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 m = static_cast<__mmask16>(n - i >= 16 ? 0xFFFF : (1u << (n - i)) - 1);
    const __m512 g = _mm512_maskz_loadu_ps(m, gate + i);
    const __m512 y = _mm512_div_ps(_mm512_maskz_loadu_ps(m, x + i),
                                   _mm512_add_ps(one, ExpAvx512(_mm512_sub_ps(_mm512_setzero_ps(), g))));
    _mm512_mask_storeu_ps(x + i, m, y);
  }
}

// x[i] = e^(x[i] - shift) in place; returns their sum (a softmax's numerators).
__attribute__((target("avx512f,avx512bw,avx512vl"))) float ExpSumAvx512(float* x, int64_t n, float shift) {
  const __m512 s = _mm512_set1_ps(shift);
  __m512 sum = _mm512_setzero_ps();
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 m = static_cast<__mmask16>(n - i >= 16 ? 0xFFFF : (1u << (n - i)) - 1);
    const __m512 e = _mm512_maskz_mov_ps(m, ExpAvx512(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, x + i), s)));
    _mm512_mask_storeu_ps(x + i, m, e);
    sum = _mm512_add_ps(sum, e);
  }
  return _mm512_reduce_add_ps(sum);
}

// The gated delta rule of one head (see cpu::GatedDeltaRule), 64 state columns
// at a time: one read-only pass over the block's rows for k^T S, then one pass
// that updates them and accumulates q^T S. A block's rows (dk x 256 bytes) stay
// in L1/L2 between the two passes, so the state crosses the memory bus once
// each way per token.
__attribute__((target("avx512f,avx512bw,avx512vl"))) void GatedDeltaRuleAvx512(const float* q, const float* k,
                                                                              const float* v, float beta,
                                                                              float decay, float* s, int64_t dk,
                                                                              int64_t dv, float* o) {
  constexpr int kVecs = 4;
  const __m512 vdecay = _mm512_set1_ps(decay), vbeta = _mm512_set1_ps(beta);
  for (int64_t c0 = 0; c0 < dv; c0 += 16 * kVecs) {
    __mmask16 mask[kVecs];
    #pragma GCC unroll 4
    for (int u = 0; u < kVecs; ++u) {
      const int64_t left = std::clamp<int64_t>(dv - c0 - 16 * u, 0, 16);
      mask[u] = static_cast<__mmask16>((1u << left) - 1);
    }
    __m512 acc[kVecs];
    #pragma GCC unroll 4
    for (int u = 0; u < kVecs; ++u) acc[u] = _mm512_setzero_ps();
    for (int64_t i = 0; i < dk; ++i) {
      const float* row = s + i * dv + c0;
      const __m512 ki = _mm512_set1_ps(k[i]);
      #pragma GCC unroll 4
      for (int u = 0; u < kVecs; ++u) acc[u] = _mm512_fmadd_ps(ki, _mm512_maskz_loadu_ps(mask[u], row + 16 * u), acc[u]);
    }
    __m512 delta[kVecs], out[kVecs];
    #pragma GCC unroll 4
    for (int u = 0; u < kVecs; ++u) {
      // (v - decay * k^T S) * beta: k^T (decay S) with the decay taken out of the sum.
      delta[u] = _mm512_mul_ps(_mm512_fnmadd_ps(vdecay, acc[u], _mm512_maskz_loadu_ps(mask[u], v + c0 + 16 * u)), vbeta);
      out[u] = _mm512_setzero_ps();
    }
    for (int64_t i = 0; i < dk; ++i) {
      float* row = s + i * dv + c0;
      const __m512 ki = _mm512_set1_ps(k[i]), qi = _mm512_set1_ps(q[i]);
      #pragma GCC unroll 4
      for (int u = 0; u < kVecs; ++u) {
        const __m512 updated =
            _mm512_fmadd_ps(_mm512_maskz_loadu_ps(mask[u], row + 16 * u), vdecay, _mm512_mul_ps(ki, delta[u]));
        _mm512_mask_storeu_ps(row + 16 * u, mask[u], updated);
        out[u] = _mm512_fmadd_ps(qi, updated, out[u]);
      }
    }
    #pragma GCC unroll 4
    for (int u = 0; u < kVecs; ++u) _mm512_mask_storeu_ps(o + c0 + 16 * u, mask[u], out[u]);
  }
}

// ------------------------------------------------------------------- AVX2 ---

template <DType D>
__attribute__((target("avx2,fma,f16c"))) inline __m256 Load8(const std::byte* w, int64_t i) {
  if constexpr (D == DType::kF32) {
    return _mm256_loadu_ps(reinterpret_cast<const float*>(w) + i);
  } else {
    const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(reinterpret_cast<const uint16_t*>(w) + i));
    if constexpr (D == DType::kF16) return _mm256_cvtph_ps(h);
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
  }
}

__attribute__((target("avx2,fma"))) inline float Sum8(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
  return _mm_cvtss_f32(s);
}

float WidenScalar(DType d, const std::byte* w, int64_t i) {
  if (d == DType::kF32) return reinterpret_cast<const float*>(w)[i];
  const uint16_t bits = reinterpret_cast<const uint16_t*>(w)[i];
  return d == DType::kF16 ? F16ToFloat(bits) : BF16ToFloat(bits);
}

template <DType D, int NB>
__attribute__((target("avx2,fma,f16c"))) void RowsAvx2(const float* x, int64_t in, const std::byte* w, int64_t r0,
                                                       int64_t r1, float* y, int64_t ys) {
  const size_t esize = DTypeSize(D);
  const int64_t full = in / 8 * 8;
  for (int64_t r = r0; r < r1; ++r) {
    const std::byte* row = w + static_cast<size_t>(r * in) * esize;
    __m256 acc[NB][2];
    for (int b = 0; b < NB; ++b) acc[b][0] = acc[b][1] = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 16 <= full; i += 16) {
      const __m256 w0 = Load8<D>(row, i), w1 = Load8<D>(row, i + 8);
      for (int b = 0; b < NB; ++b) {
        acc[b][0] = _mm256_fmadd_ps(w0, _mm256_loadu_ps(x + b * in + i), acc[b][0]);
        acc[b][1] = _mm256_fmadd_ps(w1, _mm256_loadu_ps(x + b * in + i + 8), acc[b][1]);
      }
    }
    for (; i < full; i += 8) {
      const __m256 w0 = Load8<D>(row, i);
      for (int b = 0; b < NB; ++b) acc[b][0] = _mm256_fmadd_ps(w0, _mm256_loadu_ps(x + b * in + i), acc[b][0]);
    }
    for (int b = 0; b < NB; ++b) {
      float s = Sum8(_mm256_add_ps(acc[b][0], acc[b][1]));
      for (int64_t k = i; k < in; ++k) s += WidenScalar(D, row, k) * x[b * in + k];
      y[b * ys + r] = s;
    }
  }
}

template <DType D>
__attribute__((target("avx2,fma,f16c"))) float DotAvx2(const float* a, const std::byte* b, int64_t n) {
  __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), Load8<D>(b, i), s0);
    s1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), Load8<D>(b, i + 8), s1);
  }
  float s = Sum8(_mm256_add_ps(s0, s1));
  for (; i < n; ++i) s += a[i] * WidenScalar(D, b, i);
  return s;
}

template <DType D>
__attribute__((target("avx2,fma,f16c"))) void AxpyAvx2(float alpha, const std::byte* x, float* y, int64_t n) {
  const __m256 a = _mm256_set1_ps(alpha);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, _mm256_fmadd_ps(a, Load8<D>(x, i), _mm256_loadu_ps(y + i)));
  for (; i < n; ++i) y[i] += alpha * WidenScalar(D, x, i);
}


// ExpAvx512 with 8 lanes; 2^n built in the exponent bits.
__attribute__((target("avx2,fma"))) inline __m256 ExpAvx2(__m256 x) {
  x = _mm256_min_ps(_mm256_set1_ps(88.3f), _mm256_max_ps(_mm256_set1_ps(-87.3f), x));  // NaN stays NaN
  const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504f)),
                                   _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693145752f), x);
  r = _mm256_fnmadd_ps(n, _mm256_set1_ps(1.42860677e-6f), r);
  __m256 p = _mm256_set1_ps(1.0f / 5040);
  for (float c : {1.0f / 720, 1.0f / 120, 1.0f / 24, 1.0f / 6, 0.5f, 1.0f, 1.0f}) {
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(c));
  }
  const __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  return _mm256_mul_ps(p, _mm256_castsi256_ps(e));
}

__attribute__((target("avx2,fma"))) void SiluMulAvx2(const float* gate, const float* up, int64_t n, float* out) {
  const __m256 one = _mm256_set1_ps(1.0f);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 g = _mm256_loadu_ps(gate + i);
    __m256 y = _mm256_div_ps(g, _mm256_add_ps(one, ExpAvx2(_mm256_sub_ps(_mm256_setzero_ps(), g))));
    if (up != nullptr) y = _mm256_mul_ps(y, _mm256_loadu_ps(up + i));
    _mm256_storeu_ps(out + i, y);
  }
  for (; i < n; ++i) out[i] = ref::Silu(gate[i]) * (up != nullptr ? up[i] : 1.0f);
}

__attribute__((target("avx2,fma"))) void SigmoidMulAvx2(const float* gate, int64_t n, float* x) {
  const __m256 one = _mm256_set1_ps(1.0f);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 g = _mm256_loadu_ps(gate + i);
    _mm256_storeu_ps(x + i, _mm256_div_ps(_mm256_loadu_ps(x + i),
                                          _mm256_add_ps(one, ExpAvx2(_mm256_sub_ps(_mm256_setzero_ps(), g)))));
  }
  for (; i < n; ++i) x[i] *= ref::Sigmoid(gate[i]);
}

__attribute__((target("avx2,fma"))) float ExpSumAvx2(float* x, int64_t n, float shift) {
  const __m256 s = _mm256_set1_ps(shift);
  __m256 sum = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 e = ExpAvx2(_mm256_sub_ps(_mm256_loadu_ps(x + i), s));
    _mm256_storeu_ps(x + i, e);
    sum = _mm256_add_ps(sum, e);
  }
  float total = Sum8(sum);
  for (; i < n; ++i) total += (x[i] = std::exp(x[i] - shift));
  return total;
}

// GatedDeltaRuleAvx512 with 8 lanes: 32 state columns at a time.
__attribute__((target("avx2,fma"))) void GatedDeltaRuleAvx2(const float* q, const float* k, const float* v,
                                                            float beta, float decay, float* s, int64_t dk,
                                                            int64_t dv, float* o) {
  constexpr int kVecs = 4;
  const __m256 vdecay = _mm256_set1_ps(decay), vbeta = _mm256_set1_ps(beta);
  for (int64_t c0 = 0; c0 < dv; c0 += 8 * kVecs) {
    __m256i mask[kVecs];
    #pragma GCC unroll 4
    for (int u = 0; u < kVecs; ++u) {
      const int64_t left = std::clamp<int64_t>(dv - c0 - 8 * u, 0, 8);
      mask[u] = _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(left)), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
    }
    __m256 acc[kVecs];
    #pragma GCC unroll 4
    for (int u = 0; u < kVecs; ++u) acc[u] = _mm256_setzero_ps();
    for (int64_t i = 0; i < dk; ++i) {
      const float* row = s + i * dv + c0;
      const __m256 ki = _mm256_set1_ps(k[i]);
      #pragma GCC unroll 4
      for (int u = 0; u < kVecs; ++u) acc[u] = _mm256_fmadd_ps(ki, _mm256_maskload_ps(row + 8 * u, mask[u]), acc[u]);
    }
    __m256 delta[kVecs], out[kVecs];
    #pragma GCC unroll 4
    for (int u = 0; u < kVecs; ++u) {
      delta[u] = _mm256_mul_ps(_mm256_fnmadd_ps(vdecay, acc[u], _mm256_maskload_ps(v + c0 + 8 * u, mask[u])), vbeta);
      out[u] = _mm256_setzero_ps();
    }
    for (int64_t i = 0; i < dk; ++i) {
      float* row = s + i * dv + c0;
      const __m256 ki = _mm256_set1_ps(k[i]), qi = _mm256_set1_ps(q[i]);
      #pragma GCC unroll 4
      for (int u = 0; u < kVecs; ++u) {
        const __m256 updated =
            _mm256_fmadd_ps(_mm256_maskload_ps(row + 8 * u, mask[u]), vdecay, _mm256_mul_ps(ki, delta[u]));
        _mm256_maskstore_ps(row + 8 * u, mask[u], updated);
        out[u] = _mm256_fmadd_ps(qi, updated, out[u]);
      }
    }
    #pragma GCC unroll 4
    for (int u = 0; u < kVecs; ++u) _mm256_maskstore_ps(o + c0 + 8 * u, mask[u], out[u]);
  }
}

// ------------------------------------------------- attention tiles (both) ---
//
// The decode attention's inner loops, written once over a vector type V and
// compiled for AVX-512 and AVX2 by flattening them into wrappers with those
// targets (everything they call is inlined there).

struct V512 {
  using T = __m512;
  static constexpr int kW = 16;
  static constexpr int kChunk = 4;  // vectors of values per pass (x 4 heads = 16 accumulators)
  template <DType D>
  __attribute__((target("avx512f,avx512bw,avx512vl"))) static T LoadW(const std::byte* w, int64_t i) {
    return Load16<D>(w, i);
  }
  __attribute__((target("avx512f,avx512bw,avx512vl"))) static T Load(const float* p) { return _mm512_loadu_ps(p); }
  __attribute__((target("avx512f,avx512bw,avx512vl"))) static void Store(float* p, T v) { _mm512_storeu_ps(p, v); }
  __attribute__((target("avx512f,avx512bw,avx512vl"))) static T Fma(T a, T b, T c) { return _mm512_fmadd_ps(a, b, c); }
  __attribute__((target("avx512f,avx512bw,avx512vl"))) static T Mul(T a, T b) { return _mm512_mul_ps(a, b); }
  __attribute__((target("avx512f,avx512bw,avx512vl"))) static T Zero() { return _mm512_setzero_ps(); }
  __attribute__((target("avx512f,avx512bw,avx512vl"))) static T Set1(float x) { return _mm512_set1_ps(x); }
  __attribute__((target("avx512f,avx512bw,avx512vl"))) static float Sum(T v) { return _mm512_reduce_add_ps(v); }
};

struct V256 {
  using T = __m256;
  static constexpr int kW = 8;
  static constexpr int kChunk = 2;  // x 4 heads = 8 of the 16 registers
  template <DType D>
  __attribute__((target("avx2,fma,f16c"))) static T LoadW(const std::byte* w, int64_t i) {
    return Load8<D>(w, i);
  }
  __attribute__((target("avx2,fma"))) static T Load(const float* p) { return _mm256_loadu_ps(p); }
  __attribute__((target("avx2,fma"))) static void Store(float* p, T v) { _mm256_storeu_ps(p, v); }
  __attribute__((target("avx2,fma"))) static T Fma(T a, T b, T c) { return _mm256_fmadd_ps(a, b, c); }
  __attribute__((target("avx2,fma"))) static T Mul(T a, T b) { return _mm256_mul_ps(a, b); }
  __attribute__((target("avx2,fma"))) static T Zero() { return _mm256_setzero_ps(); }
  __attribute__((target("avx2,fma"))) static T Set1(float x) { return _mm256_set1_ps(x); }
  __attribute__((target("avx2,fma"))) static float Sum(T v) { return Sum8(v); }
};

// scores[j * count + p] = scale * q_j . k_p for HN heads (q_j `dim` floats
// apart) and two positions at once: each widened key vector meets HN queries,
// in 2 x HN independent sums. dim is a multiple of V::kW.
template <class V, DType D, int HN>
inline void ScoreBlock(const float* q, int64_t dim, const std::byte* k0, const std::byte* k1, float scale,
                       float* s0, float* s1, int64_t count) {
  typename V::T acc[HN][2];
  #pragma GCC unroll 4
  for (int h = 0; h < HN; ++h) acc[h][0] = acc[h][1] = V::Zero();
  for (int64_t i = 0; i < dim; i += V::kW) {
    const typename V::T a = V::template LoadW<D>(k0, i), b = V::template LoadW<D>(k1, i);
    #pragma GCC unroll 4
    for (int h = 0; h < HN; ++h) {
      const typename V::T qv = V::Load(q + h * dim + i);
      acc[h][0] = V::Fma(qv, a, acc[h][0]);
      acc[h][1] = V::Fma(qv, b, acc[h][1]);
    }
  }
  #pragma GCC unroll 4
  for (int h = 0; h < HN; ++h) {
    s0[h * count] = V::Sum(acc[h][0]) * scale;
    if (s1 != nullptr) s1[h * count] = V::Sum(acc[h][1]) * scale;
  }
}

template <class V, DType D>
inline void ScoresT(const float* q, int64_t hs, int64_t dim, const std::byte* const* rows, int64_t koff,
                    int64_t count, float scale, float* scores) {
  for (int64_t p = 0; p < count; p += 2) {
    const std::byte* k0 = rows[p] + koff;
    const bool two = p + 1 < count;
    const std::byte* k1 = two ? rows[p + 1] + koff : k0;  // (an odd last position is computed twice, kept once)
    for (int64_t j = 0; j < hs; j += 4) {
      float* s0 = scores + j * count + p;
      float* s1 = two ? s0 + 1 : nullptr;
      const float* qj = q + j * dim;
      switch (std::min<int64_t>(4, hs - j)) {
        case 4: ScoreBlock<V, D, 4>(qj, dim, k0, k1, scale, s0, s1, count); break;
        case 3: ScoreBlock<V, D, 3>(qj, dim, k0, k1, scale, s0, s1, count); break;
        case 2: ScoreBlock<V, D, 2>(qj, dim, k0, k1, scale, s0, s1, count); break;
        default: ScoreBlock<V, D, 1>(qj, dim, k0, k1, scale, s0, s1, count); break;
      }
    }
  }
}

// o[h, c .. c + CV * kW) = sum_p weights[h * count + p] * v_p[c ..] for HN
// heads: each widened value vector meets HN weights, the sums stay in
// registers over all positions and are stored once.
template <class V, DType D, int HN, int CV>
inline void WeighBlock(const float* weights, int64_t count, const std::byte* const* rows, int64_t voff, int64_t c,
                       float* o, int64_t v_dim) {
  typename V::T acc[HN][CV];
  #pragma GCC unroll 4
  for (int h = 0; h < HN; ++h) {
    #pragma GCC unroll 4
    for (int u = 0; u < CV; ++u) acc[h][u] = V::Zero();
  }
  for (int64_t p = 0; p < count; ++p) {
    const std::byte* v = rows[p] + voff;
    typename V::T w[CV];
    #pragma GCC unroll 4
    for (int u = 0; u < CV; ++u) w[u] = V::template LoadW<D>(v, c + u * V::kW);
    #pragma GCC unroll 4
    for (int h = 0; h < HN; ++h) {
      const typename V::T b = V::Set1(weights[h * count + p]);
      #pragma GCC unroll 4
      for (int u = 0; u < CV; ++u) acc[h][u] = V::Fma(b, w[u], acc[h][u]);
    }
  }
  #pragma GCC unroll 4
  for (int h = 0; h < HN; ++h) {
    #pragma GCC unroll 4
    for (int u = 0; u < CV; ++u) V::Store(o + h * v_dim + c + u * V::kW, acc[h][u]);
  }
}

template <class V, DType D, int HN>
inline void WeighHeads(const float* weights, int64_t count, const std::byte* const* rows, int64_t voff, float* o,
                       int64_t v_dim) {
  int64_t c = 0;
  for (; c + V::kChunk * V::kW <= v_dim; c += V::kChunk * V::kW) {
    WeighBlock<V, D, HN, V::kChunk>(weights, count, rows, voff, c, o, v_dim);
  }
  for (; c < v_dim; c += V::kW) WeighBlock<V, D, HN, 1>(weights, count, rows, voff, c, o, v_dim);
}

// o[j, :] = sum_p weights[j * count + p] v_p for hs heads. v_dim is a multiple of V::kW.
template <class V, DType D>
inline void WeighT(const float* weights, int64_t hs, int64_t count, const std::byte* const* rows, int64_t voff,
                   int64_t v_dim, float* o) {
  for (int64_t j = 0; j < hs; j += 4) {
    const float* wj = weights + j * count;
    float* oj = o + j * v_dim;
    switch (std::min<int64_t>(4, hs - j)) {
      case 4: WeighHeads<V, D, 4>(wj, count, rows, voff, oj, v_dim); break;
      case 3: WeighHeads<V, D, 3>(wj, count, rows, voff, oj, v_dim); break;
      case 2: WeighHeads<V, D, 2>(wj, count, rows, voff, oj, v_dim); break;
      default: WeighHeads<V, D, 1>(wj, count, rows, voff, oj, v_dim); break;
    }
  }
}

template <DType D>
__attribute__((target("avx512f,avx512bw,avx512vl"), flatten)) void ScoresAvx512(
    const float* q, int64_t hs, int64_t dim, const std::byte* const* rows, int64_t koff, int64_t count, float scale,
    float* scores) {
  ScoresT<V512, D>(q, hs, dim, rows, koff, count, scale, scores);
}
template <DType D>
__attribute__((target("avx512f,avx512bw,avx512vl"), flatten)) void WeighAvx512(
    const float* weights, int64_t hs, int64_t count, const std::byte* const* rows, int64_t voff, int64_t v_dim,
    float* o) {
  WeighT<V512, D>(weights, hs, count, rows, voff, v_dim, o);
}
template <DType D>
__attribute__((target("avx2,fma,f16c"), flatten)) void ScoresAvx2(const float* q, int64_t hs, int64_t dim,
                                                                   const std::byte* const* rows, int64_t koff,
                                                                   int64_t count, float scale, float* scores) {
  ScoresT<V256, D>(q, hs, dim, rows, koff, count, scale, scores);
}
template <DType D>
__attribute__((target("avx2,fma,f16c"), flatten)) void WeighAvx2(const float* weights, int64_t hs, int64_t count,
                                                                  const std::byte* const* rows, int64_t voff,
                                                                  int64_t v_dim, float* o) {
  WeighT<V256, D>(weights, hs, count, rows, voff, v_dim, o);
}

// RMSNorm's two element-wise loops: the weight widened to float, and
// out = x * inv * w (in that order, as the plain loop rounds).
template <class V, DType D>
inline void WidenT(const std::byte* src, int64_t n, float* dst) {
  int64_t i = 0;
  for (; i + V::kW <= n; i += V::kW) V::Store(dst + i, V::template LoadW<D>(src, i));
  for (; i < n; ++i) dst[i] = WidenScalar(D, src, i);
}

template <class V>
inline void NormRowT(const float* x, float inv, const float* w, int64_t n, float* out) {
  const typename V::T vinv = V::Set1(inv);
  int64_t i = 0;
  for (; i + V::kW <= n; i += V::kW) V::Store(out + i, V::Mul(V::Mul(V::Load(x + i), vinv), V::Load(w + i)));
  for (; i < n; ++i) out[i] = x[i] * inv * w[i];
}

template <DType D>
__attribute__((target("avx512f,avx512bw,avx512vl"), flatten)) void WidenAvx512(const std::byte* src, int64_t n,
                                                                               float* dst) {
  WidenT<V512, D>(src, n, dst);
}
template <DType D>
__attribute__((target("avx2,fma,f16c"), flatten)) void WidenAvx2(const std::byte* src, int64_t n, float* dst) {
  WidenT<V256, D>(src, n, dst);
}
__attribute__((target("avx512f,avx512bw,avx512vl"), flatten)) void NormRowAvx512(const float* x, float inv,
                                                                                 const float* w, int64_t n,
                                                                                 float* out) {
  NormRowT<V512>(x, inv, w, n, out);
}
__attribute__((target("avx2,fma"), flatten)) void NormRowAvx2(const float* x, float inv, const float* w, int64_t n,
                                                              float* out) {
  NormRowT<V256>(x, inv, w, n, out);
}

template <DType D>
void WidenAs(const std::byte* src, int64_t n, float* dst, Isa isa) {
  if (quant::HasAvx512(isa)) {
    WidenAvx512<D>(src, n, dst);
  } else if (isa == Isa::kAvx2) {
    WidenAvx2<D>(src, n, dst);
  } else {
    for (int64_t i = 0; i < n; ++i) dst[i] = WidenScalar(D, src, i);
  }
}

// The tiled attention loops of one ISA and cache dtype (null where a plain
// loop over cpu::Dot / cpu::Axpy serves: the scalar path, dims not a multiple
// of the vector width).
struct AttentionTiles {
  void (*scores)(const float*, int64_t, int64_t, const std::byte* const*, int64_t, int64_t, float, float*) = nullptr;
  void (*weigh)(const float*, int64_t, int64_t, const std::byte* const*, int64_t, int64_t, float*) = nullptr;
};

template <DType D>
AttentionTiles TilesFor(Isa isa) {
  if (quant::HasAvx512(isa)) return {ScoresAvx512<D>, WeighAvx512<D>};
  if (isa == Isa::kAvx2) return {ScoresAvx2<D>, WeighAvx2<D>};
  return {};
}

AttentionTiles Tiles(Isa isa, DType kv, int64_t head_dim, int64_t v_dim) {
  const int64_t width = quant::HasAvx512(isa) ? 16 : 8;
  if (head_dim % width != 0 || v_dim % width != 0) return {};
  switch (kv) {
    case DType::kBF16: return TilesFor<DType::kBF16>(isa);
    case DType::kF16: return TilesFor<DType::kF16>(isa);
    case DType::kF32: return TilesFor<DType::kF32>(isa);
    default: return {};
  }
}

// ----------------------------------------------------------------- scalar ---

template <DType D, int NB>
void RowsScalar(const float* x, int64_t in, const std::byte* w, int64_t r0, int64_t r1, float* y, int64_t ys) {
  for (int64_t r = r0; r < r1; ++r) {
    const std::byte* row = w + static_cast<size_t>(r * in) * DTypeSize(D);
    float acc[NB] = {};
    for (int64_t i = 0; i < in; ++i) {
      const float wi = WidenScalar(D, row, i);
      for (int b = 0; b < NB; ++b) acc[b] += wi * x[b * in + i];
    }
    for (int b = 0; b < NB; ++b) y[b * ys + r] = acc[b];
  }
}

// ------------------------------------------------------------- dispatch ---

using RowsFn = void (*)(const float*, int64_t, const std::byte*, int64_t, int64_t, float*, int64_t);
constexpr int kMaxTokens = 4;  // tokens per pass over a row (the row stays in L1)

template <DType D>
RowsFn PickRows(Isa isa, int nb) {
  static constexpr RowsFn avx512[] = {RowsAvx512<D, 1>, RowsAvx512<D, 2>, RowsAvx512<D, 3>, RowsAvx512<D, 4>};
  static constexpr RowsFn avx2[] = {RowsAvx2<D, 1>, RowsAvx2<D, 2>, RowsAvx2<D, 3>, RowsAvx2<D, 4>};
  static constexpr RowsFn scalar[] = {RowsScalar<D, 1>, RowsScalar<D, 2>, RowsScalar<D, 3>, RowsScalar<D, 4>};
  if (quant::HasAvx512(isa)) return avx512[nb - 1];
  if (isa == Isa::kAvx2) return avx2[nb - 1];
  return scalar[nb - 1];
}

RowsFn Rows(DType d, Isa isa, int nb) {
  switch (d) {
    case DType::kF32: return PickRows<DType::kF32>(isa, nb);
    case DType::kF16: return PickRows<DType::kF16>(isa, nb);
    default: return PickRows<DType::kBF16>(isa, nb);
  }
}

// Below this many multiply-adds a product runs on the calling thread: waking
// the pool would cost more than it saves.
constexpr int64_t kParallelMacs = int64_t{1} << 16;

// rows(r0, r1) over [0, total) weight rows of row_bytes each, in guided grabs
// (TakeGuidedGrabs) of about 64 KiB over the pool, as the quantized kernels
// share tiles: a worker that starts late or is held up (a shared host's
// preempted core) does fewer and the others finish with it. (Even static
// slices made every dispatch as slow as its slowest core: on the GPU host the
// quantized experts ran at 56% of DRAM bandwidth with static slices and 73%
// with grabs.)
template <typename RowsFnT>
void RunRowGrabs(NumaThreadPool& p, int64_t total, int64_t row_bytes, const RowsFnT& rows) {
  const int64_t grab = std::max<int64_t>(1, (int64_t{64} << 10) / std::max<int64_t>(row_bytes, 1));
  std::atomic<int64_t> next{0};
  p.Run([&](const PoolWorker&) { TakeGuidedGrabs(next, total, grab, p.num_threads(), rows); });
}

template <DType D>
float DotAs(const float* a, const std::byte* b, int64_t n, Isa isa) {
  if (quant::HasAvx512(isa)) return DotAvx512<D>(a, b, n);
  if (isa == Isa::kAvx2) return DotAvx2<D>(a, b, n);
  float s = 0.0f;
  for (int64_t i = 0; i < n; ++i) s += a[i] * WidenScalar(D, b, i);
  return s;
}

template <DType D>
void AxpyAs(float alpha, const std::byte* x, float* y, int64_t n, Isa isa) {
  if (quant::HasAvx512(isa)) {
    AxpyAvx512<D>(alpha, x, y, n);
  } else if (isa == Isa::kAvx2) {
    AxpyAvx2<D>(alpha, x, y, n);
  } else {
    for (int64_t i = 0; i < n; ++i) y[i] += alpha * WidenScalar(D, x, i);
  }
}

}  // namespace

namespace cpu {
float Dot(const float* a, const float* b, int64_t n, Isa isa) {
  return DotAs<DType::kF32>(a, reinterpret_cast<const std::byte*>(b), n, isa);
}

float Dot(const float* a, const std::byte* b, DType b_dtype, int64_t n, Isa isa) {
  switch (b_dtype) {
    case DType::kBF16: return DotAs<DType::kBF16>(a, b, n, isa);
    case DType::kF16: return DotAs<DType::kF16>(a, b, n, isa);
    default: return DotAs<DType::kF32>(a, b, n, isa);
  }
}

void Axpy(float alpha, const std::byte* x, DType x_dtype, float* y, int64_t n, Isa isa) {
  switch (x_dtype) {
    case DType::kBF16: AxpyAs<DType::kBF16>(alpha, x, y, n, isa); return;
    case DType::kF16: AxpyAs<DType::kF16>(alpha, x, y, n, isa); return;
    default: AxpyAs<DType::kF32>(alpha, x, y, n, isa);
  }
}

// The first index of the largest value, NaN skipped: the maximum in four
// independent vector chains, then the first lane equal to it. std::max_element
// is one compare-and-select chain, ~4 cycles a value: 0.2-0.6 ms over a
// vocabulary of 150K, every decode step.
__attribute__((target("avx2"))) int64_t ArgMaxAvx2(const float* x, int64_t n) {
  const __m256 lowest = _mm256_set1_ps(-std::numeric_limits<float>::infinity());
  __m256 m0 = lowest, m1 = lowest, m2 = lowest, m3 = lowest;
  int64_t i = 0;
  // max(v, m) keeps m (the second operand) when v is NaN.
  for (; i + 32 <= n; i += 32) {
    m0 = _mm256_max_ps(_mm256_loadu_ps(x + i), m0);
    m1 = _mm256_max_ps(_mm256_loadu_ps(x + i + 8), m1);
    m2 = _mm256_max_ps(_mm256_loadu_ps(x + i + 16), m2);
    m3 = _mm256_max_ps(_mm256_loadu_ps(x + i + 24), m3);
  }
  alignas(32) float lanes[8];
  _mm256_store_ps(lanes, _mm256_max_ps(_mm256_max_ps(m0, m1), _mm256_max_ps(m2, m3)));
  float best = lanes[0];
  for (float v : lanes) best = v > best ? v : best;
  for (; i < n; ++i) best = x[i] > best ? x[i] : best;
  const __m256 target = _mm256_set1_ps(best);
  for (i = 0; i + 8 <= n; i += 8) {
    const int mask = _mm256_movemask_ps(_mm256_cmp_ps(_mm256_loadu_ps(x + i), target, _CMP_EQ_OQ));
    if (mask != 0) return i + __builtin_ctz(static_cast<unsigned>(mask));
  }
  for (; i < n; ++i) {
    if (x[i] == best) return i;
  }
  return 0;  // every value NaN
}

int64_t ArgMax(const float* x, int64_t n, Isa isa) {
  if (n <= 0) return 0;
  if (isa == Isa::kScalar) {
    int64_t best = -1;
    for (int64_t i = 0; i < n; ++i) {
      if (!std::isnan(x[i]) && (best < 0 || x[i] > x[best])) best = i;
    }
    return std::max<int64_t>(best, 0);
  }
  return ArgMaxAvx2(x, n);  // every ISA above scalar has AVX2
}

void SiluMul(const float* gate, const float* up, int64_t n, float* out, Isa isa) {
  if (quant::HasAvx512(isa)) {
    SiluMulAvx512(gate, up, n, out);
  } else if (isa == Isa::kAvx2) {
    SiluMulAvx2(gate, up, n, out);
  } else {
    for (int64_t i = 0; i < n; ++i) out[i] = ref::Silu(gate[i]) * (up != nullptr ? up[i] : 1.0f);
  }
}

void SigmoidMul(const float* gate, int64_t n, float* x, Isa isa) {
  if (quant::HasAvx512(isa)) {
    SigmoidMulAvx512(gate, n, x);
  } else if (isa == Isa::kAvx2) {
    SigmoidMulAvx2(gate, n, x);
  } else {
    for (int64_t i = 0; i < n; ++i) x[i] *= ref::Sigmoid(gate[i]);
  }
}

void GatedDeltaRule(const float* q, const float* k, const float* v, float beta, float decay, float* s, int64_t dk,
                    int64_t dv, float* o, Isa isa) {
  if (quant::HasAvx512(isa)) {
    GatedDeltaRuleAvx512(q, k, v, beta, decay, s, dk, dv, o);
    return;
  }
  if (isa == Isa::kAvx2) {
    GatedDeltaRuleAvx2(q, k, v, beta, decay, s, dk, dv, o);
    return;
  }
  // The same arithmetic one column at a time.
  for (int64_t j = 0; j < dv; ++j) {
    float kv = 0.0f;
    for (int64_t i = 0; i < dk; ++i) kv += k[i] * s[i * dv + j];
    const float delta = (v[j] - decay * kv) * beta;
    float out = 0.0f;
    for (int64_t i = 0; i < dk; ++i) {
      float& x = s[i * dv + j];
      x = x * decay + k[i] * delta;
      out += q[i] * x;
    }
    o[j] = out;
  }
}

float ExpSum(float* x, int64_t n, float shift, Isa isa) {
  if (quant::HasAvx512(isa)) return ExpSumAvx512(x, n, shift);
  if (isa == Isa::kAvx2) return ExpSumAvx2(x, n, shift);
  float total = 0.0f;
  for (int64_t i = 0; i < n; ++i) total += (x[i] = std::exp(x[i] - shift));
  return total;
}

void AddBias(const TensorView& bias, int64_t n, int64_t cols, float* y) {
  if (bias.data == nullptr) return;
  std::vector<float> b = ToFloatVector(bias);
  for (int64_t t = 0; t < n; ++t) {
    for (int64_t i = 0; i < cols; ++i) y[t * cols + i] += b[static_cast<size_t>(i)];
  }
}
}  // namespace cpu

uint64_t DenseBytesRead() { return dense_bytes.load(std::memory_order_relaxed); }

CpuOps::CpuOps(NumaThreadPool* pool, std::optional<quant::Isa> isa)
    : pool_(pool), isa_(isa.value_or(quant::BestIsa())) {}

NumaThreadPool& CpuOps::pool() const { return pool_ != nullptr ? *pool_ : NumaThreadPool::Default(); }

void CpuOps::MatMul(const float* x, int64_t n, const TensorView& w, float* y, const TensorView* bias) const {
  const int64_t out = w.shape[0];
  const int64_t in = w.numel() / out;
  if (w.dtype != DType::kBF16 && w.dtype != DType::kF16 && w.dtype != DType::kF32) {
    ref::MatMul(x, n, w, y, bias);  // F8 and the like: widened element by element
    return;
  }
  dense_bytes.fetch_add(w.nbytes(), std::memory_order_relaxed);
  const Isa isa = isa_;
  // Rows [r0, r1) for every token, kMaxTokens at a time.
  auto rows = [&](int64_t r0, int64_t r1) {
    for (int64_t t = 0; t < n; t += kMaxTokens) {
      const int nb = static_cast<int>(std::min<int64_t>(kMaxTokens, n - t));
      Rows(w.dtype, isa, nb)(x + t * in, in, w.data, r0, r1, y + t * out, out);
    }
  };
  NumaThreadPool& p = pool();
  if (out * in * n < kParallelMacs || p.num_threads() == 1 || out < 2 * p.num_threads()) {
    rows(0, out);
  } else {
    RunRowGrabs(p, out, in * static_cast<int64_t>(DTypeSize(w.dtype)), rows);
  }
  if (bias != nullptr) cpu::AddBias(*bias, n, out, y);
}

void CpuOps::HeadsMatMul(const float* x, int64_t n, int64_t heads, int64_t x_stride,
                         const std::function<TensorView(int64_t)>& w, float* y, int64_t y_stride) const {
  if (n <= 0 || heads <= 0) return;
  const TensorView first = w(0);
  const DType dtype = first.dtype;
  const int64_t out = first.shape[0], in = first.numel() / out;
  thread_local std::vector<const std::byte*> base_scratch;  // head h's rows
  std::vector<const std::byte*>& base = base_scratch;
  base.resize(static_cast<size_t>(heads));
  bool uniform = dtype == DType::kBF16 || dtype == DType::kF16 || dtype == DType::kF32;
  for (int64_t h = 0; h < heads && uniform; ++h) {
    const TensorView wh = h == 0 ? first : w(h);
    uniform = wh.dtype == dtype && wh.shape[0] == out && wh.numel() == out * in;
    base[static_cast<size_t>(h)] = wh.data;
  }
  if (!uniform) {  // F8 weights, or heads of different shapes
    ref::HeadsMatMul(x, n, heads, x_stride, w, y, y_stride);
    return;
  }
  dense_bytes.fetch_add(static_cast<uint64_t>(heads * out * in) * DTypeSize(dtype), std::memory_order_relaxed);
  // Each head's tokens as Rows reads them, `in` floats apart: one token's are
  // already; more are gathered [heads, n, in].
  const float* xs = x;
  int64_t x_head = x_stride;
  thread_local std::vector<float> gathered_scratch;
  if (n > 1) {
    std::vector<float>& g = gathered_scratch;
    g.resize(static_cast<size_t>(heads * n * in));
    for (int64_t h = 0; h < heads; ++h) {
      for (int64_t i = 0; i < n; ++i) {
        const float* src = x + (i * heads + h) * x_stride;
        std::copy(src, src + in, &g[static_cast<size_t>((h * n + i) * in)]);
      }
    }
    xs = g.data();
    x_head = n * in;
  }
  const Isa isa = isa_;
  // Rows [r0, r1) of all heads' rows stacked (heads * out), cut at heads' ends.
  auto rows = [&](int64_t r0, int64_t r1) {
    while (r0 < r1) {
      const int64_t h = r0 / out, lo = r0 % out, hi = std::min(out, lo + (r1 - r0));
      for (int64_t t = 0; t < n; t += kMaxTokens) {
        const int nb = static_cast<int>(std::min<int64_t>(kMaxTokens, n - t));
        Rows(dtype, isa, nb)(xs + h * x_head + t * in, in, base[static_cast<size_t>(h)], lo, hi,
                             y + (t * heads + h) * y_stride, heads * y_stride);
      }
      r0 += hi - lo;
    }
  };
  // One dispatch for all heads, rows grabbed as MatMul's are (a head per
  // worker left every worker one small matrix and the dispatch as slow as its
  // slowest: DeepSeek-V2-Lite's products ran at 48% of DRAM bandwidth).
  NumaThreadPool& p = pool();
  const int64_t total = heads * out;
  if (total * in * n < kParallelMacs || p.num_threads() == 1) {
    rows(0, total);
    return;
  }
  RunRowGrabs(p, total, in * static_cast<int64_t>(DTypeSize(dtype)), rows);
}

void CpuOps::ParallelFor(int64_t count, const std::function<void(int64_t, int64_t)>& fn) const {
  if (count <= 0) return;
  NumaThreadPool& p = pool();
  if (count == 1 || p.num_threads() == 1) {
    fn(0, count);
    return;
  }
  p.Run([&](const PoolWorker& worker) {
    auto [begin, end] = SplitRange(count, worker.global_index, p.num_threads());
    if (begin < end) fn(begin, end);
  });
}

void CpuOps::RmsNorm(const float* x, int64_t rows, int64_t dim, const TensorView& weight, float eps,
                     bool zero_centred, float* out) const {
  thread_local std::vector<float> w;
  w.resize(static_cast<size_t>(dim));
  switch (weight.dtype) {  // (two of these a layer: widened in vectors, not element by element)
    case DType::kBF16: WidenAs<DType::kBF16>(weight.data, dim, w.data(), isa_); break;
    case DType::kF16: WidenAs<DType::kF16>(weight.data, dim, w.data(), isa_); break;
    case DType::kF32: WidenAs<DType::kF32>(weight.data, dim, w.data(), isa_); break;
    default: ConvertToFloat(weight.dtype, weight.data, w.data(), static_cast<size_t>(dim));
  }
  if (zero_centred) {
    for (float& v : w) v += 1.0f;
  }
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = x + r * dim;
    const float inv = 1.0f / std::sqrt(cpu::Dot(xr, xr, dim, isa_) / static_cast<float>(dim) + eps);
    float* o = out + r * dim;
    if (quant::HasAvx512(isa_)) {
      NormRowAvx512(xr, inv, w.data(), dim, o);
    } else if (isa_ == Isa::kAvx2) {
      NormRowAvx2(xr, inv, w.data(), dim, o);
    } else {
      for (int64_t i = 0; i < dim; ++i) o[i] = xr[i] * inv * w[static_cast<size_t>(i)];
    }
  }
}

void CpuOps::SiluMul(const float* gate, const float* up, int64_t n, float* out) const {
  cpu::SiluMul(gate, up, n, out, isa_);
}

void CpuOps::Attention(const AttentionArgs& a) const {
  const int64_t group = a.heads / a.kv_heads;
  const int64_t positions = a.start_pos + a.n;
  const DType kv = a.kv_dtype;
  const int64_t esize = static_cast<int64_t>(DTypeSize(kv));
  // The caller's scratch, named through references: a thread_local named in
  // the workers' code below would be each worker's own.
  thread_local std::vector<const std::byte*> row_scratch;
  std::vector<const std::byte*>& row = row_scratch;
  row.resize(static_cast<size_t>(positions));
  for (int64_t b = 0; b * a.block_size < positions; ++b) {
    const std::byte* base = a.block_row(b);
    for (int64_t s = 0; s < a.block_size && b * a.block_size + s < positions; ++s) {
      row[static_cast<size_t>(b * a.block_size + s)] = base + s * a.slot_stride * esize;
    }
  }
  NumaThreadPool& threads = pool();
  const int64_t workers = threads.num_threads();
  const int64_t work = a.n * a.heads * positions * (a.head_dim + a.v_dim);
  const bool parallel = work >= kParallelMacs && workers > 1;

  // Work items: a (token, KV head) pair's query heads, all of them or a subset,
  // over its causal positions, all of them or a chunk. Within an item each
  // cached row is read once for all the item's heads. Prefill has pairs enough
  // for the pool. Decode (one token, often one KV head: MLA) needs about two
  // items per worker: heads in subsets of at least four (the tiles' width),
  // then positions in chunks as flash-decoding splits them -- every worker
  // reads only its chunk of the cache -- then, while chunks would be shorter
  // than the minimum, smaller head subsets. The chunks of a subset are merged
  // by one thread, so a subset of heads keeps that merge short (16 heads x 32
  // chunks at 16K positions made one thread read 1 MB of partial sums).
  static const int64_t kMinChunk = [] {  // positions (KRASIS_ATTN_MIN_CHUNK)
    const char* env = std::getenv("KRASIS_ATTN_MIN_CHUNK");
    return env != nullptr && std::atoll(env) > 0 ? static_cast<int64_t>(std::atoll(env)) : int64_t{32};
  }();
  const int64_t pairs = a.n * a.kv_heads;
  int64_t chunks = 1, heads_per = group;
  if (parallel && pairs < 2 * workers) {
    const int64_t want = 2 * workers;
    int64_t subsets = std::clamp<int64_t>(group / 4, 1, 4);
    chunks = std::clamp<int64_t>((want + pairs * subsets - 1) / (pairs * subsets), 1,
                                 std::max<int64_t>(1, positions / kMinChunk));
    subsets = std::clamp<int64_t>((want + pairs * chunks - 1) / (pairs * chunks), subsets, group);
    heads_per = (group + subsets - 1) / subsets;
  }
  const int64_t subsets = (group + heads_per - 1) / heads_per;
  const int64_t items = pairs * subsets * chunks;

  // Chunks' partial results: per head the unnormalised output, its running
  // maximum and its sum of exponentials; the last chunk of an item group to
  // finish merges them (no second dispatch). One chunk writes the output directly.
  const int64_t part_floats = heads_per * (a.v_dim + 2);
  thread_local std::vector<float> parts_scratch;
  thread_local std::unique_ptr<std::atomic<int32_t>[]> finished_scratch;
  thread_local int64_t finished_size = 0;
  std::vector<float>& parts = parts_scratch;
  if (chunks > 1) {
    parts.resize(static_cast<size_t>(items * part_floats));
    if (finished_size < pairs * subsets) {
      finished_scratch = std::make_unique<std::atomic<int32_t>[]>(static_cast<size_t>(pairs * subsets));
      finished_size = pairs * subsets;
    }
    for (int64_t i = 0; i < pairs * subsets; ++i) finished_scratch[i].store(0, std::memory_order_relaxed);
  }
  std::atomic<int32_t>* finished = finished_scratch.get();
  const Isa isa = isa_;
  const AttentionTiles tiles = Tiles(isa, kv, a.head_dim, a.v_dim);
  auto merge = [&](int64_t t, int64_t h0, int64_t hs, const float* first) {
    for (int64_t j = 0; j < hs; ++j) {
      auto max_of = [&](int64_t c) { return first[c * part_floats + heads_per * a.v_dim + j]; };
      auto sum_of = [&](int64_t c) { return first[c * part_floats + heads_per * a.v_dim + heads_per + j]; };
      float m = -INFINITY;
      for (int64_t c = 0; c < chunks; ++c) {
        if (sum_of(c) != 0.0f) m = std::max(m, max_of(c));
      }
      float total = 0.0f;
      for (int64_t c = 0; c < chunks; ++c) {
        if (sum_of(c) != 0.0f) total += std::exp(max_of(c) - m) * sum_of(c);
      }
      float* o = a.out + (t * a.heads + h0 + j) * a.v_dim;
      std::fill(o, o + a.v_dim, 0.0f);
      for (int64_t c = 0; c < chunks; ++c) {
        if (sum_of(c) == 0.0f) continue;  // an empty chunk (a NaN sum is kept, and spreads)
        cpu::Axpy(std::exp(max_of(c) - m) / total, reinterpret_cast<const std::byte*>(first + c * part_floats + j * a.v_dim),
                  DType::kF32, o, a.v_dim, isa);
      }
    }
  };
  auto item = [&](int64_t i) {
    const int64_t c = i % chunks, s = (i / chunks) % subsets, pair = i / (chunks * subsets);
    const int64_t t = pair / a.kv_heads, g = pair % a.kv_heads;
    const int64_t h0 = g * group + s * heads_per, hs = std::min(heads_per, group - s * heads_per);
    const int64_t len = a.start_pos + t + 1;  // causal: positions 0 .. start_pos + t
    const int64_t step = (len + chunks - 1) / chunks;
    const int64_t p0 = std::min(len, c * step), p1 = std::min(len, p0 + step), count = p1 - p0;
    const float* q = a.q + (t * a.heads + h0) * a.head_dim;
    const int64_t koff = (a.k_offset + g * a.head_dim) * esize, voff = (a.v_offset + g * a.v_dim) * esize;
    // Where this item's outputs go: [hs, v_dim] outputs, then hs maxima, hs sums.
    float* part = chunks > 1 ? &parts[static_cast<size_t>(i * part_floats)] : nullptr;
    float* o = part != nullptr ? part : a.out + (t * a.heads + h0) * a.v_dim;
    thread_local std::vector<float> own_stats;
    own_stats.resize(static_cast<size_t>(2 * hs));
    float* maxima = part != nullptr ? part + heads_per * a.v_dim : own_stats.data();
    float* sums = part != nullptr ? maxima + heads_per : own_stats.data() + hs;
    thread_local std::vector<float> scores;  // [hs, count]
    scores.resize(static_cast<size_t>(hs * std::max<int64_t>(count, 1)));
    const std::byte* const* rows = row.data() + p0;
    if (tiles.scores != nullptr) {
      tiles.scores(q, hs, a.head_dim, rows, koff, count, a.scale, scores.data());
    } else {
      for (int64_t p = 0; p < count; ++p) {
        for (int64_t j = 0; j < hs; ++j) {
          scores[static_cast<size_t>(j * count + p)] = cpu::Dot(q + j * a.head_dim, rows[p] + koff, kv, a.head_dim, isa) * a.scale;
        }
      }
    }
    for (int64_t j = 0; j < hs; ++j) {
      float* sj = &scores[static_cast<size_t>(j * count)];
      float m = -INFINITY;
      for (int64_t p = 0; p < count; ++p) m = std::max(m, sj[p]);
      maxima[j] = m;
      sums[j] = count > 0 ? cpu::ExpSum(sj, count, m, isa) : 0.0f;
    }
    if (tiles.weigh != nullptr) {
      tiles.weigh(scores.data(), hs, count, rows, voff, a.v_dim, o);
    } else {
      std::fill(o, o + hs * a.v_dim, 0.0f);
      for (int64_t p = 0; p < count; ++p) {
        for (int64_t j = 0; j < hs; ++j) {
          cpu::Axpy(scores[static_cast<size_t>(j * count + p)], rows[p] + voff, kv, o + j * a.v_dim, a.v_dim, isa);
        }
      }
    }
    if (part == nullptr) {
      for (int64_t j = 0; j < hs; ++j) {
        const float inv = 1.0f / sums[j];
        for (float* x = o + j * a.v_dim; x < o + (j + 1) * a.v_dim; ++x) *x *= inv;
      }
      return;
    }
    // The last of the group's chunks to finish merges them (acq_rel: it sees
    // every other chunk's partial results).
    const int64_t key = pair * subsets + s;
    if (finished[key].fetch_add(1, std::memory_order_acq_rel) == chunks - 1) {
      merge(t, h0, hs, &parts[static_cast<size_t>((key * chunks) * part_floats)]);
    }
  };
  if (!parallel) {
    for (int64_t i = 0; i < items; ++i) item(i);
    return;
  }
  // Items taken one at a time, so a held-up worker takes fewer.
  std::atomic<int64_t> next{0};
  threads.Run([&](const PoolWorker&) {
    for (int64_t i = next.fetch_add(1, std::memory_order_relaxed); i < items;
         i = next.fetch_add(1, std::memory_order_relaxed)) {
      item(i);
    }
  });
}

}  // namespace krasis
