// Matrix products with group-quantized weights (quant_format.h) and INT8
// activations, for decode: y[n, rows] = x[n, cols] W^T with n small (1 to ~32
// tokens). Runtime dispatch: AMX (tdpbsud on 16-token x 16-row tiles, for 4 or
// more tokens; fewer go to AVX-512), AVX-512 VNNI (512-bit vpdpbusd), AVX2
// (vpmaddubsw), or portable scalar code. Each call covers a range of row tiles, so a thread
// pool can split a matrix by rows.
#pragma once

#include <cstdint>
#include <string_view>

#include "common/quant/quant_format.h"
#include "common/quant/quantize.h"

namespace krasis::quant {

// kAmx includes everything kAvx512Vnni has (AMX CPUs all have AVX-512 VNNI).
enum class Isa { kScalar, kAvx2, kAvx512Vnni, kAmx };

std::string_view IsaName(Isa isa);
// For kAmx this also asks the kernel for the tile state (arch_prctl, once).
bool IsaSupported(Isa isa);
// The fastest supported ISA (KRASIS_ISA=scalar|avx2|avx512vnni|amx overrides,
// for comparisons).
Isa BestIsa();
// True when `isa` has the AVX-512 (F, BW, VL, VNNI) instructions.
inline bool HasAvx512(Isa isa) { return isa == Isa::kAvx512Vnni || isa == Isa::kAmx; }
// The software prefetch of the decode kernels' weight streams (the batch-1
// quantized kernel and the BF16 matmul rows): `bytes` ahead of the loads (0:
// none), into L1 when `l1`, else L2. 4 KiB into L2 by default; qgemm.cc has the
// measurement and the KRASIS_PREFETCH_* knobs that change it.
struct WeightPrefetch {
  int64_t bytes = 0;
  bool l1 = false;
  // A range's first `bytes` are prefetched when the kernel starts on it, and
  // nothing past its end is (KRASIS_PREFETCH_START=0: neither, for measuring).
  bool range_start = true;
  // The batch-1 kernel prefetches the next tile's scales as it starts a tile
  // (KRASIS_PREFETCH_SCALES=0: not, for measuring).
  bool scales = true;
};
const WeightPrefetch& WeightPrefetchSetting();
// A hint for the cache line at p (never faults, even past a mapping's end).
// asm volatile: GCC deletes __builtin_prefetch calls that it judges free of
// side effects.
inline void PrefetchWeightLine(const void* p, bool l1) {
  if (l1) {
    asm volatile("prefetcht0 (%0)" ::"r"(p));
  } else {
    asm volatile("prefetcht1 (%0)" ::"r"(p));
  }
}
// Hints every cache line of [p, p + bytes).
inline void PrefetchWeightBytes(const void* p, int64_t bytes, bool l1) {
  for (int64_t i = 0; i < bytes; i += 64) PrefetchWeightLine(static_cast<const char*>(p) + i, l1);
}
// Tokens from which the AMX path takes a tile (below it, AVX-512 VNNI).
inline constexpr int kAmxMinTokens = 4;

// y[t * y_stride + r] = sum_k W[r, k] x_t[k] for tokens t < a.n and rows r of
// tiles [tile_begin, tile_end) (clipped to w.rows). `a` must be quantized with
// w's cols and group size.
void QMatMul(const QuantizedMatrix& w, const QuantizedActivations& a, float* y, int64_t y_stride,
             int64_t tile_begin, int64_t tile_end, Isa isa);

// Whole matrix, fastest ISA: y[n, rows].
void QMatMul(const QuantizedMatrix& w, const QuantizedActivations& a, float* y);

// The fused first half of a SwiGLU expert: out[t, r] = silu(gate_r . x_t) * (up_r . x_t)
// for rows of tiles [tile_begin, tile_end); gate and up are [inter, hidden] with the
// same format and group size.
void QGateUpSilu(const QuantizedMatrix& gate, const QuantizedMatrix& up, const QuantizedActivations& a,
                 float* out, int64_t out_stride, int64_t tile_begin, int64_t tile_end, Isa isa);

}  // namespace krasis::quant
