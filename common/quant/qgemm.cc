// Quantized matrix products (see qgemm.h). The SIMD kernels are compiled with
// per-function target attributes, so the rest of the build stays baseline x86-64
// and the choice is made at run time.
#include "common/quant/qgemm.h"

// GCC 12 reports its own _mm512_undefined_ps() inside _mm512_cvtepi32_ps as
// "maybe uninitialized" (a false positive in avx512fintrin.h).
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <cpuid.h>
#include <immintrin.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <string>
#include <string_view>

namespace krasis::quant {

namespace {

inline int32_t Load4(const int8_t* p) {
  int32_t v;
  std::memcpy(&v, p, 4);
  return v;
}

// Software prefetch of the weight streams (WeightPrefetchSetting): 4 KiB ahead
// of the loads, into L2 (prefetcht1). Measured on the GPU host (16 cores,
// qmatmul_bench, 2 GB file mapping): INT4 went from 73% of a plain read to 88%
// (INT8 88% -> 96%), ahead of 512 B - 2 KiB and of L1 hints. It crosses the
// 4 KiB page boundaries where the hardware streamer stops.
// KRASIS_PREFETCH_BYTES sets the distance (0: none), KRASIS_PREFETCH_L1=1 hints
// L1 instead (for measuring).
// Four cache lines at p (written out: GCC at -O2 keeps a 4-trip loop here).
inline void Prefetch256(const uint8_t* p, bool l1) {
  PrefetchWeightLine(p, l1);
  PrefetchWeightLine(p + 64, l1);
  PrefetchWeightLine(p + 128, l1);
  PrefetchWeightLine(p + 192, l1);
}

// out[b][16] for tokens b0 .. b0+nb-1 of one tile, all groups.
void TileScalar(const QuantizedMatrix& w, int64_t tile, const QuantizedActivations& a, int64_t b0, int nb,
                float out[][kTileRows]) {
  const int64_t G = w.group_size, groups = w.groups();
  for (int b = 0; b < nb; ++b) std::fill(out[b], out[b] + kTileRows, 0.0f);
  for (int64_t g = 0; g < groups; ++g) {
    const uint8_t* base = w.data + (tile * groups + g) * w.group_bytes();
    const float* s = w.scales + (tile * groups + g) * kTileRows;
    for (int b = 0; b < nb; ++b) {
      const int8_t* x = a.q.data() + (b0 + b) * a.cols + g * G;
      const float as = a.scale[static_cast<size_t>((b0 + b) * groups + g)];
      for (int64_t r = 0; r < kTileRows; ++r) {
        int32_t acc = 0;
        if (w.format == QuantFormat::kInt8) {
          for (int64_t k = 0; k < G; ++k) acc += (base[(k / 4) * 64 + r * 4 + k % 4] - 128) * x[k];
        } else {
          for (int64_t c = 0; c < G / 8; ++c) {
            for (int j = 0; j < 4; ++j) {
              const uint8_t byte = base[c * 64 + r * 4 + j];
              acc += ((byte & 0x0F) - 8) * x[8 * c + j] + ((byte >> 4) - 8) * x[8 * c + 4 + j];
            }
          }
        }
        out[b][r] += static_cast<float>(acc) * s[r] * as;
      }
    }
  }
}

template <int NB>
__attribute__((target("avx512f,avx512bw,avx512vnni"))) void TileAvx512(const QuantizedMatrix& w, int64_t tile,
                                                                        const QuantizedActivations& a, int64_t b0,
                                                                        int nb, float out[][kTileRows]) {
  const int64_t G = w.group_size, groups = w.groups();
  const bool int8 = w.format == QuantFormat::kInt8;
  const int offset = QuantOffset(w.format);
  __m512 y[NB];
  for (int b = 0; b < NB; ++b) y[b] = _mm512_setzero_ps();
  const __m512i low4 = _mm512_set1_epi8(0x0F);
  for (int64_t g = 0; g < groups; ++g) {
    const uint8_t* p = w.data + (tile * groups + g) * w.group_bytes();
    __m512i acc[NB];
    for (int b = 0; b < NB; ++b) acc[b] = _mm512_setzero_si512();
    const int8_t* x[NB];
    for (int b = 0; b < NB; ++b) x[b] = a.q.data() + (b0 + std::min(b, nb - 1)) * a.cols + g * G;
    if (int8) {
      for (int64_t c = 0; c < G / 4; ++c) {
        const __m512i wv = _mm512_loadu_si512(p + c * 64);
        for (int b = 0; b < NB; ++b) {
          acc[b] = _mm512_dpbusd_epi32(acc[b], wv, _mm512_set1_epi32(Load4(x[b] + 4 * c)));
        }
      }
    } else {
      for (int64_t c = 0; c < G / 8; ++c) {
        const __m512i wv = _mm512_loadu_si512(p + c * 64);
        const __m512i lo = _mm512_and_si512(wv, low4);
        const __m512i hi = _mm512_and_si512(_mm512_srli_epi16(wv, 4), low4);
        for (int b = 0; b < NB; ++b) {
          acc[b] = _mm512_dpbusd_epi32(acc[b], lo, _mm512_set1_epi32(Load4(x[b] + 8 * c)));
          acc[b] = _mm512_dpbusd_epi32(acc[b], hi, _mm512_set1_epi32(Load4(x[b] + 8 * c + 4)));
        }
      }
    }
    const __m512 s = _mm512_loadu_ps(w.scales + (tile * groups + g) * kTileRows);
    for (int b = 0; b < NB; ++b) {
      const size_t ag = static_cast<size_t>((b0 + std::min(b, nb - 1)) * groups + g);
      const __m512i corr = _mm512_set1_epi32(offset * a.sum[ag]);
      const __m512 v = _mm512_cvtepi32_ps(_mm512_sub_epi32(acc[b], corr));
      y[b] = _mm512_fmadd_ps(v, _mm512_mul_ps(s, _mm512_set1_ps(a.scale[ag])), y[b]);
    }
  }
  for (int b = 0; b < nb; ++b) _mm512_storeu_ps(out[b], y[b]);
}

// Four activation bytes broadcast to every 32-bit lane.
__attribute__((target("avx512f"), always_inline)) inline __m512i bcast(const int8_t* p) {
  return _mm512_set1_epi32(Load4(p));
}

// acc += u8 x s8 dot products of 4 bytes (vpdpbusd). Written as asm because GCC 12
// copies the accumulator into a fresh register before and after every
// _mm512_dpbusd_epi32 in an unrolled loop (two extra moves per instruction).
#define KRASIS_DPBUSD(acc, u8, s8) asm("vpdpbusd %2, %1, %0" : "+v"(acc) : "v"(u8), "v"(s8))

// One token (batch-1 decode, the memory-bound case): eight independent
// accumulators in named registers (an array of them was kept on the stack by
// GCC, putting a store and reload into every dot-product chain), and for INT4
// the high nibbles are masked in place (codes x16) and the sum shifted back once
// per group, instead of shifting every 64-byte load.
__attribute__((target("avx512f,avx512bw,avx512vnni"))) void Tile1Avx512(const QuantizedMatrix& w, int64_t tile,
                                                                        const QuantizedActivations& a, int64_t b0,
                                                                        const uint8_t* pf_end, float out[kTileRows]) {
  const int64_t G = w.group_size, groups = w.groups();
  const int offset = QuantOffset(w.format);
  const int8_t* xrow = a.q.data() + b0 * a.cols;
  const float* arow_scale = a.scale.data() + b0 * groups;
  const int32_t* arow_sum = a.sum.data() + b0 * groups;
  const int64_t pf = WeightPrefetchSetting().bytes;
  const bool pf_l1 = WeightPrefetchSetting().l1;
  // The next tile's scales (a separate, sparser stream that the hardware
  // prefetcher loses at page boundaries), if the range has a next tile.
  if (pf != 0 && WeightPrefetchSetting().scales && w.data + (tile + 1) * groups * w.group_bytes() < pf_end) {
    PrefetchWeightBytes(w.scales + (tile + 1) * groups * kTileRows, groups * kTileRows * int64_t{sizeof(float)}, pf_l1);
  }
  __m512 y = _mm512_setzero_ps();
  const __m512i m_lo = _mm512_set1_epi8(0x0F), m_hi = _mm512_set1_epi8(static_cast<char>(0xF0));
  for (int64_t g = 0; g < groups; ++g) {
    const uint8_t* p = w.data + (tile * groups + g) * w.group_bytes();
    const int8_t* x = xrow + g * G;
    __m512i c0 = _mm512_setzero_si512(), c1 = _mm512_setzero_si512(), c2 = _mm512_setzero_si512(),
            c3 = _mm512_setzero_si512(), c4 = _mm512_setzero_si512(), c5 = _mm512_setzero_si512(),
            c6 = _mm512_setzero_si512(), c7 = _mm512_setzero_si512();
    __m512i acc;
    if (w.format == QuantFormat::kInt4) {
      // G / 8 octets of 64 bytes, four per step (G is a multiple of 32).
      for (int64_t c = 0; c < G / 8; c += 4, p += 256, x += 32) {
        if (pf != 0 && p + pf < pf_end) Prefetch256(p + pf, pf_l1);
        const __m512i w0 = _mm512_loadu_si512(p), w1 = _mm512_loadu_si512(p + 64);
        const __m512i w2 = _mm512_loadu_si512(p + 128), w3 = _mm512_loadu_si512(p + 192);
        KRASIS_DPBUSD(c0, _mm512_and_si512(w0, m_lo), bcast(x));
        KRASIS_DPBUSD(c1, _mm512_and_si512(w0, m_hi), bcast(x + 4));
        KRASIS_DPBUSD(c2, _mm512_and_si512(w1, m_lo), bcast(x + 8));
        KRASIS_DPBUSD(c3, _mm512_and_si512(w1, m_hi), bcast(x + 12));
        KRASIS_DPBUSD(c4, _mm512_and_si512(w2, m_lo), bcast(x + 16));
        KRASIS_DPBUSD(c5, _mm512_and_si512(w2, m_hi), bcast(x + 20));
        KRASIS_DPBUSD(c6, _mm512_and_si512(w3, m_lo), bcast(x + 24));
        KRASIS_DPBUSD(c7, _mm512_and_si512(w3, m_hi), bcast(x + 28));
      }
      const __m512i lo = _mm512_add_epi32(_mm512_add_epi32(c0, c2), _mm512_add_epi32(c4, c6));
      const __m512i hi = _mm512_add_epi32(_mm512_add_epi32(c1, c3), _mm512_add_epi32(c5, c7));
      acc = _mm512_add_epi32(lo, _mm512_srai_epi32(hi, 4));
    } else {
      // G / 4 quads of 64 bytes, eight per step (G is a multiple of 32).
      for (int64_t c = 0; c < G / 4; c += 8, p += 512, x += 32) {
        if (pf != 0 && p + pf < pf_end) {
          Prefetch256(p + pf, pf_l1);
          Prefetch256(p + pf + 256, pf_l1);
        }
        KRASIS_DPBUSD(c0, _mm512_loadu_si512(p), bcast(x));
        KRASIS_DPBUSD(c1, _mm512_loadu_si512(p + 64), bcast(x + 4));
        KRASIS_DPBUSD(c2, _mm512_loadu_si512(p + 128), bcast(x + 8));
        KRASIS_DPBUSD(c3, _mm512_loadu_si512(p + 192), bcast(x + 12));
        KRASIS_DPBUSD(c4, _mm512_loadu_si512(p + 256), bcast(x + 16));
        KRASIS_DPBUSD(c5, _mm512_loadu_si512(p + 320), bcast(x + 20));
        KRASIS_DPBUSD(c6, _mm512_loadu_si512(p + 384), bcast(x + 24));
        KRASIS_DPBUSD(c7, _mm512_loadu_si512(p + 448), bcast(x + 28));
      }
      acc = _mm512_add_epi32(_mm512_add_epi32(_mm512_add_epi32(c0, c1), _mm512_add_epi32(c2, c3)),
                             _mm512_add_epi32(_mm512_add_epi32(c4, c5), _mm512_add_epi32(c6, c7)));
    }
    const __m512 s = _mm512_loadu_ps(w.scales + (tile * groups + g) * kTileRows);
    const __m512 v = _mm512_cvtepi32_ps(_mm512_sub_epi32(acc, _mm512_set1_epi32(offset * arow_sum[g])));
    y = _mm512_fmadd_ps(v, _mm512_mul_ps(s, _mm512_set1_ps(arow_scale[g])), y);
  }
  _mm512_storeu_ps(out, y);
}
#undef KRASIS_DPBUSD

// AMX tile registers and their shapes: C (0) int32 [nb, 16 rows], A (1) the
// tokens' int8 activations [nb, 64 columns], B (2) 64 columns of the 16 weight
// rows as 16 quads x 16 rows x 4 bytes -- exactly the layout of quant_format.h,
// so INT8 weights load straight from the matrix.
struct alignas(64) AmxConfig {
  uint8_t palette = 1, start_row = 0;
  uint8_t reserved[14] = {};
  uint16_t colsb[16] = {};
  uint8_t rows[16] = {};
};

// Asks Linux for the AMX tile state (needed once per process before any tile
// instruction); false where the kernel refuses.
bool EnableAmx() {
  static const bool ok = [] {
    constexpr long kArchReqXcompPerm = 0x1023, kXfeatureXtiledata = 18;
    return syscall(SYS_arch_prctl, kArchReqXcompPerm, kXfeatureXtiledata) == 0;
  }();
  return ok;
}

bool CpuHasAmxInt8() {
  unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
  if (!__get_cpuid_count(7, 0, &eax, &ebx, &ecx, &edx)) return false;
  return (edx & (1u << 24)) != 0 && (edx & (1u << 25)) != 0;  // AMX-TILE, AMX-INT8
}

// One tile of 16 weight rows for tokens b0 .. b0+nb-1 (nb <= 16); group size a
// multiple of 64. The unsigned weight codes meet signed activations in
// tdpbsud, then the group's offset correction and scales as in TileAvx512.
__attribute__((target("avx512f,avx512bw,avx512vnni,amx-tile,amx-int8"))) void TileAmx(
    const QuantizedMatrix& w, int64_t tile, const QuantizedActivations& a, int64_t b0, int nb,
    float out[][kTileRows]) {
  thread_local int configured = 0;  // nb of this thread's current tile config
  if (configured != nb) {
    AmxConfig cfg;
    cfg.rows[0] = static_cast<uint8_t>(nb);
    cfg.colsb[0] = 64;
    cfg.rows[1] = static_cast<uint8_t>(nb);
    cfg.colsb[1] = 64;
    cfg.rows[2] = 16;
    cfg.colsb[2] = 64;
    _tile_loadconfig(&cfg);
    configured = nb;
  }
  const int64_t G = w.group_size, groups = w.groups();
  const bool int8 = w.format == QuantFormat::kInt8;
  const int offset = QuantOffset(w.format);
  const __m512i low4 = _mm512_set1_epi8(0x0F);
  alignas(64) int32_t c[16][kTileRows];
  alignas(64) uint8_t expanded[16 * 64];
  __m512 y[16];
  for (int b = 0; b < nb; ++b) y[b] = _mm512_setzero_ps();
  for (int64_t g = 0; g < groups; ++g) {
    const uint8_t* p = w.data + (tile * groups + g) * w.group_bytes();
    _tile_zero(0);
    for (int64_t k0 = 0; k0 < G; k0 += 64) {
      _tile_loadd(1, a.q.data() + b0 * a.cols + g * G + k0, a.cols);
      if (int8) {
        _tile_loadd(2, p + (k0 / 4) * 64, 64);
      } else {
        // 64 columns are 8 packed chunks: low nibbles give quad 2c, high 2c + 1.
        for (int ch = 0; ch < 8; ++ch) {
          const __m512i wv = _mm512_loadu_si512(p + (k0 / 8 + ch) * 64);
          _mm512_store_si512(expanded + (2 * ch) * 64, _mm512_and_si512(wv, low4));
          _mm512_store_si512(expanded + (2 * ch + 1) * 64, _mm512_and_si512(_mm512_srli_epi16(wv, 4), low4));
        }
        _tile_loadd(2, expanded, 64);
      }
      _tile_dpbsud(0, 1, 2);
    }
    _tile_stored(0, c, 64);
    const __m512 s = _mm512_loadu_ps(w.scales + (tile * groups + g) * kTileRows);
    for (int b = 0; b < nb; ++b) {
      const size_t ag = static_cast<size_t>((b0 + b) * groups + g);
      const __m512i v = _mm512_sub_epi32(_mm512_load_si512(c[b]), _mm512_set1_epi32(offset * a.sum[ag]));
      y[b] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(v), _mm512_mul_ps(s, _mm512_set1_ps(a.scale[ag])), y[b]);
    }
  }
  for (int b = 0; b < nb; ++b) _mm512_storeu_ps(out[b], y[b]);
}

template <int NB>
__attribute__((target("avx2,fma"))) void TileAvx2(const QuantizedMatrix& w, int64_t tile,
                                                  const QuantizedActivations& a, int64_t b0, int nb,
                                                  float out[][kTileRows]) {
  const int64_t G = w.group_size, groups = w.groups();
  const bool int8 = w.format == QuantFormat::kInt8;
  const __m256i ones16 = _mm256_set1_epi16(1);
  const __m256i flip = _mm256_set1_epi8(static_cast<char>(0x80));
  const __m256i low4 = _mm256_set1_epi8(0x0F);
  __m256 y[NB][2];
  for (int b = 0; b < NB; ++b) y[b][0] = y[b][1] = _mm256_setzero_ps();
  for (int64_t g = 0; g < groups; ++g) {
    const uint8_t* p = w.data + (tile * groups + g) * w.group_bytes();
    __m256i acc[NB][2];
    for (int b = 0; b < NB; ++b) acc[b][0] = acc[b][1] = _mm256_setzero_si256();
    const int8_t* x[NB];
    for (int b = 0; b < NB; ++b) x[b] = a.q.data() + (b0 + std::min(b, nb - 1)) * a.cols + g * G;
    if (int8) {
      for (int64_t c = 0; c < G / 4; ++c) {
        for (int h = 0; h < 2; ++h) {
          const __m256i ws = _mm256_xor_si256(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + c * 64 + h * 32)), flip);
          const __m256i aw = _mm256_abs_epi8(ws);
          for (int b = 0; b < NB; ++b) {
            const __m256i xv = _mm256_sign_epi8(_mm256_set1_epi32(Load4(x[b] + 4 * c)), ws);
            acc[b][h] = _mm256_add_epi32(acc[b][h], _mm256_madd_epi16(_mm256_maddubs_epi16(aw, xv), ones16));
          }
        }
      }
    } else {
      for (int64_t c = 0; c < G / 8; ++c) {
        for (int h = 0; h < 2; ++h) {
          const __m256i wv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + c * 64 + h * 32));
          const __m256i lo = _mm256_and_si256(wv, low4);
          const __m256i hi = _mm256_and_si256(_mm256_srli_epi16(wv, 4), low4);
          for (int b = 0; b < NB; ++b) {
            const __m256i plo = _mm256_maddubs_epi16(lo, _mm256_set1_epi32(Load4(x[b] + 8 * c)));
            const __m256i phi = _mm256_maddubs_epi16(hi, _mm256_set1_epi32(Load4(x[b] + 8 * c + 4)));
            acc[b][h] = _mm256_add_epi32(acc[b][h], _mm256_madd_epi16(_mm256_add_epi16(plo, phi), ones16));
          }
        }
      }
    }
    const float* s = w.scales + (tile * groups + g) * kTileRows;
    for (int b = 0; b < NB; ++b) {
      const size_t ag = static_cast<size_t>((b0 + std::min(b, nb - 1)) * groups + g);
      // INT8 weights were re-signed above; INT4 codes carry the +8 offset.
      const __m256i corr = _mm256_set1_epi32(int8 ? 0 : 8 * a.sum[ag]);
      const __m256 as = _mm256_set1_ps(a.scale[ag]);
      for (int h = 0; h < 2; ++h) {
        const __m256 v = _mm256_cvtepi32_ps(_mm256_sub_epi32(acc[b][h], corr));
        y[b][h] = _mm256_fmadd_ps(v, _mm256_mul_ps(_mm256_loadu_ps(s + 8 * h), as), y[b][h]);
      }
    }
  }
  for (int b = 0; b < nb; ++b) {
    _mm256_storeu_ps(out[b], y[b][0]);
    _mm256_storeu_ps(out[b] + 8, y[b][1]);
  }
}

// The first bytes of tiles [t0, t1) of w's codes and scales, prefetched before
// the batch-1 kernel starts on them: that kernel prefetches only ahead of its
// loads, so without this a range (a grab of a dispatch: 16-256 KiB) begins
// with a run of demand misses while the hardware streamer trains.
void PrefetchRangeStart(const QuantizedMatrix& w, int64_t t0, int64_t t1) {
  const WeightPrefetch& pf = WeightPrefetchSetting();
  if (pf.bytes == 0 || !pf.range_start || t0 >= t1) return;
  const int64_t tile_bytes = w.groups() * w.group_bytes();
  PrefetchWeightBytes(w.data + t0 * tile_bytes, std::min(pf.bytes, (t1 - t0) * tile_bytes), pf.l1);
  const int64_t scale_bytes = (t1 - t0) * w.groups() * kTileRows * static_cast<int64_t>(sizeof(float));
  PrefetchWeightBytes(w.scales + t0 * w.groups() * kTileRows, std::min<int64_t>(1024, scale_bytes), pf.l1);
}

// Calls `emit(tile, b0, nb, out)` for every tile of the range and chunk of tokens.
template <typename Emit>
void ForEachTile(const QuantizedMatrix& w, const QuantizedActivations& a, int64_t tile_begin, int64_t tile_end,
                 Isa isa, Emit&& emit) {
  constexpr int kMaxNb = 16;
  alignas(64) float out[kMaxNb][kTileRows];
  tile_end = std::min(tile_end, w.tiles());
  // The batch-1 kernel prefetches ahead within the range and not past it.
  const bool single = a.n == 1 && HasAvx512(isa);
  const uint8_t* range_end = w.data + tile_end * w.groups() * w.group_bytes();
  if (single) {
    PrefetchRangeStart(w, tile_begin, tile_end);
    if (!WeightPrefetchSetting().range_start) range_end = w.data + w.data_bytes() + WeightPrefetchSetting().bytes;
  }
  // AMX takes 16 tokens a tile (groups of 64 columns); the others 8.
  const bool amx = isa == Isa::kAmx && w.group_size % 64 == 0 && a.n >= kAmxMinTokens;
  const int chunk = amx ? 16 : 8;
  if (isa == Isa::kAmx) isa = Isa::kAvx512Vnni;  // for what AMX does not take
  for (int64_t b0 = 0; b0 < a.n; b0 += chunk) {
    const int nb = static_cast<int>(std::min<int64_t>(chunk, a.n - b0));
    for (int64_t t = tile_begin; t < tile_end; ++t) {
      if (amx && nb >= kAmxMinTokens) {
        TileAmx(w, t, a, b0, nb, out);
      } else {
        // Here nb <= 8: chunks are 16 only with AMX, whose short tail (< 4) lands here.
        switch (isa) {
          case Isa::kAvx512Vnni:
            if (nb <= 1) Tile1Avx512(w, t, a, b0, range_end, out[0]);
            else if (nb <= 4) TileAvx512<4>(w, t, a, b0, nb, out);
            else TileAvx512<8>(w, t, a, b0, nb, out);
            break;
          case Isa::kAvx2:
            if (nb <= 1) TileAvx2<1>(w, t, a, b0, nb, out);
            else if (nb <= 4) TileAvx2<4>(w, t, a, b0, nb, out);
            else TileAvx2<8>(w, t, a, b0, nb, out);
            break;
          default:
            TileScalar(w, t, a, b0, nb, out);
        }
      }
      emit(t, b0, nb, out);
    }
  }
}

float Silu(float v) { return v / (1.0f + std::exp(-v)); }

}  // namespace

std::string_view IsaName(Isa isa) {
  switch (isa) {
    case Isa::kAmx: return "amx";
    case Isa::kAvx512Vnni: return "avx512vnni";
    case Isa::kAvx2: return "avx2";
    default: return "scalar";
  }
}

bool IsaSupported(Isa isa) {
  switch (isa) {
    case Isa::kAmx:
      return IsaSupported(Isa::kAvx512Vnni) && CpuHasAmxInt8() && EnableAmx();
    case Isa::kAvx512Vnni:
      return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
             __builtin_cpu_supports("avx512vnni");
    case Isa::kAvx2: return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    default: return true;
  }
}

const WeightPrefetch& WeightPrefetchSetting() {
  static const WeightPrefetch setting = [] {
    WeightPrefetch w;
    const char* bytes = std::getenv("KRASIS_PREFETCH_BYTES");
    w.bytes = bytes != nullptr ? std::max(0L, std::atol(bytes)) : 4096L;
    const char* l1 = std::getenv("KRASIS_PREFETCH_L1");
    w.l1 = l1 != nullptr && std::string_view(l1) == "1";
    const char* start = std::getenv("KRASIS_PREFETCH_START");
    w.range_start = start == nullptr || std::string_view(start) != "0";
    const char* scales = std::getenv("KRASIS_PREFETCH_SCALES");
    w.scales = scales == nullptr || std::string_view(scales) != "0";
    return w;
  }();
  return setting;
}

Isa BestIsa() {
  static const Isa best = [] {
    if (const char* env = std::getenv("KRASIS_ISA")) {
      for (Isa isa : {Isa::kScalar, Isa::kAvx2, Isa::kAvx512Vnni, Isa::kAmx}) {
        if (IsaName(isa) == env && IsaSupported(isa)) return isa;
      }
    }
    for (Isa isa : {Isa::kAmx, Isa::kAvx512Vnni, Isa::kAvx2}) {
      if (IsaSupported(isa)) return isa;
    }
    return Isa::kScalar;
  }();
  return best;
}

void QMatMul(const QuantizedMatrix& w, const QuantizedActivations& a, float* y, int64_t y_stride,
             int64_t tile_begin, int64_t tile_end, Isa isa) {
  ForEachTile(w, a, tile_begin, tile_end, isa, [&](int64_t t, int64_t b0, int nb, float out[][kTileRows]) {
    const int64_t r0 = t * kTileRows, count = std::min(kTileRows, w.rows - r0);
    for (int b = 0; b < nb; ++b) std::memcpy(y + (b0 + b) * y_stride + r0, out[b], sizeof(float) * count);
  });
}

void QMatMul(const QuantizedMatrix& w, const QuantizedActivations& a, float* y) {
  QMatMul(w, a, y, w.rows, 0, w.tiles(), BestIsa());
}

void QGateUpSilu(const QuantizedMatrix& gate, const QuantizedMatrix& up, const QuantizedActivations& a,
                 float* out, int64_t out_stride, int64_t tile_begin, int64_t tile_end, Isa isa) {
  // Gate first into `out`, then up multiplied in tile by tile while the gate
  // values are still in cache.
  constexpr int64_t kTilesPerStep = 8;
  for (int64_t t0 = tile_begin; t0 < std::min(tile_end, gate.tiles()); t0 += kTilesPerStep) {
    const int64_t t1 = std::min({t0 + kTilesPerStep, tile_end, gate.tiles()});
    // The up range's first lines are on their way while gate's are computed.
    if (a.n == 1 && HasAvx512(isa)) PrefetchRangeStart(up, t0, t1);
    QMatMul(gate, a, out, out_stride, t0, t1, isa);
    ForEachTile(up, a, t0, t1, isa, [&](int64_t t, int64_t b0, int nb, float tile_out[][kTileRows]) {
      const int64_t r0 = t * kTileRows, count = std::min(kTileRows, up.rows - r0);
      for (int b = 0; b < nb; ++b) {
        float* o = out + (b0 + b) * out_stride + r0;
        for (int64_t r = 0; r < count; ++r) o[r] = Silu(o[r]) * tile_out[b][r];
      }
    });
  }
}

}  // namespace krasis::quant
