// CpuOps (the fast CPU Ops) against the reference kernels on fresh random data,
// for every SIMD path this machine supports (scalar, AVX2, AVX-512), BF16 / F16 /
// F32 weights, awkward shapes (tails shorter than a vector, fewer rows than
// threads), batches of 1-9 tokens, on a pool of several threads; attention over
// a paged cache whose blocks are out of order, for GQA and the MQA shape of
// absorbed MLA, split over the pool by heads and by positions; MLA's per-head
// products; and ParallelFor's ranges.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <mutex>
#include <numeric>
#include <random>
#include <tuple>

#include "common/kernels/cpu_ops.h"
#include "common/models/kv_cache.h"
#include "common/kernels/reference.h"
#include "common/kernels/routing.h"

namespace krasis {
namespace {

using quant::Isa;

std::vector<float> Random(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(0.0f, 1.0f);
  std::vector<float> v(n);
  for (auto& x : v) x = d(rng);
  return v;
}

double RelError(const float* got, const float* want, size_t n) {
  double num = 0, den = 0;
  for (size_t i = 0; i < n; ++i) {
    if (std::isnan(got[i])) return INFINITY;
    num += (double(got[i]) - want[i]) * (double(got[i]) - want[i]);
    den += double(want[i]) * want[i];
  }
  return std::sqrt(num / den);
}

// A weight tensor of `dtype` holding random values (owned bytes + a view).
struct Weight {
  std::vector<std::byte> bytes;
  TensorView view;
  Weight(DType dtype, Shape shape, uint32_t seed) {
    std::vector<float> v = Random(static_cast<size_t>(NumElements(shape)), seed);
    bytes.resize(v.size() * DTypeSize(dtype));
    for (size_t i = 0; i < v.size(); ++i) {
      if (dtype == DType::kF32) {
        std::memcpy(&bytes[i * 4], &v[i], 4);
      } else {
        const uint16_t b = dtype == DType::kBF16 ? FloatToBF16(v[i]) : FloatToF16(v[i]);
        std::memcpy(&bytes[i * 2], &b, 2);
      }
    }
    view = TensorView{dtype, std::move(shape), bytes.data()};
  }
};

std::vector<Isa> Isas() {
  std::vector<Isa> out;
  for (Isa isa : {Isa::kScalar, Isa::kAvx2, Isa::kAvx512Vnni, Isa::kAmx}) {
    if (quant::IsaSupported(isa)) out.push_back(isa);
  }
  return out;
}

class CpuOpsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto topology = Topology::FromSynthetic("pack:1 core:3 pu:1");
    ASSERT_TRUE(topology.ok()) << topology.status();
    topology_ = std::move(*topology);
    auto pool = NumaThreadPool::Create(*topology_);
    ASSERT_TRUE(pool.ok()) << pool.status();
    pool_ = std::move(*pool);
  }
  std::unique_ptr<Topology> topology_;
  std::unique_ptr<NumaThreadPool> pool_;
};

TEST_F(CpuOpsTest, MatMulMatchesReference) {
  const std::vector<std::pair<int64_t, int64_t>> shapes = {{1, 1}, {7, 13}, {5, 16}, {33, 100}, {300, 512},
                                                           {64, 2048}, {129, 47}};
  uint32_t seed = 1;
  for (Isa isa : Isas()) {
    CpuOps ops(pool_.get(), isa);
    for (DType dtype : {DType::kBF16, DType::kF16, DType::kF32}) {
      for (auto [out, in] : shapes) {
        for (int64_t n : {1, 2, 3, 4, 5, 9}) {
          for (bool with_bias : {false, true}) {
            SCOPED_TRACE(testing::Message() << quant::IsaName(isa) << " " << DTypeName(dtype) << " [" << out << ", "
                                            << in << "] n=" << n << " bias=" << with_bias);
            Weight w(dtype, {out, in}, ++seed);
            Weight bias(DType::kBF16, {out}, ++seed);
            std::vector<float> x = Random(static_cast<size_t>(n * in), ++seed);
            std::vector<float> got(static_cast<size_t>(n * out), NAN), want(got.size());
            ops.MatMul(x.data(), n, w.view, got.data(), with_bias ? &bias.view : nullptr);
            ref::MatMul(x.data(), n, w.view, want.data(), with_bias ? &bias.view : nullptr);
            EXPECT_LT(RelError(got.data(), want.data(), got.size()), 2e-6);
          }
        }
      }
    }
  }
}

// MLA's per-head products: each head's matrix a slice of one stored tensor
// with other rows between heads (as W_uv sits in kv_b_proj), inputs and
// outputs strided per (token, head); elements between the outputs stay untouched.
TEST_F(CpuOpsTest, HeadsMatMulMatchesReference) {
  struct Case {
    int64_t heads, out, in;
  };
  const Case cases[] = {{1, 40, 16}, {5, 33, 100}, {16, 128, 512}, {16, 512, 128}, {3, 7, 9}};
  uint32_t seed = 500;
  for (Isa isa : Isas()) {
    CpuOps ops(pool_.get(), isa);
    for (DType dtype : {DType::kBF16, DType::kF16, DType::kF32}) {
      for (const Case& c : cases) {
        for (int64_t n : {1, 2, 5}) {
          SCOPED_TRACE(testing::Message() << quant::IsaName(isa) << " " << DTypeName(dtype) << " heads=" << c.heads
                                          << " [" << c.out << ", " << c.in << "] n=" << n);
          const int64_t gap = 3;  // rows between heads' matrices
          Weight w(dtype, {c.heads * (c.out + gap), c.in}, ++seed);
          const size_t row_bytes = static_cast<size_t>(c.in) * DTypeSize(dtype);
          auto head = [&](int64_t h) {
            return TensorView{dtype, {c.out, c.in}, w.bytes.data() + static_cast<size_t>(h * (c.out + gap)) * row_bytes};
          };
          const int64_t x_stride = c.in + 7, y_stride = c.out + 5;
          std::vector<float> x = Random(static_cast<size_t>(n * c.heads * x_stride), ++seed);
          std::vector<float> got(static_cast<size_t>(n * c.heads * y_stride), NAN), want(got.size(), NAN);
          ops.HeadsMatMul(x.data(), n, c.heads, x_stride, head, got.data(), y_stride);
          ref::HeadsMatMul(x.data(), n, c.heads, x_stride, head, want.data(), y_stride);
          std::vector<float> got_out, want_out;
          for (size_t i = 0; i < got.size(); ++i) {
            if (static_cast<int64_t>(i) % y_stride < c.out) {
              got_out.push_back(got[i]);
              want_out.push_back(want[i]);
            } else {
              EXPECT_TRUE(std::isnan(got[i])) << "wrote between outputs at " << i;
            }
          }
          EXPECT_LT(RelError(got_out.data(), want_out.data(), got_out.size()), 2e-6);
        }
      }
    }
  }
}

TEST_F(CpuOpsTest, RmsNormAndSiluMulMatchReference) {
  uint32_t seed = 100;
  for (Isa isa : Isas()) {
    CpuOps ops(pool_.get(), isa);
    for (int64_t dim : {1, 15, 128, 2049}) {
      for (bool zero_centred : {false, true}) {
        SCOPED_TRACE(testing::Message() << quant::IsaName(isa) << " dim=" << dim << " zc=" << zero_centred);
        Weight w(DType::kBF16, {dim}, ++seed);
        std::vector<float> x = Random(static_cast<size_t>(3 * dim), ++seed);
        std::vector<float> got(x.size()), want(x.size());
        ops.RmsNorm(x.data(), 3, dim, w.view, 1e-6f, zero_centred, got.data());
        ref::RmsNorm(x.data(), 3, dim, w.view, 1e-6f, zero_centred, want.data());
        EXPECT_LT(RelError(got.data(), want.data(), got.size()), 1e-6);
        // In place gives the same.
        ops.RmsNorm(x.data(), 3, dim, w.view, 1e-6f, zero_centred, x.data());
        EXPECT_LT(RelError(x.data(), want.data(), x.size()), 1e-6);
      }
    }
    std::vector<float> g = Random(1000, ++seed), u = Random(1000, ++seed), got(1000), want(1000);
    for (float& x : g) x *= 4.0f;
    // The far ends of e^x's clamp, zero, and a tail shorter than a vector.
    const float ends[] = {-100.0f, -88.0f, -87.0f, -20.0f, -0.0f, 0.0f, 20.0f, 87.0f, 88.5f, 100.0f};
    std::copy(std::begin(ends), std::end(ends), g.begin());
    for (int64_t n : {1000, 997, 3}) {
      SCOPED_TRACE(testing::Message() << quant::IsaName(isa) << " n=" << n);
      ops.SiluMul(g.data(), u.data(), n, got.data());
      ref::SiluMul(g.data(), u.data(), n, want.data());
      // (Not for n = 3: those three are the tiny silu(-100), silu(-88) and
      // silu(-87), where e^x's clamp gives -4.5e-37 for silu(-100) and the
      // reference, whose e^100 overflows, gives -0.)
      if (n > 3) {
        EXPECT_LT(RelError(got.data(), want.data(), static_cast<size_t>(n)), 1e-6);
      }
      // Element by element too, so one bad value in a thousand cannot hide.
      for (int64_t i = 0; i < n; ++i) {
        EXPECT_NEAR(got[i], want[i], 2e-6f * std::abs(want[i]) + 1e-30f) << "gate " << g[i];
      }
      // silu alone (no up), in place.
      std::vector<float> x(g.begin(), g.begin() + n);
      cpu::SiluMul(x.data(), nullptr, n, x.data(), isa);
      for (int64_t i = 0; i < n; ++i) EXPECT_NEAR(x[i], ref::Silu(g[i]), 2e-6f * std::abs(ref::Silu(g[i])) + 1e-30f);
      // A NaN gate gives NaN, as the reference does (not a clamped number).
      std::vector<float> nan_gate(g.begin(), g.begin() + n), nan_out(static_cast<size_t>(n));
      nan_gate[static_cast<size_t>(n - 1)] = std::nanf("");
      cpu::SiluMul(nan_gate.data(), nullptr, n, nan_out.data(), isa);
      EXPECT_TRUE(std::isnan(nan_out[static_cast<size_t>(n - 1)]));
      std::vector<float> ones(static_cast<size_t>(n), 1.0f);
      cpu::SigmoidMul(nan_gate.data(), n, ones.data(), isa);
      EXPECT_TRUE(std::isnan(ones[static_cast<size_t>(n - 1)]));
      // x *= sigmoid(gate).
      std::vector<float> y(u.begin(), u.begin() + n);
      cpu::SigmoidMul(g.data(), n, y.data(), isa);
      for (int64_t i = 0; i < n; ++i) {
        const float w = u[i] * ref::Sigmoid(g[i]);
        EXPECT_NEAR(y[i], w, 2e-6f * std::abs(w) + 1e-30f) << "gate " << g[i];
      }
    }
  }
}

struct AttentionCase {
  int64_t heads, kv_heads, head_dim, v_dim, k_offset, v_offset, n, start_pos;
};

TEST_F(CpuOpsTest, AttentionMatchesReferenceOverPagedCache) {
  const AttentionCase cases[] = {
      // GQA: row = k [kv_heads, hd] then v [kv_heads, hd].
      {8, 2, 64, 64, 0, 2 * 64, 1, 0},
      {8, 2, 64, 64, 0, 2 * 64, 1, 70},
      {8, 2, 64, 64, 0, 2 * 64, 5, 37},
      {4, 4, 17, 17, 0, 4 * 17, 3, 20},
      {16, 2, 256, 256, 0, 2 * 256, 1, 300},
      // Absorbed MLA: one kv head, key = [latent | rope], value = latent.
      {16, 1, 80, 64, 0, 0, 1, 45},
      {4, 1, 80, 64, 0, 0, 6, 10},
      // Decode split over the pool's 3 workers (about 6 items, chunks of at
      // least 32 positions): heads in subsets only (2 tokens, 62 positions:
      // 4 subsets of 4 heads; 40 positions: 6 subsets of 3 or 1); subsets
      // and chunks merged by the last to finish (501 positions: 4 x 2); GQA
      // groups in 2 subsets x 2 chunks (2 KV heads, 301 positions); chunk
      // boundaries inside the second of two tokens' ranges (77 positions).
      {16, 1, 80, 64, 0, 0, 2, 60},
      {16, 1, 80, 64, 0, 0, 1, 500},
      {16, 1, 80, 64, 0, 0, 1, 39},
      {16, 2, 64, 48, 0, 2 * 64, 1, 300},
      {12, 3, 32, 32, 0, 3 * 32, 3, 33},
      {8, 1, 48, 40, 0, 0, 2, 77},
  };
  const int64_t block_size = 16;
  uint32_t seed = 200;
  for (Isa isa : Isas()) {
    CpuOps ops(pool_.get(), isa);
    for (DType kv : {DType::kF32, DType::kBF16, DType::kF16}) {
      for (const AttentionCase& c : cases) {
        SCOPED_TRACE(testing::Message() << quant::IsaName(isa) << " kv=" << DTypeName(kv) << " heads=" << c.heads
                                        << "/" << c.kv_heads << " hd=" << c.head_dim << " n=" << c.n
                                        << " start=" << c.start_pos);
        const int64_t positions = c.start_pos + c.n;
        const int64_t row_floats =
            std::max(c.k_offset + c.kv_heads * c.head_dim, c.v_offset + c.kv_heads * c.v_dim);
        const int64_t stride = row_floats + 3;  // other layers' elements between slots
        const int64_t blocks = (positions + block_size - 1) / block_size;
        // The cache as stored: random values narrowed to the cache's dtype.
        std::vector<float> values = Random(static_cast<size_t>((blocks + 2) * block_size * stride), ++seed);
        PagedKvCache narrow(1, 1, {static_cast<int64_t>(values.size())}, kv);
        narrow.Store(values.data(), static_cast<int64_t>(values.size()), narrow.Slot(0, 0, 0));
        const std::byte* storage = narrow.Slot(0, 0, 0);
        const int64_t esize = static_cast<int64_t>(DTypeSize(kv));
        // Blocks in a scrambled order, as a real block table has them.
        std::vector<int64_t> table(static_cast<size_t>(blocks));
        std::iota(table.begin(), table.end(), 0);
        std::shuffle(table.begin(), table.end(), std::mt19937(seed));
        for (auto& b : table) b += 1;
        std::vector<float> q = Random(static_cast<size_t>(c.n * c.heads * c.head_dim), ++seed);
        std::vector<float> got(static_cast<size_t>(c.n * c.heads * c.v_dim), NAN), want(got.size());
        AttentionArgs args;
        args.q = q.data();
        args.n = c.n;
        args.start_pos = c.start_pos;
        args.heads = c.heads;
        args.kv_heads = c.kv_heads;
        args.head_dim = c.head_dim;
        args.v_dim = c.v_dim;
        args.scale = 1.0f / std::sqrt(static_cast<float>(c.head_dim));
        args.block_size = block_size;
        args.slot_stride = stride;
        args.k_offset = c.k_offset;
        args.v_offset = c.v_offset;
        args.kv_dtype = kv;
        args.block_row = [&](int64_t b) -> const std::byte* {
          return storage + table[static_cast<size_t>(b)] * block_size * stride * esize;
        };
        args.out = got.data();
        ops.Attention(args);
        args.out = want.data();
        ref::Attention(args);
        EXPECT_LT(RelError(got.data(), want.data(), got.size()), 1e-5);
        // The narrowed cache changes the result only by its rounding.
        if (kv != DType::kF32) {
          PagedKvCache wide(1, 1, {static_cast<int64_t>(values.size())}, DType::kF32);
          wide.Store(values.data(), static_cast<int64_t>(values.size()), wide.Slot(0, 0, 0));
          const std::byte* wide_storage = wide.Slot(0, 0, 0);
          args.kv_dtype = DType::kF32;
          args.block_row = [&](int64_t b) -> const std::byte* {
            return wide_storage + table[static_cast<size_t>(b)] * block_size * stride * 4;
          };
          std::vector<float> exact(got.size());
          args.out = exact.data();
          ref::Attention(args);
          const double rel = RelError(got.data(), exact.data(), got.size());
          EXPECT_GT(rel, 0.0);
          EXPECT_LT(rel, kv == DType::kBF16 ? 2e-2 : 3e-3);
        }
      }
    }
  }
}

TEST_F(CpuOpsTest, ParallelForCoversEveryIndexOnce) {
  CpuOps ops(pool_.get());
  for (int64_t count : {0, 1, 2, 3, 7, 100}) {
    std::vector<int> hits(static_cast<size_t>(count), 0);
    std::mutex mu;
    ops.ParallelFor(count, [&](int64_t begin, int64_t end) {
      std::lock_guard<std::mutex> lock(mu);
      EXPECT_LT(begin, end);
      for (int64_t i = begin; i < end; ++i) ++hits[static_cast<size_t>(i)];
    });
    for (int h : hits) EXPECT_EQ(h, 1);
  }
  // Ops called inside a ParallelFor task run on that thread, with the same results.
  Weight w(DType::kBF16, {256, 512}, 7);
  std::vector<float> x = Random(512, 8), want(256);
  ref::MatMul(x.data(), 1, w.view, want.data());
  std::vector<std::vector<float>> got(4, std::vector<float>(256));
  ops.ParallelFor(4, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) ops.MatMul(x.data(), 1, w.view, got[static_cast<size_t>(i)].data());
  });
  for (const auto& g : got) EXPECT_LT(RelError(g.data(), want.data(), g.size()), 2e-6);
}

// cpu::GatedDeltaRule against the rule as transformers writes it (S *= decay;
// kv = k^T S; delta = (v - kv) beta; S += k delta^T; o = q^T S), in double, over
// several tokens so the state carries, for head sizes with and without vector
// tails, on every SIMD path.
// One token of the gated delta rule in double: state s [dk, dv] updated, o [dv].
void DeltaRuleInDouble(const float* q, const float* k, const float* v, double beta, double decay,
                       std::vector<double>& s, int64_t dk, int64_t dv, double* o) {
  for (double& x : s) x *= decay;
  std::vector<double> delta(static_cast<size_t>(dv), 0.0);
  for (int64_t i = 0; i < dk; ++i) {
    for (int64_t j = 0; j < dv; ++j) delta[static_cast<size_t>(j)] += k[i] * s[static_cast<size_t>(i * dv + j)];
  }
  for (int64_t j = 0; j < dv; ++j) delta[static_cast<size_t>(j)] = (v[j] - delta[static_cast<size_t>(j)]) * beta;
  std::fill(o, o + dv, 0.0);
  for (int64_t i = 0; i < dk; ++i) {
    for (int64_t j = 0; j < dv; ++j) {
      double& x = s[static_cast<size_t>(i * dv + j)];
      x += k[i] * delta[static_cast<size_t>(j)];
      o[j] += q[i] * x;
    }
  }
}

TEST(GatedDeltaRuleTest, MatchesTheRuleInDouble) {
  for (Isa isa : Isas()) {
    for (auto [dk, dv] : {std::pair<int64_t, int64_t>{128, 128}, {16, 16}, {7, 70}, {33, 5}, {64, 200}}) {
      SCOPED_TRACE(testing::Message() << quant::IsaName(isa) << " dk " << dk << " dv " << dv);
      std::vector<float> s = Random(static_cast<size_t>(dk * dv), 11);
      for (float& x : s) x *= 0.1f;
      std::vector<double> want(s.begin(), s.end());
      std::vector<float> o(static_cast<size_t>(dv));
      std::vector<double> o_want(static_cast<size_t>(dv));
      for (int token = 0; token < 4; ++token) {
        const std::vector<float> q = Random(static_cast<size_t>(dk), 20 + token);
        const std::vector<float> k = Random(static_cast<size_t>(dk), 30 + token);
        const std::vector<float> v = Random(static_cast<size_t>(dv), 40 + token);
        const float beta = 0.2f + 0.15f * token, decay = 0.97f - 0.2f * token;
        cpu::GatedDeltaRule(q.data(), k.data(), v.data(), beta, decay, s.data(), dk, dv, o.data(), isa);
        DeltaRuleInDouble(q.data(), k.data(), v.data(), beta, decay, want, dk, dv, o_want.data());
        std::vector<float> o_wantf(o_want.begin(), o_want.end()), s_wantf(want.begin(), want.end());
        EXPECT_LT(RelError(o.data(), o_wantf.data(), o.size()), 1e-5) << "token " << token;
        EXPECT_LT(RelError(s.data(), s_wantf.data(), s.size()), 1e-5) << "token " << token;
      }
    }
  }
}

// The chunked (WY) form of the rule, the reference for a parallel prefill
// kernel, against the rule token by token: lengths shorter than, equal to and
// not a multiple of the chunk, from a non-zero state, with decays near 1, small
// and exactly 0 (which must cut the past off, not give NaN).
TEST(GatedDeltaRuleTest, ChunkedFormMatchesTokenByToken) {
  struct Case {
    int64_t dk, dv, n, chunk;
  };
  for (const Case& c : {Case{16, 16, 1, 8}, Case{16, 16, 8, 8}, Case{33, 5, 45, 8}, Case{128, 128, 130, 64},
                        Case{64, 96, 200, 16}}) {
    SCOPED_TRACE(testing::Message() << "dk " << c.dk << " dv " << c.dv << " n " << c.n << " chunk " << c.chunk);
    std::vector<float> q = Random(static_cast<size_t>(c.n * c.dk), 60), k = Random(static_cast<size_t>(c.n * c.dk), 61);
    const std::vector<float> v = Random(static_cast<size_t>(c.n * c.dv), 62);
    for (int64_t t = 0; t < c.n; ++t) {  // L2-normalised keys and queries, as the model makes them
      ref::L2Normalize(&q[static_cast<size_t>(t * c.dk)], c.dk, 1e-6f);
      ref::L2Normalize(&k[static_cast<size_t>(t * c.dk)], c.dk, 1e-6f);
    }
    std::vector<float> beta(static_cast<size_t>(c.n)), decay(static_cast<size_t>(c.n));
    std::mt19937 rng(63);
    std::uniform_real_distribution<float> unit(0.0f, 1.0f);
    for (int64_t t = 0; t < c.n; ++t) {
      beta[static_cast<size_t>(t)] = unit(rng);
      const float u = unit(rng);
      decay[static_cast<size_t>(t)] = t % 37 == 20 ? 0.0f : t % 11 == 5 ? 1e-6f : 0.8f + 0.2f * u;
    }
    std::vector<float> s = Random(static_cast<size_t>(c.dk * c.dv), 64);
    std::vector<double> want(s.begin(), s.end());
    std::vector<double> o_want(static_cast<size_t>(c.n * c.dv));
    for (int64_t t = 0; t < c.n; ++t) {
      DeltaRuleInDouble(&q[static_cast<size_t>(t * c.dk)], &k[static_cast<size_t>(t * c.dk)],
                        &v[static_cast<size_t>(t * c.dv)], beta[static_cast<size_t>(t)], decay[static_cast<size_t>(t)],
                        want, c.dk, c.dv, &o_want[static_cast<size_t>(t * c.dv)]);
    }
    std::vector<float> o(static_cast<size_t>(c.n * c.dv), NAN);
    ref::GatedDeltaChunked(q.data(), k.data(), v.data(), beta.data(), decay.data(), c.n, c.dk, c.dv, c.chunk, s.data(),
                           o.data());
    std::vector<float> o_wantf(o_want.begin(), o_want.end()), s_wantf(want.begin(), want.end());
    EXPECT_LT(RelError(o.data(), o_wantf.data(), o.size()), 1e-6);
    EXPECT_LT(RelError(s.data(), s_wantf.data(), s.size()), 1e-6);
  }
}


// The first largest value's index, against a plain scan, on every ISA: random
// vocabularies of odd lengths, ties (the lowest index wins), NaN anywhere
// (skipped), -inf only, all NaN, and the maximum in the scalar tail.
TEST(ArgMaxTest, FirstLargestSkippingNaN) {
  auto plain = [](const std::vector<float>& x) {
    int64_t best = -1;
    for (size_t i = 0; i < x.size(); ++i) {
      if (!std::isnan(x[i]) && (best < 0 || x[i] > x[static_cast<size_t>(best)])) best = static_cast<int64_t>(i);
    }
    return std::max<int64_t>(best, 0);
  };
  const float nan = std::numeric_limits<float>::quiet_NaN(), inf = std::numeric_limits<float>::infinity();
  std::vector<std::vector<float>> cases;
  for (size_t n : {1, 7, 8, 31, 32, 33, 100, 151936}) {
    cases.push_back(Random(n, 50 + n));
    std::vector<float> ties = Random(n, 60 + n);
    for (float& v : ties) v = std::round(v * 2.0f);  // few distinct values: many ties at the maximum
    cases.push_back(ties);
    std::vector<float> with_nan = Random(n, 70 + n);
    for (size_t i = 0; i < n; i += 5) with_nan[i] = nan;
    cases.push_back(with_nan);
    std::vector<float> tail_max = Random(n, 80 + n);
    tail_max[n - 1] = 100.0f;
    cases.push_back(tail_max);
  }
  cases.push_back(std::vector<float>(40, -inf));
  cases.push_back(std::vector<float>(40, nan));
  cases.push_back({nan, -inf, nan, -2.0f, -2.0f});
  cases.push_back({-0.0f, 0.0f, -0.0f});
  for (Isa isa : Isas()) {
    for (size_t c = 0; c < cases.size(); ++c) {
      EXPECT_EQ(cpu::ArgMax(cases[c].data(), static_cast<int64_t>(cases[c].size()), isa), plain(cases[c]))
          << quant::IsaName(isa) << " case " << c << " of length " << cases[c].size();
    }
    EXPECT_EQ(cpu::ArgMax(nullptr, 0, isa), 0);
  }
}


// The decode step's routing (krasis::Route) chooses the reference's experts in
// the reference's order with bit-equal weights: random and heavily tied logits,
// renormalised or not, scaled, for every router kind.
TEST(RouteTest, MatchesTheReferenceBitForBit) {
  for (RouterKind kind : {RouterKind::kSoftmaxTopK, RouterKind::kGroupLimited, RouterKind::kSigmoidNoAuxTc}) {
    for (auto [experts, k, groups] : {std::tuple<int64_t, int64_t, int64_t>{512, 10, 1}, {64, 6, 8}, {8, 8, 1}, {16, 1, 4}}) {
      for (int variant = 0; variant < 5; ++variant) {
        RouterParams p;
        p.kind = kind;
        p.num_experts = experts;
        p.top_k = k;
        p.n_group = kind == RouterKind::kSoftmaxTopK ? 1 : groups;
        p.topk_group = std::max<int64_t>(1, p.n_group / 2);
        p.norm_topk_prob = variant % 2 == 1;
        p.routed_scaling = variant == 2 || variant == 3 ? 2.5f : 1.0f;
        std::vector<float> logits = Random(static_cast<size_t>(experts), 90 + variant + 7 * static_cast<uint32_t>(experts));
        if (variant == 3) {
          for (float& v : logits) v = std::round(v);  // many equal logits
        }
        if (variant == 4) std::fill(logits.begin(), logits.end(), 0.25f);  // all equal: the first k
        const std::vector<float> bias = Random(static_cast<size_t>(experts), 5);
        std::vector<int> want_ids, ids;
        std::vector<float> want_w, w;
        ref::Route(p, logits.data(), bias.data(), &want_ids, &want_w);
        Route(p, logits.data(), bias.data(), &ids, &w);
        SCOPED_TRACE(testing::Message() << "kind " << static_cast<int>(kind) << ", " << experts << " experts, top-"
                                        << k << ", variant " << variant);
        EXPECT_EQ(ids, want_ids);
        ASSERT_EQ(w.size(), want_w.size());
        for (size_t i = 0; i < w.size(); ++i) EXPECT_EQ(w[i], want_w[i]) << "weight " << i;
      }
    }
  }
}

// A NaN logit never displaces a real one.
TEST(RouteTest, NanLogitIsNeverChosenOverARealOne) {
  RouterParams p;
  p.num_experts = 6;
  p.top_k = 2;
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const std::vector<float> logits = {nan, 0.5f, nan, 2.0f, -1.0f, 1.0f};
  std::vector<int> ids;
  std::vector<float> w;
  Route(p, logits.data(), nullptr, &ids, &w);
  EXPECT_EQ(ids, (std::vector<int>{3, 5}));
  ASSERT_EQ(w.size(), 2u);
  EXPECT_GT(w[0], w[1]);
}

}  // namespace
}  // namespace krasis
