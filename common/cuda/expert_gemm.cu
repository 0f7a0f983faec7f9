// Grouped expert GEMM (see prefill_kernels.h): every expert's rows of the
// sorted batch times that expert's weights, all experts in one launch, so a
// layer of 512 small experts fills the card instead of running 512 GEMMs of a
// few hundred rows one after another.
//
// A block computes 128 rows (of one expert) x 128 output columns, stepping
// through k kBK (32 or 64) at a time: x and the weight rows go global -> shared
// with cp.async in a three-stage pipeline (four for INT4), ldmatrix feeds
// mma.sync m16n8k16 (BF16, fp32 accumulation); 4 warps of 64 rows x 64
// columns (the default) or 8 of 64 x 32. Steps of 64 halve the block-wide
// barriers per multiply-add and are used whenever k (and a quantized format's
// group) allows; steps of 32 take the rest. Quantized weights arrive in their
// tile-interleaved bytes (16 rows x 32 columns of a group are contiguous: 256
// bytes INT4, 512 INT8; a 64-column step reads two such tiles back to back)
// and are dequantized into a BF16 shared tile before the warps read it: INT8
// as code * scale rounded to BF16 (what LaunchDequantTiled writes), between
// two barriers; INT4 two columns at a time in BF16 arithmetic, code times the
// scale rounded to BF16 (LaunchDequantTiled's BF16 output too), one step ahead
// of the multiply-adds into a second tile, so a step needs one barrier. The
// launch's row blocks (expert and rows of each) and the per-expert matrix
// pointers come either from the host (LaunchGroupedGemm, from counts the caller
// has there: a block per item) or from a plan built on the card
// (LaunchGroupedGemmPlan / LaunchGroupedGemmPlanned: persistent blocks take the
// items in turn, x may be read through a row index, and gate and up may leave
// as silu(gate) * up in BF16).
#include <cuda_bf16.h>

#include <cub/block/block_scan.cuh>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "common/cuda/cuda_check.h"
#include "common/cuda/launch.cuh"
#include "common/cuda/mma.cuh"
#include "common/cuda/prefill_kernels.h"
#include "common/status.h"

namespace krasis::cuda {
namespace {

constexpr int kBM = 128, kBN = 128, kStages = 3;
constexpr int kMinStep = 32, kWideStep = 64;  // k per pipeline step: the narrow and the wide kernel
// Warp tiles by default: 64 x 64 (4 warps), and for INT4 64 x 32 (8 warps:
// twice the warps to hide its dequantization's latency; 174.5 vs 172.4
// TFLOP/s planned on DeepSeek-V2-Lite's shapes, 0.527 vs 0.533 s over a 16K
// prefill, H200).
constexpr int kDefaultWarpCols = 64, kDefaultWarpColsInt4 = 32;

// Warps of a block: 2 x (kBN / kWarpCols), each 64 rows x kWarpCols columns
// (32: 8 warps; 64: 4 warps that each read every A fragment for twice the
// multiply-adds).
template <int kWarpCols>
__host__ __device__ constexpr int BlockThreads() {
  return 2 * (kBN / kWarpCols) * 32;
}

template <int kBK>
__host__ __device__ constexpr int TileBytes() {  // one [128][kBK] BF16 stage of x or of the weights
  return kBM * kBK * 2;
}

struct BlockRows {  // a block row of the launch: rows [row0, row0 + rows) of x, all of `expert`
  int32_t expert, row0, rows, pad;
};

struct Params {
  const uint16_t* x;
  float* y;
  int64_t ldx, ldy;
  int n, k, n_split, group;
  const ExpertGemmWeights* weights;
  const BlockRows* blocks;
  const int32_t* x_rows;       // non-null: sorted row r reads row x_rows[r] of x
  const int32_t* block_start;  // non-null (a plan on the card): blocks [block_start[first], block_start[end]) run
  int first, end;
  uint16_t* act;  // non-null: silu(gate) * up as BF16 [rows, n_split] (ld_act apart) instead of y
  int64_t ld_act;
  int tiles_n;  // column tiles per row block: kBN columns, or with act kBN / 2 gate and the same up columns
};

// The plan's arrays in its scratch (LaunchGroupedGemmPlan): offsets and
// block_start [experts + 1] each, then the 16-byte block rows.
size_t PlanBlocksOffset(int64_t experts) { return (static_cast<size_t>(2 * (experts + 1)) * 4 + 15) / 16 * 16; }

// Byte offset of 16-byte chunk c (0 .. kBK / 8 - 1) of row r in a [rows][kBK]
// BF16 tile, swizzled so the 8 row addresses of an ldmatrix hit distinct banks.
template <int kBK>
__device__ inline int Swizzle(int r, int c) {
  if constexpr (kBK == 32) return r * 64 + ((c ^ ((r >> 1) & 3)) << 4);
  return r * 128 + ((c ^ (r & 7)) << 4);
}

// Raw bytes of 16 weight rows x kBK columns in the quantized layout.
template <int kQuant, int kBK>
__host__ __device__ constexpr int RawTileBytes() {
  return kQuant == 2 ? 8 * kBK : 16 * kBK;
}

// code - kZero as a float (INT8), for an unsigned code below 2^23: the code's bits
// under the exponent of 2^23 make the float 2^23 + code, and one exact
// subtraction leaves code - kZero. The same value as an int-to-float
// conversion, from an OR and an add instead of the slower conversion unit.
template <int kZero>
__device__ inline float CodeToFloat(uint32_t code) {
  return __uint_as_float(0x4B000000u | code) - (8388608.0f + kZero);
}

// INT4 weights are dequantized one step ahead (the overlapped pipeline): the
// warps turn step s + 1's raw tile into BF16 while their multiply-adds of step
// s run, with one barrier per step, instead of dequantizing between two
// barriers that stall the block's tensor work. It takes a fourth stage of x and
// raw tiles and a second BF16 tile (112 KiB with 64-wide steps, so two blocks
// still fit an SM); INT8's raw tiles are twice as large, so INT8 keeps the
// dequantize-then-multiply pipeline.
template <int kQuant>
__host__ __device__ constexpr bool Overlapped() {
  return kQuant == 2;
}
template <int kQuant>
__host__ __device__ constexpr int Stages() {  // stages of x (and of raw weight tiles)
  return Overlapped<kQuant>() ? 4 : kStages;
}

// The INT4 codes in bits 0-3 and 16-19 of `bits` as two BF16 weights (low,
// high half): bf16(code - 8) * bf16(s), rounded once (code - 8 is exact in
// BF16, so this is bf16_rn((code - 8) * bf16_rn(s))).
__device__ inline uint32_t Int4PairTimes(uint32_t bits, float s) {
  const uint32_t pair = (bits & 0x000F000Fu) | 0x43004300u;  // BF16 128 + code, both halves
  __nv_bfloat162 v = *reinterpret_cast<const __nv_bfloat162*>(&pair);
  v = __hmul2(__hsub2(v, __float2bfloat162_rn(136.0f)), __float2bfloat162_rn(s));
  return *reinterpret_cast<const uint32_t*>(&v);
}

template <int kQuant, int kBK>  // kQuant: 0 BF16, 1 INT8, 2 INT4
constexpr size_t SharedBytes() {
  if constexpr (kQuant == 0) return size_t(2 * kStages) * TileBytes<kBK>();
  constexpr size_t stages = Stages<kQuant>(), b_tiles = Overlapped<kQuant>() ? 2 : 1;
  return (stages + b_tiles) * TileBytes<kBK>() + stages * 8 * RawTileBytes<kQuant, kBK>();
}

// kNarrow: BF16 weights aligned to 8 bytes only (a safetensors file's data may
// start 8 bytes off a 16-byte boundary), loaded 8 bytes at a time.
template <int kQuant, bool kNarrow, int kBK, int kWarpCols>
__global__ void __launch_bounds__(BlockThreads<kWarpCols>(), 2)
    GroupedGemmKernel(Params p) {
  constexpr int kThreads = BlockThreads<kWarpCols>(), kTileBytes = TileBytes<kBK>(), kRowChunks = kBK / 8;
  constexpr int kWarpsN = kBN / kWarpCols, kNT = kWarpCols / 8;  // warps across; n8 tiles per warp
  // Stages of x (and raw weight tiles); BF16 weight tiles: BF16 one per stage,
  // quantized one, or two when overlapped.
  constexpr int kS = Stages<kQuant>(), kBTiles = kQuant == 0 ? kS : Overlapped<kQuant>() ? 2 : 1;
  extern __shared__ __align__(16) uint8_t smem[];
  uint8_t* const a_stages = smem;
  uint8_t* const b_stages = smem + kS * kTileBytes;
  uint8_t* const raw_stages = b_stages + kBTiles * kTileBytes;  // quantized: kS raw tiles
  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
  const int wm = warp / kWarpsN, wn = warp % kWarpsN;
  const int steps = p.k / kBK;
  // Work items: (row block, column tile). A launch planned on the host has one
  // per block (grid x the column tiles, y the row blocks); with a plan on the
  // card, gridDim.x blocks take the plan's items in turn.
  // Fused SiLU (p.act): a tile is kBN / 2 gate columns and the same up columns.
  const bool fused = p.act != nullptr;
  const int tiles_n = p.tiles_n;
  int first_block = 0, items = 0, item = 0, stride = 0;
  if (p.block_start != nullptr) {
    first_block = p.block_start[p.first];
    items = (p.block_start[p.end] - first_block) * tiles_n;
    item = blockIdx.x, stride = gridDim.x;
  } else {
    items = gridDim.x * gridDim.y;
    item = blockIdx.y * gridDim.x + blockIdx.x, stride = items;
  }
  for (; item < items; item += stride) {
  const BlockRows blk = p.blocks[first_block + item / tiles_n];
  const ExpertGemmWeights ew = p.weights[blk.expert];
  const int n0 = (item % tiles_n) * (fused ? kBN / 2 : kBN);
  // The output column of the tile's weight row r.
  auto col_of = [&](int r) {
    return !fused ? n0 + r : r < kBN / 2 ? n0 + r : p.n_split + n0 + r - kBN / 2;
  };
  __syncthreads();  // (a later item) every warp is done with the shared stages

  auto load_x = [&](int stage, int step) {
    for (int i = 0; i < kBM * kRowChunks / kThreads; ++i) {
      const int id = tid + i * kThreads, r = id / kRowChunks, c = id % kRowChunks;
      const bool ok = r < blk.rows;
      const int row = blk.row0 + (ok ? r : 0);
      const uint16_t* src = p.x + int64_t(p.x_rows != nullptr ? p.x_rows[row] : row) * p.ldx + step * kBK + c * 8;
      CpAsync16(a_stages + stage * kTileBytes + Swizzle<kBK>(r, c), src, ok);
    }
  };
  auto load_w = [&](int stage, int step) {
    if constexpr (kQuant == 0) {
      for (int i = 0; i < kBN * kRowChunks / kThreads; ++i) {
        const int id = tid + i * kThreads, r = id / kRowChunks, c = id % kRowChunks, n = col_of(r);
        const bool ok = n < p.n;
        const uint16_t* row = n < p.n_split ? static_cast<const uint16_t*>(ew.w0) + int64_t(n) * p.k
                                            : static_cast<const uint16_t*>(ew.w1) + int64_t(n - p.n_split) * p.k;
        const uint16_t* src = ok ? row + step * kBK + c * 8 : static_cast<const uint16_t*>(ew.w0);
        uint8_t* dst = b_stages + stage * kTileBytes + Swizzle<kBK>(r, c);
        if constexpr (kNarrow) {
          CpAsync8(dst, src, ok);
          CpAsync8(dst + 8, ok ? src + 4 : src, ok);
        } else {
          CpAsync16(dst, src, ok);
        }
      }
    } else {
      constexpr int kRaw = RawTileBytes<kQuant, kBK>(), kChunksPerTile = kRaw / 16;
      for (int id = tid; id < 8 * kChunksPerTile; id += kThreads) {
        const int rt = id / kChunksPerTile, c = id % kChunksPerTile, n = col_of(rt * 16);
        const bool ok = n < p.n, second = n >= p.n_split;
        const int tile = (second ? n - p.n_split : n) / 16;
        const int k0 = step * kBK, g = k0 / p.group, kin = k0 - g * p.group;
        const int64_t group_bytes = (kQuant == 2 ? 8 : 16) * int64_t(p.group);
        const uint8_t* data = static_cast<const uint8_t*>(second ? ew.w1 : ew.w0);
        const uint8_t* src = data + (int64_t(tile) * (p.k / p.group) + g) * group_bytes +
                             int64_t(kin) * (kQuant == 2 ? 8 : 16) + c * 16;
        CpAsync16(raw_stages + stage * 8 * kRaw + rt * kRaw + c * 16, ok ? src : ew.w0, ok);
      }
    }
  };
  // Quantized: the raw tile of `stage` -> BF16 rows in `out`. Thread t takes
  // row t / kPer and octets (8 columns) kO (t % kPer) .. + kO, kPer the threads
  // per row (2 or 1); a call does octets [o_first, o_first + o_count) of those.
  // Octet o's bytes are the 64 at 64 o of a 16-row raw tile: 16 rows x 4
  // bytes, INT4 columns 8 o + j (low nibble) and 8 o + 4 + j (high); INT8 two
  // quads of 4 columns.
  constexpr int kPer = kThreads / kBN, kO = kBK / 8 / kPer;
  const int dq_r = tid / kPer, dq_half = tid % kPer, dq_n = col_of(dq_r), dq_rr = dq_r & 15;
  auto scale_of = [&](int step) {  // the scale of this thread's row at `step`
    if (dq_n >= p.n) return 0.0f;
    const bool second = dq_n >= p.n_split;
    const int tile = (second ? dq_n - p.n_split : dq_n) / 16, g = step * kBK / p.group;
    return (second ? ew.s1 : ew.s0)[(int64_t(tile) * (p.k / p.group) + g) * 16 + dq_rr];
  };
  auto dequant = [&](int stage, float s, uint8_t* out, int o_first, int o_count) {
    constexpr int kRaw = RawTileBytes<kQuant, kBK>();
    const int rr = dq_rr;
    const uint8_t* raw = raw_stages + stage * 8 * kRaw + (dq_r >> 4) * kRaw;
#pragma unroll
    for (int o = o_first; o < o_first + o_count; ++o) {
      const int octet = dq_half * kO + o;
      uint4 packed;
      if constexpr (kQuant == 2) {
        // Two columns at a time in BF16 pairs: the nibbles of bytes 0 and 2
        // (then 1 and 3, shifted 8; the high nibbles, shifted 4 and 12) under
        // the exponent of 128 make 128 + code exactly, minus 136 is code - 8
        // exactly, times the scale rounded to BF16 is one rounding.
        const uint32_t word = *reinterpret_cast<const uint32_t*>(raw + octet * 64 + rr * 4);
        const uint32_t c02 = Int4PairTimes(word, s), c13 = Int4PairTimes(word >> 8, s);
        const uint32_t c46 = Int4PairTimes(word >> 4, s), c57 = Int4PairTimes(word >> 12, s);
        packed = make_uint4(__byte_perm(c02, c13, 0x5410), __byte_perm(c02, c13, 0x7632),
                            __byte_perm(c46, c57, 0x5410), __byte_perm(c46, c57, 0x7632));
      } else {  // quads 2 octet and the next: 4 columns each
        float v[8];
        for (int qd = 0; qd < 2; ++qd) {
          const uint32_t word = *reinterpret_cast<const uint32_t*>(raw + (octet * 2 + qd) * 64 + rr * 4);
          for (int j = 0; j < 4; ++j) v[qd * 4 + j] = CodeToFloat<128>((word >> (8 * j)) & 0xFF);
        }
        packed = make_uint4(PackBf16(v[0] * s, v[1] * s), PackBf16(v[2] * s, v[3] * s), PackBf16(v[4] * s, v[5] * s),
                            PackBf16(v[6] * s, v[7] * s));
      }
      *reinterpret_cast<uint4*>(out + Swizzle<kBK>(dq_r, octet)) = packed;
    }
  };

  float acc[4][kNT][4] = {};
  // One step's multiply-adds from the x tile `at` and the weight tile `bt`;
  // beside(kk) runs after k slice kk's (the overlapped dequantization).
  auto multiply = [&](const uint8_t* at, const uint8_t* bt, auto&& beside) {
#pragma unroll
    for (int kk = 0; kk < kBK / 16; ++kk) {
      uint32_t a[4][4], b[kNT][2];
      for (int i = 0; i < 4; ++i) {
        LdMatrixX4(a[i], at + Swizzle<kBK>(wm * 64 + i * 16 + (lane & 15), kk * 2 + (lane >> 4)));
      }
      for (int j = 0; j < kNT / 2; ++j) {
        uint32_t r[4];
        LdMatrixX4(r, bt + Swizzle<kBK>(wn * kWarpCols + j * 16 + (lane & 7) + ((lane >> 4) << 3), kk * 2 + ((lane >> 3) & 1)));
        b[2 * j][0] = r[0], b[2 * j][1] = r[1], b[2 * j + 1][0] = r[2], b[2 * j + 1][1] = r[3];
      }
      for (int i = 0; i < 4; ++i) {
        for (int j = 0; j < kNT; ++j) MmaBf16(acc[i][j], a[i], b[j][0], b[j][1]);
      }
      beside(kk);
    }
  };
  for (int s = 0; s < kS - 1; ++s) {
    if (s < steps) load_x(s, s), load_w(s, s);
    CpAsyncCommit();
  }
  if constexpr (Overlapped<kQuant>()) {
    // Step s + 1's raw tile lands by step s's barrier (one load in flight
    // past it, and the one issued after it); its BF16 goes to the other tile.
    constexpr int kPerSlice = kO / (kBK / 16);  // octets dequantized beside each k slice
    static_assert(kPerSlice * (kBK / 16) == kO && kS == 4);
    CpAsyncWait<kS - 2>();
    __syncthreads();
    dequant(0, scale_of(0), b_stages, 0, kO);
    for (int step = 0; step < steps; ++step) {
      CpAsyncWait<kS - 3>();
      __syncthreads();  // step + 1's stage has landed; tile step % 2 is written; every warp is done with step - 1
      const int next = step + kS - 1;
      if (next < steps) load_x(next % kS, next), load_w(next % kS, next);
      CpAsyncCommit();
      const bool ahead = step + 1 < steps;
      const float s_next = ahead ? scale_of(step + 1) : 0.0f;
      uint8_t* const b_next = b_stages + ((step + 1) & 1) * kTileBytes;
      multiply(a_stages + (step % kS) * kTileBytes, b_stages + (step & 1) * kTileBytes, [&](int kk) {
        if (ahead) dequant((step + 1) % kS, s_next, b_next, kk * kPerSlice, kPerSlice);
      });
    }
  } else {
    for (int step = 0; step < steps; ++step) {
      CpAsyncWait<kS - 2>();
      __syncthreads();  // this step's stage has landed; every warp is done with the previous one
      const int next = step + kS - 1;
      if (next < steps) load_x(next % kS, next), load_w(next % kS, next);
      CpAsyncCommit();
      const int stage = step % kS;
      const uint8_t* bt = b_stages + stage * kTileBytes;
      if constexpr (kQuant != 0) {
        dequant(stage, scale_of(step), b_stages, 0, kO);
        __syncthreads();
        bt = b_stages;
      }
      multiply(a_stages + stage * kTileBytes, bt, [](int) {});
    }
  }
  CpAsyncWait<0>();
  if (fused) {
    // The warps of the up half hand their accumulators to the gate half's
    // (same fragment layout, so the same lane holds the same element) through
    // the stages' shared memory, which no warp reads any more.
    constexpr int kHalf = kWarpsN / 2;
    float* const xchg = reinterpret_cast<float*>(smem);
    auto at = [&](int i, int j, int e) {
      return (((((wm * kHalf + wn % kHalf) * 4 + i) * kNT + j) * 4 + e) * 32) + lane;
    };
    __syncthreads();
    if (wn >= kHalf) {
#pragma unroll
      for (int i = 0; i < 4; ++i) {
#pragma unroll
        for (int j = 0; j < kNT; ++j) {
#pragma unroll
          for (int e = 0; e < 4; ++e) xchg[at(i, j, e)] = acc[i][j][e];
        }
      }
    }
    __syncthreads();
    if (wn < kHalf) {
#pragma unroll
      for (int i = 0; i < 4; ++i) {
#pragma unroll
        for (int j = 0; j < kNT; ++j) {
          const int col = n0 + wn * kWarpCols + j * 8 + (lane & 3) * 2;
#pragma unroll
          for (int h = 0; h < 2; ++h) {
            const int r = wm * 64 + i * 16 + (lane >> 2) + h * 8;
            if (r >= blk.rows) continue;
            const float g0 = acc[i][j][2 * h], g1 = acc[i][j][2 * h + 1];
            const float u0 = xchg[at(i, j, 2 * h)], u1 = xchg[at(i, j, 2 * h + 1)];
            // As LaunchSiluMulBf16 computes it from the float gate and up.
            *reinterpret_cast<uint32_t*>(p.act + int64_t(blk.row0 + r) * p.ld_act + col) =
                PackBf16(SiluMul(g0, u0), SiluMul(g1, u1));
          }
        }
      }
    }
    continue;
  }
  for (int i = 0; i < 4; ++i) {
    for (int j = 0; j < kNT; ++j) {
      const int col = n0 + wn * kWarpCols + j * 8 + (lane & 3) * 2;
      for (int h = 0; h < 2; ++h) {
        const int r = wm * 64 + i * 16 + (lane >> 2) + h * 8;
        if (r >= blk.rows) continue;
        float* out = p.y + int64_t(blk.row0 + r) * p.ldy + col;
        if (col < p.n) out[0] = acc[i][j][2 * h];
        if (col + 1 < p.n) out[1] = acc[i][j][2 * h + 1];
      }
    }
  }
  }  // item
}

// One block, a thread per expert: offsets and block_start by two block-wide
// exclusive scans (of the counts and of their row blocks), cursor = offsets,
// then each expert's block rows.
constexpr int kPlanThreads = kMaxPlannedExperts;
__global__ void __launch_bounds__(kPlanThreads) PlanKernel(const int32_t* counts, int experts, int32_t* offsets,
                                                           int32_t* block_start, BlockRows* blocks, int32_t* cursor) {
  using Scan = cub::BlockScan<int, kPlanThreads>;
  __shared__ typename Scan::TempStorage temp;
  const int e = threadIdx.x;
  const int count = e < experts ? counts[e] : 0, nb = (count + kBM - 1) / kBM;
  int row0 = 0, block0 = 0, rows = 0, total_blocks = 0;
  Scan(temp).ExclusiveSum(count, row0, rows);
  __syncthreads();
  Scan(temp).ExclusiveSum(nb, block0, total_blocks);
  if (e < experts) {
    offsets[e] = row0, block_start[e] = block0;
    if (cursor != nullptr) cursor[e] = row0;
    for (int b = 0; b < nb; ++b) blocks[block0 + b] = {e, row0 + b * kBM, min(kBM, count - b * kBM), 0};
  }
  if (e == 0) offsets[experts] = rows, block_start[experts] = total_blocks;
}

bool Aligned(const void* p, size_t to) { return reinterpret_cast<uintptr_t>(p) % to == 0; }

// Whether every expert's weights of [first, end) are 16-byte aligned.
bool WeightsAligned16(const ExpertGemmWeights* weights, int64_t first, int64_t end) {
  for (int64_t e = first; e < end; ++e) {
    if (!Aligned(weights[e].w0, 16) || !Aligned(weights[e].w1, 16)) return false;
  }
  return true;
}

template <int kQuant, bool kNarrow, int kBK, int kWarpCols>
absl::Status LaunchStep(const Params& p, unsigned blocks, cudaStream_t stream) {
  constexpr size_t smem = SharedBytes<kQuant, kBK>();
  auto* kernel = GroupedGemmKernel<kQuant, kNarrow, kBK, kWarpCols>;
  if constexpr (smem > 48 * 1024) {
    CUDA_RETURN_IF_ERROR(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem)));
    // Two blocks of the overlapped INT4 form need nearly all of an SM's shared memory.
    CUDA_RETURN_IF_ERROR(
        cudaFuncSetAttribute(kernel, cudaFuncAttributePreferredSharedMemoryCarveout, cudaSharedmemCarveoutMaxShared));
  }
  const unsigned tiles_n = static_cast<unsigned>(p.tiles_n);
  dim3 grid(tiles_n, blocks);
  if (p.block_start != nullptr) {
    // A plan on the card: `blocks` is only a bound, so as many blocks as the
    // card holds at once take the items in turn (no empty blocks to schedule).
    int device = 0, sms = 0, per_sm = 0;
    CUDA_RETURN_IF_ERROR(cudaGetDevice(&device));
    CUDA_RETURN_IF_ERROR(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device));
    CUDA_RETURN_IF_ERROR(
        cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, BlockThreads<kWarpCols>(), smem));
    const uint64_t most = uint64_t{tiles_n} * blocks, resident = uint64_t(std::max(sms * per_sm, 1));
    grid = dim3(static_cast<unsigned>(std::min(most, resident)));
  }
  kernel<<<grid, BlockThreads<kWarpCols>(), smem, stream>>>(p);
  CUDA_RETURN_IF_ERROR(cudaGetLastError());
  return absl::OkStatus();
}

template <int kQuant, bool kNarrow = false>
absl::Status Launch(const Params& p, int step, int warp_cols, unsigned blocks, cudaStream_t stream) {
  if (warp_cols == 64) {
    return step == kWideStep ? LaunchStep<kQuant, kNarrow, kWideStep, 64>(p, blocks, stream)
                             : LaunchStep<kQuant, kNarrow, kMinStep, 64>(p, blocks, stream);
  }
  return step == kWideStep ? LaunchStep<kQuant, kNarrow, kWideStep, 32>(p, blocks, stream)
                           : LaunchStep<kQuant, kNarrow, kMinStep, 32>(p, blocks, stream);
}

// KRASIS_GROUPED_GEMM=STEPxCOLS (e.g. 32x32, 64x64), for comparing the kernel's
// forms inside a whole prefill: part 0 the k step, part 1 the warp columns; 0
// where unset or not one of the forms.
int ForcedVariant(int part) {
  const char* v = std::getenv("KRASIS_GROUPED_GEMM");
  int step = 0, cols = 0;
  if (v == nullptr || std::sscanf(v, "%dx%d", &step, &cols) != 2) return 0;
  if ((step != kMinStep && step != kWideStep) || (cols != 32 && cols != 64)) return 0;
  return part == 0 ? step : cols;
}

// Whether k (and a quantized format's groups) split into steps of `step`.
bool StepFits(const GroupedGemmShape& s, int step) {
  return s.k % step == 0 && (s.quant == 0 || s.group % step == 0);
}

// The launch's parameters for `shape` (no plan on the card, no row index).
Params ShapeParams(const GroupedGemmShape& shape, const ExpertGemmWeights* weights, const BlockRows* blocks) {
  return Params{shape.x,
                shape.y,
                shape.ldx,
                shape.ldy,
                static_cast<int>(shape.n),
                static_cast<int>(shape.k),
                static_cast<int>(shape.n_split),
                static_cast<int>(shape.group),
                weights,
                blocks,
                nullptr,
                nullptr,
                0,
                0,
                shape.silu_out,
                shape.ld_silu,
                static_cast<int>(shape.silu_out != nullptr ? shape.n_split / (kBN / 2) : (shape.n + kBN - 1) / kBN)};
}

}  // namespace

int GroupedGemmStep(const GroupedGemmShape& s) {
  if (s.k_step != 0) return s.k_step;
  static const int forced = ForcedVariant(0);
  if (forced != 0 && StepFits(s, forced)) return forced;
  return StepFits(s, kWideStep) ? kWideStep : kMinStep;
}

int GroupedGemmWarpCols(const GroupedGemmShape& s) {
  if (s.warp_cols != 0) return s.warp_cols;
  static const int forced = ForcedVariant(1);
  return forced != 0 ? forced : s.quant == 2 ? kDefaultWarpColsInt4 : kDefaultWarpCols;
}

namespace {
// GroupedGemmTakes without the weights.
bool ShapeTakes(const GroupedGemmShape& s) {
  if (s.k_step != 0 && s.k_step != kMinStep && s.k_step != kWideStep) return false;
  if (s.warp_cols != 0 && s.warp_cols != 32 && s.warp_cols != 64) return false;
  if (s.k <= 0 || !StepFits(s, GroupedGemmStep(s)) || s.n <= 0 || s.n > INT32_MAX / 2 || s.k > INT32_MAX / 2) {
    return false;
  }
  if (s.n_split < 0 || s.n_split > s.n || s.ldx % 8 != 0 || s.ldx < s.k || s.ldy < s.n || !Aligned(s.x, 16)) {
    return false;
  }
  if (s.quant < 0 || s.quant > 2) return false;
  if (s.quant != 0 && (s.k % s.group != 0 || s.n_split % 16 != 0)) return false;
  if (s.silu_out != nullptr && (s.n != 2 * s.n_split || s.n_split % (kBN / 2) != 0 || s.ld_silu < s.n_split ||
                                s.ld_silu % 2 != 0 || !Aligned(s.silu_out, 4))) {
    return false;
  }
  return true;
}

// The kernel form of `shape` (format, k step, warp columns, BF16 alignment) over `blocks` row blocks.
absl::Status LaunchForm(const GroupedGemmShape& shape, const Params& p, bool aligned16, unsigned blocks,
                        cudaStream_t stream) {
  const int step = GroupedGemmStep(shape), warp_cols = GroupedGemmWarpCols(shape);
  if (shape.quant == 0) {
    return aligned16 ? Launch<0>(p, step, warp_cols, blocks, stream)
                     : Launch<0, true>(p, step, warp_cols, blocks, stream);
  }
  if (shape.quant == 1) return Launch<1>(p, step, warp_cols, blocks, stream);
  return Launch<2>(p, step, warp_cols, blocks, stream);
}
}  // namespace

bool GroupedGemmTakes(const GroupedGemmShape& s, const ExpertGemmWeights* weights, int64_t first, int64_t end) {
  if (!ShapeTakes(s)) return false;
  for (int64_t e = first; e < end; ++e) {
    const ExpertGemmWeights& w = weights[e];
    // BF16 rows may start 8 bytes off (the narrow loads); quantized tiles are 16-byte blocks.
    const size_t align = s.quant == 0 ? 8 : 16;
    if (!Aligned(w.w0, align) || !Aligned(w.w1, align) || !Aligned(w.s0, 4) || !Aligned(w.s1, 4)) return false;
    if (s.n_split > 0 && w.w0 == nullptr) return false;
    if (s.n_split < s.n && w.w1 == nullptr) return false;
    if (s.quant != 0 && ((s.n_split > 0 && w.s0 == nullptr) || (s.n_split < s.n && w.s1 == nullptr))) return false;
  }
  return true;
}

int64_t GroupedGemmBlockRows(const int32_t* counts, int64_t first, int64_t end) {
  int64_t blocks = 0;
  for (int64_t e = first; e < end; ++e) blocks += (counts[e] + kBM - 1) / kBM;
  return blocks;
}

size_t GroupedGemmTableBytes(int64_t experts, int64_t rows) {
  return static_cast<size_t>(experts) * sizeof(ExpertGemmWeights) +
         static_cast<size_t>(rows / kBM + experts + 1) * sizeof(BlockRows);
}

absl::Status LaunchGroupedGemm(const GroupedGemmShape& shape, const int32_t* counts, const int32_t* offsets,
                               const ExpertGemmWeights* weights, int64_t first, int64_t end, void* table,
                               size_t table_bytes, cudaStream_t stream) {
  if (!GroupedGemmTakes(shape, weights, first, end)) {
    return InvalidArgumentError("LaunchGroupedGemm: shape n=", shape.n, " k=", shape.k, " quant=", shape.quant,
                                " group=", shape.group, " or its weights are not supported (see GroupedGemmTakes)");
  }
  std::vector<BlockRows> blocks;
  int64_t rows = 0;
  for (int64_t e = first; e < end; ++e) {
    rows += counts[e];
    for (int32_t r = 0; r < counts[e]; r += kBM) {
      blocks.push_back({static_cast<int32_t>(e), offsets[e] + r, std::min<int32_t>(kBM, counts[e] - r), 0});
    }
  }
  if (blocks.empty()) return absl::OkStatus();
  if (static_cast<int64_t>(blocks.size()) > kMaxGroupedGemmBlockRows) {
    return InvalidArgumentError("LaunchGroupedGemm: ", rows, " rows are too many for one launch");
  }
  const size_t weight_bytes = static_cast<size_t>(end) * sizeof(ExpertGemmWeights);
  const size_t block_bytes = blocks.size() * sizeof(BlockRows);
  if (weight_bytes + block_bytes > table_bytes) {
    return InvalidArgumentError("LaunchGroupedGemm: table of ", table_bytes, " bytes, ", weight_bytes + block_bytes,
                                " needed");
  }
  std::vector<uint8_t> host(weight_bytes + block_bytes);
  std::copy_n(reinterpret_cast<const uint8_t*>(weights), weight_bytes, host.data());
  std::copy_n(reinterpret_cast<const uint8_t*>(blocks.data()), block_bytes, host.data() + weight_bytes);
  CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(table, host.data(), host.size(), cudaMemcpyHostToDevice, stream));
  const Params p = ShapeParams(shape, static_cast<const ExpertGemmWeights*>(table),
                               reinterpret_cast<const BlockRows*>(static_cast<const uint8_t*>(table) + weight_bytes));
  return LaunchForm(shape, p, WeightsAligned16(weights, first, end), static_cast<unsigned>(blocks.size()), stream);
}

size_t GroupedGemmPlanBytes(int64_t experts, int64_t rows) {
  return PlanBlocksOffset(experts) + static_cast<size_t>(rows / kBM + experts + 1) * sizeof(BlockRows);
}

const int32_t* GroupedGemmPlanOffsets(const void* plan) { return static_cast<const int32_t*>(plan); }

absl::Status LaunchGroupedGemmPlan(const int32_t* counts, int64_t experts, void* plan, int32_t* cursor,
                                   cudaStream_t stream) {
  if (experts < 1 || experts > kPlanThreads) {
    return InvalidArgumentError("LaunchGroupedGemmPlan: ", experts, " experts (1 to ", kPlanThreads, " supported)");
  }
  int32_t* offsets = static_cast<int32_t*>(plan);
  PlanKernel<<<1, kPlanThreads, 0, stream>>>(
      counts, static_cast<int>(experts), offsets, offsets + experts + 1,
      reinterpret_cast<BlockRows*>(static_cast<uint8_t*>(plan) + PlanBlocksOffset(experts)), cursor);
  CUDA_RETURN_IF_ERROR(cudaGetLastError());
  return absl::OkStatus();
}

int64_t GroupedGemmPlannedBlockBound(int64_t rows, int64_t first, int64_t end) { return rows / kBM + (end - first); }

absl::Status LaunchGroupedGemmPlanned(const GroupedGemmShape& shape, const void* plan, int64_t experts, int64_t rows,
                                      const ExpertGemmWeights* device_weights, bool weights_aligned16,
                                      const int32_t* x_rows, int64_t first, int64_t end, cudaStream_t stream) {
  if (!ShapeTakes(shape) || first < 0 || first > end || end > experts) {
    return InvalidArgumentError("LaunchGroupedGemmPlanned: shape n=", shape.n, " k=", shape.k, " quant=", shape.quant,
                                " group=", shape.group, " or experts [", first, ", ", end, ") of ", experts,
                                " not supported");
  }
  const int64_t bound = GroupedGemmPlannedBlockBound(rows, first, end);
  if (bound > kMaxGroupedGemmBlockRows) {
    return InvalidArgumentError("LaunchGroupedGemmPlanned: ", rows, " rows are too many for one launch");
  }
  if (rows <= 0 || first == end) return absl::OkStatus();
  Params p = ShapeParams(shape, device_weights,
                         reinterpret_cast<const BlockRows*>(static_cast<const uint8_t*>(plan) + PlanBlocksOffset(experts)));
  p.x_rows = x_rows;
  p.block_start = static_cast<const int32_t*>(plan) + experts + 1;
  p.first = static_cast<int>(first), p.end = static_cast<int>(end);
  return LaunchForm(shape, p, weights_aligned16, static_cast<unsigned>(bound), stream);
}

bool GroupedGemmWeightsAligned16(const ExpertGemmWeights* weights, int64_t first, int64_t end) {
  return WeightsAligned16(weights, first, end);
}

}  // namespace krasis::cuda
