// The chunked Gated DeltaNet kernels' code (common/cuda/gdn_chunked.cuh) run on
// the CPU: each block's threads are std::threads, __syncthreads a barrier,
// shared memory a NaN-filled buffer and the scratch NaN-filled too (a read of
// anything not written shows), blocks one after another, pieces as
// LaunchGdnChunked runs them. Checked against ref::GatedDeltaChunked (double)
// on fresh random data: odd head dims (partial 32-column tiles, rows not a
// multiple of 8), several value heads per key head, a column count above the
// prep kernel's 256 threads, lengths around a chunk and across a piece, decays
// near 1 and exactly 0, a non-zero state carried from call to call. The GPU
// tests (label gpu) run the same kernels on a card; this keeps their logic
// covered where there is none.
#include <gtest/gtest.h>

#include <barrier>
#include <cmath>
#include <cstdint>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "tests/models/gdn_test_data.h"

namespace krasis::cuda::emu {

struct Dim3 {
  unsigned x = 0, y = 0, z = 0;
};
struct Float4 {
  float x, y, z, w;
};
struct Float2 {
  float x, y;
};
thread_local Dim3 threadIdx, blockIdx;
Dim3 blockDim;
thread_local float* shared_floats = nullptr;
thread_local std::barrier<>* block_barrier = nullptr;

// Runs body() as every thread of every block of `grid`, one block at a time.
template <typename Body>
void Launch(unsigned grid_x, unsigned grid_y, int threads, size_t smem_bytes, const Body& body) {
  blockDim = Dim3{static_cast<unsigned>(threads), 1, 1};
  for (unsigned by = 0; by < grid_y; ++by) {
    for (unsigned bx = 0; bx < grid_x; ++bx) {
      std::vector<float> smem(smem_bytes / sizeof(float) + 1, NAN);
      std::barrier<> barrier(threads);
      std::vector<std::thread> pool;
      for (int t = 0; t < threads; ++t) {
        pool.emplace_back([&, t] {
          threadIdx = Dim3{static_cast<unsigned>(t), 0, 0};
          blockIdx = Dim3{bx, by, 0};
          shared_floats = smem.data();
          block_barrier = &barrier;
          body();
        });
      }
      for (std::thread& th : pool) th.join();
    }
  }
}

}  // namespace krasis::cuda::emu

#define __global__
#define __device__
#define __launch_bounds__(...)
#define __syncthreads() ::krasis::cuda::emu::block_barrier->arrive_and_wait()
#define KRASIS_DYNAMIC_SHARED_FLOATS(name) float* name = ::krasis::cuda::emu::shared_floats
#define KRASIS_UNROLL
using float4 = krasis::cuda::emu::Float4;
using float2 = krasis::cuda::emu::Float2;
using krasis::cuda::emu::blockDim;
using krasis::cuda::emu::blockIdx;
using krasis::cuda::emu::threadIdx;
#include "common/cuda/gdn_chunked.cuh"

namespace krasis::cuda {
namespace {

// LaunchGdnChunked's pieces (ForEachGdnPiece), with the emulated launches.
void RunChunked(const float* mixed, const float* gates, int64_t n, int nk, int nv, int dk, int dv, float* state,
                float* core, float* scratch) {
  const GdnChunkLaunch geometry(nv, dk, dv);
  ForEachGdnPiece(n, nv, dk, dv, scratch, [&](int64_t first, int64_t m, const GdnChunkScratch& sc, unsigned chunks) {
    emu::Launch(chunks, static_cast<unsigned>(nv), geometry.prep_threads, geometry.prep_smem,
                [&] { GdnChunkPrepKernel(mixed, gates, first, m, nk, nv, dk, dv, sc); });
    emu::Launch(geometry.state_grid_x, geometry.state_grid_y, geometry.state_threads, geometry.state_smem,
                [&] { GdnChunkStateKernel(mixed, first, m, nk, nv, dk, dv, sc, state, core); });
    return true;
  });
}

double RelError(const std::vector<float>& got, const std::vector<float>& want) {
  double num = 0, den = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    if (!std::isfinite(got[i])) return INFINITY;
    num += (double(got[i]) - want[i]) * (double(got[i]) - want[i]);
    den += double(want[i]) * want[i];
  }
  return std::sqrt(num / den);
}

TEST(GdnChunkedEmulationTest, KernelsComputeWhatTheChunkedReferenceDoes) {
  struct Case {
    GdnTestShape shape;
    std::vector<int64_t> lengths;
  };
  const uint32_t seed = std::random_device{}();
  RecordProperty("seed", std::to_string(seed));
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  for (const Case& c : {Case{{2, 4, 20, 33}, {1, 64, 135}}, Case{{1, 2, 256, 40}, {65}}, Case{{1, 1, 16, 16}, {2100, 3}},
                        Case{{2, 2, 64, 200}, {70}}}) {
    const GdnTestShape& s = c.shape;
    std::vector<float> state(static_cast<size_t>(s.nv * s.dk * s.dv));
    for (float& x : state) x = 0.1f * normal(rng);
    std::vector<float> got_state = state;
    for (int64_t n : c.lengths) {
      std::vector<float> mixed, gates;
      MakeGdnInputs(rng, s, n, mixed, gates);
      std::vector<float> core(static_cast<size_t>(n * s.nv * s.dv), NAN);
      std::vector<float> scratch(static_cast<size_t>(GdnChunkScratchFloats(n, s.nv, s.dk, s.dv)), NAN);
      RunChunked(mixed.data(), gates.data(), n, static_cast<int>(s.nk), static_cast<int>(s.nv), static_cast<int>(s.dk),
                 static_cast<int>(s.dv), got_state.data(), core.data(), scratch.data());
      const std::vector<float> want = GdnReference(s, n, mixed, gates, state);
      const std::string where = "nk " + std::to_string(s.nk) + " nv " + std::to_string(s.nv) + " dk " +
                                std::to_string(s.dk) + " dv " + std::to_string(s.dv) + ", " + std::to_string(n) +
                                " tokens";
      EXPECT_LT(RelError(core, want), 1e-4) << where << " (output)";
      EXPECT_LT(RelError(got_state, state), 1e-4) << where << " (state)";
    }
  }
}

}  // namespace
}  // namespace krasis::cuda
