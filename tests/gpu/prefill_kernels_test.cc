// GPU test (ctest label gpu): every prefill kernel of common/cuda/prefill_kernels.h
// against its CPU reference on fresh random data (a new seed each run, printed on
// failure). Without a GPU every test here is skipped with a message that says so.
#include "common/cuda/prefill_kernels.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <random>
#include <tuple>
#include <vector>

#include "common/cuda/device.h"
#include "common/dtype.h"
#include "tests/gpu/gpu_test_util.h"
#include "tests/models/gdn_test_data.h"
#include "common/kernels/reference.h"
#include "common/kernels/routing.h"
#include "common/models/rope.h"

namespace krasis {
namespace {

// Device memory that frees itself.
template <typename T>
class DeviceBuffer {
 public:
  explicit DeviceBuffer(size_t n) : n_(n) { EXPECT_EQ(cudaMalloc(&p_, std::max<size_t>(n, 1) * sizeof(T)), cudaSuccess); }
  explicit DeviceBuffer(const std::vector<T>& host) : DeviceBuffer(host.size()) {
    EXPECT_EQ(cudaMemcpy(p_, host.data(), host.size() * sizeof(T), cudaMemcpyHostToDevice), cudaSuccess);
  }
  ~DeviceBuffer() { cudaFree(p_); }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  T* get() { return p_; }
  std::vector<T> Download() {
    std::vector<T> h(n_);
    EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);
    EXPECT_EQ(cudaMemcpy(h.data(), p_, n_ * sizeof(T), cudaMemcpyDeviceToHost), cudaSuccess);
    return h;
  }

 private:
  T* p_ = nullptr;
  size_t n_;
};

class PrefillKernelsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    KRASIS_SKIP_WITHOUT_GPU();
    seed_ = std::random_device{}();
    RecordProperty("seed", std::to_string(seed_));
  }

  std::vector<float> Random(size_t n, float scale = 1.0f) {
    std::mt19937 rng(++seed_);
    std::normal_distribution<float> dist(0.0f, scale);
    std::vector<float> v(n);
    for (float& x : v) x = dist(rng);
    return v;
  }

  uint32_t seed_ = 0;
};

double RelError(const std::vector<float>& got, const std::vector<float>& want) {
  double num = 0, den = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    if (std::isnan(got[i])) return INFINITY;
    num += (double(got[i]) - want[i]) * (double(got[i]) - want[i]);
    den += double(want[i]) * want[i];
  }
  return std::sqrt(num / den);
}

std::vector<float> Widen(const std::vector<uint16_t>& bits) {
  std::vector<float> out(bits.size());
  for (size_t i = 0; i < bits.size(); ++i) out[i] = BF16ToFloat(bits[i]);
  return out;
}

TensorView F32View(const std::vector<float>& v) {
  return TensorView{DType::kF32, {static_cast<int64_t>(v.size())}, reinterpret_cast<const std::byte*>(v.data())};
}

TEST_F(PrefillKernelsTest, RmsNormMatchesReference) {
  for (bool zero_centred : {false, true}) {
    const int64_t rows = 37, dim = 2048 + 7;
    std::vector<float> x = Random(static_cast<size_t>(rows * dim), 3.0f), w = Random(static_cast<size_t>(dim));
    std::vector<float> want(x.size());
    ref::RmsNorm(x.data(), rows, dim, F32View(w), 1e-6f, zero_centred, want.data());
    DeviceBuffer<float> dx(x), dw(w), out(x.size());
    DeviceBuffer<uint16_t> out16(x.size());
    ASSERT_TRUE(cuda::LaunchRmsNorm(dx.get(), rows, dim, dw.get(), 1e-6f, zero_centred, out.get(), out16.get(), nullptr).ok());
    EXPECT_LT(RelError(out.Download(), want), 1e-5);
    const double e16 = RelError(Widen(out16.Download()), want);
    EXPECT_GT(e16, 1e-4);  // really narrowed
    EXPECT_LT(e16, 5e-3);
  }
}

// The fused residual add + RMSNorm writes exactly what LaunchAdd then
// LaunchRmsNorm write: the sum into x, the norm into both outputs.
TEST_F(PrefillKernelsTest, AddRmsNormIsTheAddThenTheNorm) {
  for (bool zero_centred : {false, true}) {
    const int64_t rows = 29, dim = 2048 + 5;
    const std::vector<float> x = Random(static_cast<size_t>(rows * dim), 3.0f);
    const std::vector<float> add = Random(x.size(), 2.0f), w = Random(static_cast<size_t>(dim));
    DeviceBuffer<float> x1(x), x2(x), da(add), dw(w), out1(x.size()), out2(x.size());
    DeviceBuffer<uint16_t> bf1(x.size()), bf2(x.size());
    ASSERT_TRUE(cuda::LaunchAdd(x1.get(), da.get(), rows * dim, nullptr).ok());
    ASSERT_TRUE(cuda::LaunchRmsNorm(x1.get(), rows, dim, dw.get(), 1e-6f, zero_centred, out1.get(), bf1.get(), nullptr).ok());
    ASSERT_TRUE(
        cuda::LaunchAddRmsNorm(x2.get(), da.get(), rows, dim, dw.get(), 1e-6f, zero_centred, out2.get(), bf2.get(), nullptr)
            .ok());
    const std::vector<float> sum1 = x1.Download(), sum2 = x2.Download(), n1 = out1.Download(), n2 = out2.Download();
    const std::vector<uint16_t> b1 = bf1.Download(), b2 = bf2.Download();
    for (size_t i = 0; i < x.size(); ++i) {
      ASSERT_EQ(sum2[i], x[i] + add[i]) << i;
      ASSERT_EQ(sum2[i], sum1[i]) << i;
      ASSERT_EQ(n2[i], n1[i]) << i;
      ASSERT_EQ(b2[i], b1[i]) << i;
    }
    // Only the BF16 output (the backend's usual form).
    DeviceBuffer<float> x3(x);
    DeviceBuffer<uint16_t> bf3(x.size());
    ASSERT_TRUE(
        cuda::LaunchAddRmsNorm(x3.get(), da.get(), rows, dim, dw.get(), 1e-6f, zero_centred, nullptr, bf3.get(), nullptr)
            .ok());
    ASSERT_EQ(bf3.Download(), b1);
  }
  DeviceBuffer<float> x(64), w(64);
  EXPECT_FALSE(cuda::LaunchAddRmsNorm(x.get(), nullptr, 1, 64, w.get(), 1e-6f, false, nullptr, nullptr, nullptr).ok());
  EXPECT_FALSE(cuda::LaunchAddRmsNorm(x.get(), w.get(), 1, 64, w.get(), 1e-6f, false, x.get(), nullptr, nullptr).ok());
}

TEST_F(PrefillKernelsTest, RopeMatchesReference) {
  struct Case {
    int64_t heads, head_dim, rot_dim;
    bool interleaved;
    float factor;
  };
  for (const Case& c : {Case{8, 128, 128, false, 1.0f}, Case{4, 256, 64, false, 1.0f}, Case{16, 192, 64, true, 1.3f}}) {
    SCOPED_TRACE(testing::Message() << "head_dim " << c.head_dim << " rot " << c.rot_dim << " interleaved " << c.interleaved);
    Rope rope;
    rope.rot_dim = c.rot_dim;
    rope.interleaved = c.interleaved;
    rope.attention_factor = c.factor;
    for (int64_t i = 0; i < c.rot_dim / 2; ++i) {
      rope.inv_freq.push_back(std::pow(10000.0f, -2.0f * static_cast<float>(i) / static_cast<float>(c.rot_dim)));
    }
    const int64_t n = 45, start = 1000;
    // Tokens are rows of [heads, head_dim] plus 5 floats of something else.
    const int64_t token_stride = c.heads * c.head_dim + 5;
    std::vector<float> x = Random(static_cast<size_t>(n * token_stride)), want = x;
    for (int64_t t = 0; t < n; ++t) rope.Apply(&want[t * token_stride], c.heads, c.head_dim, start + t);
    DeviceBuffer<float> dx(x), table(rope.Table(start, n));
    ASSERT_TRUE(cuda::LaunchRope(dx.get(), n, c.heads, token_stride, c.head_dim, c.rot_dim, c.interleaved, table.get(),
                                 nullptr)
                    .ok());
    std::vector<float> got = dx.Download();
    EXPECT_LT(RelError(got, want), 1e-6);
    for (int64_t t = 0; t < n; ++t) {
      for (int64_t i = c.heads * c.head_dim; i < token_stride; ++i) ASSERT_EQ(got[t * token_stride + i], x[t * token_stride + i]);
    }
    // The table made on the card, positions far out too (angles of tens of
    // thousands of radians): within a few float ulps of the host's.
    for (int64_t from : {int64_t{0}, start, int64_t{100000}}) {
      const std::vector<float> host = rope.Table(from, n);
      DeviceBuffer<float> freqs(rope.inv_freq), dev(host.size());
      ASSERT_TRUE(cuda::LaunchRopeTable(freqs.get(), c.rot_dim, c.factor, from, n, dev.get(), nullptr).ok());
      const std::vector<float> got_table = dev.Download();
      for (size_t i = 0; i < host.size(); ++i) {
        ASSERT_NEAR(got_table[i], host[i], 4e-6f * c.factor) << "from " << from << " at " << i;
      }
    }
  }
  EXPECT_FALSE(cuda::LaunchRopeTable(nullptr, 63, 1.0f, 0, 4, nullptr, nullptr).ok());
}

TEST_F(PrefillKernelsTest, SiluMulAndBf16AndAddMatchReference) {
  const int64_t rows = 19, inter = 768;
  std::vector<float> gu = Random(static_cast<size_t>(rows * 2 * inter), 2.0f);
  std::vector<float> want(static_cast<size_t>(rows * inter));
  for (int64_t r = 0; r < rows; ++r) {
    ref::SiluMul(&gu[r * 2 * inter], &gu[r * 2 * inter + inter], inter, &want[r * inter]);
  }
  DeviceBuffer<float> dgu(gu);
  DeviceBuffer<uint16_t> out(want.size());
  ASSERT_TRUE(cuda::LaunchSiluMulBf16(dgu.get(), rows, inter, out.get(), nullptr).ok());
  EXPECT_LT(RelError(Widen(out.Download()), want), 5e-3);

  std::vector<float> x = Random(1000), y = Random(1000);
  DeviceBuffer<float> dx(x), dy(y);
  DeviceBuffer<uint16_t> narrow(x.size());
  ASSERT_TRUE(cuda::LaunchToBf16(dx.get(), 1000, narrow.get(), nullptr).ok());
  std::vector<uint16_t> bits = narrow.Download();
  for (size_t i = 0; i < x.size(); ++i) ASSERT_EQ(bits[i], FloatToBF16(x[i])) << i;
  // Strided rows (24 rows of 24 of every 40 floats) into packed BF16 rows.
  DeviceBuffer<uint16_t> packed(24 * 24);
  ASSERT_TRUE(cuda::LaunchToBf16Rows(dx.get(), 24, 24, 40, packed.get(), nullptr).ok());
  const std::vector<uint16_t> rows16 = packed.Download();
  for (int r = 0; r < 24; ++r) {
    for (int c = 0; c < 24; ++c) ASSERT_EQ(rows16[r * 24 + c], FloatToBF16(x[r * 40 + c])) << r << "," << c;
  }
  EXPECT_FALSE(cuda::LaunchToBf16Rows(dx.get(), 4, 24, 16, packed.get(), nullptr).ok());  // stride < cols
  ASSERT_TRUE(cuda::LaunchAdd(dy.get(), dx.get(), 1000, nullptr).ok());
  std::vector<float> sum = dy.Download();
  for (size_t i = 0; i < x.size(); ++i) ASSERT_EQ(sum[i], y[i] + x[i]) << i;
}

TEST_F(PrefillKernelsTest, EmbedRowsWidenExactlyWhatTheCpuWidens) {
  const int64_t vocab = 300, dim = 520;
  const std::vector<float> table = Random(static_cast<size_t>(vocab * dim));
  std::vector<uint16_t> table16(table.size());
  for (size_t i = 0; i < table.size(); ++i) table16[i] = FloatToBF16(table[i]);
  std::mt19937 rng(++seed_);
  std::vector<int32_t> ids(77);
  for (int32_t& id : ids) id = static_cast<int32_t>(rng() % vocab);
  ids[0] = 0, ids[1] = static_cast<int32_t>(vocab - 1);
  DeviceBuffer<int32_t> d_ids(ids);
  for (bool f32 : {false, true}) {
    SCOPED_TRACE(f32 ? "F32 table" : "BF16 table");
    const TensorView view = f32 ? TensorView{DType::kF32, {vocab, dim}, reinterpret_cast<const std::byte*>(table.data())}
                                : TensorView{DType::kBF16, {vocab, dim}, reinterpret_cast<const std::byte*>(table16.data())};
    std::vector<float> want(ids.size() * static_cast<size_t>(dim));
    for (size_t t = 0; t < ids.size(); ++t) ref::EmbeddingRow(view, ids[t], &want[t * static_cast<size_t>(dim)]);
    DeviceBuffer<float> t32(table);
    DeviceBuffer<uint16_t> t16(table16);
    DeviceBuffer<float> out(want.size());
    ASSERT_TRUE(cuda::LaunchEmbedRows(f32 ? static_cast<const void*>(t32.get()) : t16.get(), f32, d_ids.get(),
                                      static_cast<int64_t>(ids.size()), dim, out.get(), nullptr)
                    .ok());
    EXPECT_EQ(out.Download(), want);
  }
}

TEST_F(PrefillKernelsTest, CausalAttentionMatchesReference) {
  struct Case {
    int64_t heads, kv_heads, head_dim, v_dim, n, start_pos;
  };
  const Case cases[] = {
      {8, 2, 64, 64, 100, 0},     // GQA, a whole prompt
      {8, 2, 128, 128, 37, 50},   // a chunk after a cached prefix
      {16, 16, 192, 128, 70, 0},  // MLA expanded: qk 192, v 128
      {4, 1, 256, 256, 1, 300},   // one token, MQA, widest head
      {32, 4, 128, 128, 513, 0},  // several query tiles and key tiles
      {8, 8, 32, 32, 200, 30},    // the fixtures' GQA head size
      {16, 16, 192, 128, 300, 77},  // MLA, several tiles after a prefix not a multiple of a tile
      {4, 2, 40, 40, 20, 5},      // head size not a multiple of 16: the fp32 kernel either way
      {16, 2, 256, 256, 260, 70},  // Qwen3-Next's full attention: several tiles of 256-dim heads
      {16, 4, 192, 128, 700, 130},  // MLA shape with GQA: query tiles not whole, a prefix not a whole key tile
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(testing::Message() << "heads " << c.heads << "/" << c.kv_heads << " d " << c.head_dim << "/"
                                    << c.v_dim << " n " << c.n << " start " << c.start_pos);
    const int64_t positions = c.start_pos + c.n;
    // One row per position: keys [kv_heads, head_dim] then values [kv_heads, v_dim].
    const int64_t row = c.kv_heads * (c.head_dim + c.v_dim);
    std::vector<float> kv = Random(static_cast<size_t>(positions * row));
    std::vector<float> q = Random(static_cast<size_t>(c.n * c.heads * c.head_dim));
    const float scale = 1.0f / std::sqrt(static_cast<float>(c.head_dim));
    std::vector<float> want(static_cast<size_t>(c.n * c.heads * c.v_dim));
    AttentionArgs args;
    args.q = q.data();
    args.n = c.n;
    args.start_pos = c.start_pos;
    args.heads = c.heads;
    args.kv_heads = c.kv_heads;
    args.head_dim = c.head_dim;
    args.v_dim = c.v_dim;
    args.scale = scale;
    args.block_size = positions;
    args.slot_stride = row;
    args.k_offset = 0;
    args.v_offset = c.kv_heads * c.head_dim;
    args.block_row = [&](int64_t) { return reinterpret_cast<const std::byte*>(kv.data()); };
    args.out = want.data();
    ref::Attention(args);

    DeviceBuffer<float> dq(q), dkv(kv), out(want.size());
    cuda::AttentionShape s;
    s.n = c.n;
    s.start_pos = c.start_pos;
    s.heads = c.heads;
    s.kv_heads = c.kv_heads;
    s.head_dim = c.head_dim;
    s.v_dim = c.v_dim;
    s.k_stride = s.v_stride = row;
    s.scale = scale;
    s.exact = true;
    ASSERT_TRUE(cuda::LaunchCausalAttention(dq.get(), dkv.get(), dkv.get() + c.kv_heads * c.head_dim, s, out.get(),
                                            nullptr)
                    .ok());
    EXPECT_LT(RelError(out.Download(), want), 1e-5) << "fp32 kernel";
    // Tensor cores: BF16 inputs and probabilities, so BF16-sized errors.
    s.exact = false;
    ASSERT_TRUE(cuda::LaunchCausalAttention(dq.get(), dkv.get(), dkv.get() + c.kv_heads * c.head_dim, s, out.get(),
                                            nullptr)
                    .ok());
    const std::vector<float> tc_out = out.Download();
    const double tc = RelError(tc_out, want);
    EXPECT_LT(tc, 1e-2) << "tensor-core kernel";
    if (c.head_dim % 16 == 0) {
      EXPECT_GT(tc, 1e-5) << "the tensor-core kernel really ran";
    }
    // K and V handed over in BF16: exactly what the float path computes (it
    // rounds them to BF16 as it loads them).
    if (cuda::CausalAttentionTakesBf16Kv(s)) {
      std::vector<uint16_t> kv16(kv.size());
      for (size_t i = 0; i < kv.size(); ++i) kv16[i] = FloatToBF16(kv[i]);
      DeviceBuffer<uint16_t> dkv16(kv16);
      DeviceBuffer<float> out16(want.size());
      ASSERT_TRUE(cuda::LaunchCausalAttentionBf16Kv(dq.get(), dkv16.get(), dkv16.get() + c.kv_heads * c.head_dim, s,
                                                    out16.get(), nullptr)
                      .ok());
      EXPECT_EQ(out16.Download(), tc_out) << "BF16 K/V";
      // Written as BF16: each output the float one rounded.
      DeviceBuffer<uint16_t> out_bf16(want.size());
      ASSERT_TRUE(cuda::LaunchCausalAttentionBf16KvToBf16(dq.get(), dkv16.get(), dkv16.get() + c.kv_heads * c.head_dim,
                                                          s, out_bf16.get(), nullptr)
                      .ok());
      const std::vector<uint16_t> got_bf16 = out_bf16.Download();
      for (size_t i = 0; i < got_bf16.size(); ++i) ASSERT_EQ(got_bf16[i], FloatToBF16(tc_out[i])) << i;
    }
  }
  cuda::AttentionShape bad;
  bad.n = 1, bad.heads = 3, bad.kv_heads = 2, bad.head_dim = bad.v_dim = 64;
  EXPECT_EQ(cuda::LaunchCausalAttention(nullptr, nullptr, nullptr, bad, nullptr, nullptr).code(),
            absl::StatusCode::kInvalidArgument);
  bad.heads = 4;
  bad.head_dim = bad.v_dim = 40;  // no BF16-K/V instance
  EXPECT_EQ(cuda::LaunchCausalAttentionBf16Kv(nullptr, nullptr, nullptr, bad, nullptr, nullptr).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(cuda::LaunchCausalAttentionBf16KvToBf16(nullptr, nullptr, nullptr, bad, nullptr, nullptr).code(),
            absl::StatusCode::kInvalidArgument);
}

TEST_F(PrefillKernelsTest, MlaExpandSplitsKvbAndSharesTheRopedKey) {
  // DeepSeek's head dims (8 elements per thread), and dims that are not multiples of 8 (one per thread).
  for (auto [nope, rope, v_dim] : {std::tuple<int64_t, int64_t, int64_t>{128, 64, 128}, {12, 6, 10}}) {
  SCOPED_TRACE(testing::Message() << "nope " << nope << " rope " << rope << " v " << v_dim);
  const int64_t positions = 37, heads = 4, stride = 512 + 64;
  std::vector<float> kvb = Random(static_cast<size_t>(positions * heads * (nope + v_dim)));
  std::vector<float> store = Random(static_cast<size_t>(positions * stride));
  DeviceBuffer<float> dkvb(kvb), dstore(store), k(static_cast<size_t>(positions * heads * (nope + rope))),
      v(static_cast<size_t>(positions * heads * v_dim));
  ASSERT_TRUE(cuda::LaunchMlaExpandKv(dkvb.get(), dstore.get() + 512, stride, positions, heads, nope, rope, v_dim,
                                      k.get(), v.get(), nullptr)
                  .ok());
  std::vector<float> hk = k.Download(), hv = v.Download();
  for (int64_t p = 0; p < positions; ++p) {
    for (int64_t h = 0; h < heads; ++h) {
      const float* row = &kvb[(p * heads + h) * (nope + v_dim)];
      for (int64_t i = 0; i < nope; ++i) ASSERT_EQ(hk[(p * heads + h) * (nope + rope) + i], row[i]);
      for (int64_t i = 0; i < rope; ++i) ASSERT_EQ(hk[(p * heads + h) * (nope + rope) + nope + i], store[p * stride + 512 + i]);
      for (int64_t i = 0; i < v_dim; ++i) ASSERT_EQ(hv[(p * heads + h) * v_dim + i], row[nope + i]);
    }
  }
  // BF16 in and out: the float expansion of the BF16 kvb, rounded to BF16, bit for bit.
  std::vector<uint16_t> kvb16(kvb.size());
  for (size_t i = 0; i < kvb.size(); ++i) kvb16[i] = FloatToBF16(kvb[i]);
  std::vector<float> kvb_rounded(kvb.size());
  for (size_t i = 0; i < kvb.size(); ++i) kvb_rounded[i] = BF16ToFloat(kvb16[i]);
  DeviceBuffer<uint16_t> dkvb16(kvb16), k16(hk.size()), v16(hv.size());
  DeviceBuffer<float> dkvb_rounded(kvb_rounded);
  ASSERT_TRUE(cuda::LaunchMlaExpandKvBf16(dkvb16.get(), dstore.get() + 512, stride, positions, heads, nope, rope,
                                          v_dim, k16.get(), v16.get(), nullptr)
                  .ok());
  ASSERT_TRUE(cuda::LaunchMlaExpandKv(dkvb_rounded.get(), dstore.get() + 512, stride, positions, heads, nope, rope,
                                      v_dim, k.get(), v.get(), nullptr)
                  .ok());
  hk = k.Download(), hv = v.Download();
  const std::vector<uint16_t> gk = k16.Download(), gv = v16.Download();
  for (size_t i = 0; i < hk.size(); ++i) ASSERT_EQ(gk[i], FloatToBF16(hk[i])) << "k " << i;
  for (size_t i = 0; i < hv.size(); ++i) ASSERT_EQ(gv[i], FloatToBF16(hv[i])) << "v " << i;
  }
}

TEST_F(PrefillKernelsTest, RoutingMatchesReference) {
  struct Case {
    RouterKind kind;
    int64_t experts, top_k, n_group, topk_group;
    bool norm;
    float scaling;
  };
  const Case cases[] = {
      {RouterKind::kSoftmaxTopK, 128, 8, 1, 1, true, 1.0f},      // Qwen3-MoE
      {RouterKind::kSoftmaxTopK, 512, 10, 1, 1, true, 1.0f},     // Qwen3-Coder-Next
      {RouterKind::kSoftmaxTopK, 64, 6, 1, 1, false, 1.0f},      // DeepSeek-V2-Lite
      {RouterKind::kGroupLimited, 160, 6, 8, 3, false, 16.0f},   // DeepSeek-V2
      {RouterKind::kSigmoidNoAuxTc, 256, 8, 8, 4, true, 2.5f},   // DeepSeek-V3
      {RouterKind::kSigmoidNoAuxTc, 128, 8, 1, 1, true, 1.0f},   // GLM-4.5-Air
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(testing::Message() << "kind " << static_cast<int>(c.kind) << " experts " << c.experts);
    RouterParams p;
    p.kind = c.kind;
    p.num_experts = c.experts;
    p.top_k = c.top_k;
    p.n_group = c.n_group;
    p.topk_group = c.topk_group;
    p.norm_topk_prob = c.norm;
    p.routed_scaling = c.scaling;
    const int64_t n = 300;
    std::vector<float> logits = Random(static_cast<size_t>(n * c.experts), 2.0f);
    std::vector<float> bias = Random(static_cast<size_t>(c.experts), 0.1f);
    DeviceBuffer<float> dl(logits), db(bias), weights(static_cast<size_t>(n * c.top_k));
    DeviceBuffer<int32_t> ids(static_cast<size_t>(n * c.top_k));
    ASSERT_TRUE(cuda::LaunchRoute(dl.get(), n, p, db.get(), ids.get(), weights.get(), nullptr).ok());
    std::vector<int32_t> got_ids = ids.Download();
    std::vector<float> got_w = weights.Download();
    for (int64_t t = 0; t < n; ++t) {
      std::vector<int> want_ids;
      std::vector<float> want_w;
      ref::Route(p, &logits[t * c.experts], bias.data(), &want_ids, &want_w);
      for (int64_t j = 0; j < c.top_k; ++j) {
        ASSERT_EQ(got_ids[t * c.top_k + j], want_ids[j]) << "token " << t << " choice " << j;
        ASSERT_NEAR(got_w[t * c.top_k + j], want_w[j], 1e-5 * std::abs(want_w[j]) + 1e-7) << "token " << t;
      }
    }
  }
  RouterParams bad;
  bad.num_experts = 2000, bad.top_k = 4;
  EXPECT_EQ(cuda::LaunchRoute(nullptr, 1, bad, nullptr, nullptr, nullptr, nullptr).code(),
            absl::StatusCode::kInvalidArgument);
}

// Count, assign, gather, combine: the sorted batch holds every (token, expert)
// choice exactly once, in its expert's segment, and the combine is the
// weighted sum the CPU MoE computes.
TEST_F(PrefillKernelsTest, ExpertSortGatherCombineMatchReference) {
  const int64_t n = 333, top_k = 8, experts = 64, dim = 320;
  std::mt19937 rng(++seed_);
  // Skewed: low ids are popular, experts 48.. get nobody.
  std::vector<double> popularity(static_cast<size_t>(experts), 0.0);
  for (int64_t e = 0; e < 48; ++e) popularity[e] = 1.0 / (1.0 + static_cast<double>(e));
  std::discrete_distribution<int> pick(popularity.begin(), popularity.end());
  std::vector<int32_t> ids;
  for (int64_t t = 0; t < n; ++t) {
    std::vector<int32_t> chosen;
    while (static_cast<int64_t>(chosen.size()) < top_k) {
      const int32_t e = pick(rng);
      if (std::find(chosen.begin(), chosen.end(), e) == chosen.end()) chosen.push_back(e);
    }
    ids.insert(ids.end(), chosen.begin(), chosen.end());
  }
  const int64_t choices = n * top_k;
  DeviceBuffer<int32_t> dids(ids), counts(static_cast<size_t>(experts));
  ASSERT_EQ(cudaMemset(counts.get(), 0, sizeof(int32_t) * experts), cudaSuccess);
  ASSERT_TRUE(cuda::LaunchCountExperts(dids.get(), choices, experts, counts.get(), nullptr).ok());
  std::vector<int32_t> got_counts = counts.Download();
  std::vector<int32_t> want_counts(static_cast<size_t>(experts), 0), offsets(static_cast<size_t>(experts), 0);
  for (int32_t e : ids) ++want_counts[e];
  ASSERT_EQ(got_counts, want_counts);
  for (int64_t e = 1; e < experts; ++e) offsets[e] = offsets[e - 1] + want_counts[e - 1];

  DeviceBuffer<int32_t> cursor(offsets), row_of_choice(static_cast<size_t>(choices)), token_of_row(static_cast<size_t>(choices));
  ASSERT_TRUE(cuda::LaunchAssignRows(dids.get(), choices, top_k, cursor.get(), row_of_choice.get(), token_of_row.get(),
                                     nullptr)
                  .ok());
  std::vector<int32_t> roc = row_of_choice.Download(), tor = token_of_row.Download();
  std::vector<int> used(static_cast<size_t>(choices), 0);
  for (int64_t c = 0; c < choices; ++c) {
    const int32_t row = roc[c], e = ids[c];
    ASSERT_GE(row, offsets[e]);
    ASSERT_LT(row, offsets[e] + want_counts[e]);
    ASSERT_EQ(tor[row], c / top_k);
    ++used[row];
  }
  for (int u : used) ASSERT_EQ(u, 1);

  std::vector<float> x = Random(static_cast<size_t>(n * dim));
  DeviceBuffer<float> dx(x);
  DeviceBuffer<uint16_t> gathered(static_cast<size_t>(choices * dim));
  ASSERT_TRUE(cuda::LaunchGatherRowsBf16(dx.get(), token_of_row.get(), choices, dim, gathered.get(), nullptr).ok());
  std::vector<uint16_t> g = gathered.Download();
  for (int64_t r = 0; r < choices; r += 7) {
    for (int64_t d = 0; d < dim; ++d) ASSERT_EQ(g[r * dim + d], FloatToBF16(x[tor[r] * dim + d])) << r;
  }

  std::vector<float> y = Random(static_cast<size_t>(choices * dim)), w = Random(static_cast<size_t>(choices));
  std::vector<float> base = Random(static_cast<size_t>(n * dim)), want = base;
  for (int64_t t = 0; t < n; ++t) {
    for (int64_t j = 0; j < top_k; ++j) {
      const int32_t row = roc[t * top_k + j];
      for (int64_t d = 0; d < dim; ++d) want[t * dim + d] += w[t * top_k + j] * y[row * dim + d];
    }
  }
  DeviceBuffer<float> dy(y), dw(w), out(base);
  ASSERT_TRUE(cuda::LaunchCombineExperts(dy.get(), row_of_choice.get(), dw.get(), n, top_k, dim, out.get(), nullptr).ok());
  EXPECT_LT(RelError(out.Download(), want), 1e-6);

  // The plan on the card (LaunchGroupedGemmPlan) from the same counts: the
  // same offsets, and a cursor AssignRows can use.
  DeviceBuffer<uint8_t> plan(cuda::GroupedGemmPlanBytes(experts, choices));
  DeviceBuffer<int32_t> cursor2(static_cast<size_t>(experts));
  ASSERT_TRUE(cuda::LaunchGroupedGemmPlan(counts.get(), experts, plan.get(), cursor2.get(), nullptr).ok());
  std::vector<int32_t> plan_offsets(static_cast<size_t>(experts + 1));
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  ASSERT_EQ(cudaMemcpy(plan_offsets.data(), cuda::GroupedGemmPlanOffsets(plan.get()), plan_offsets.size() * 4,
                       cudaMemcpyDeviceToHost),
            cudaSuccess);
  std::vector<int32_t> want_offsets = offsets;
  want_offsets.push_back(static_cast<int32_t>(choices));
  EXPECT_EQ(plan_offsets, want_offsets);
  EXPECT_EQ(cursor2.Download(), offsets);
  EXPECT_FALSE(cuda::LaunchGroupedGemmPlan(counts.get(), 1025, plan.get(), nullptr, nullptr).ok());

  // One card's experts [8, 40): only their rows count (the others are another card's).
  const int64_t first = 8, end = 40;
  std::vector<float> want_span = base;
  for (int64_t t = 0; t < n; ++t) {
    for (int64_t j = 0; j < top_k; ++j) {
      const int32_t e = ids[t * top_k + j], row = roc[t * top_k + j];
      if (e < first || e >= end) continue;
      for (int64_t d = 0; d < dim; ++d) want_span[t * dim + d] += w[t * top_k + j] * y[row * dim + d];
    }
  }
  DeviceBuffer<float> out_span(base);
  ASSERT_TRUE(cuda::LaunchCombineExpertSpan(dy.get(), row_of_choice.get(), dw.get(), n, top_k, dim,
                                            cuda::GroupedGemmPlanOffsets(plan.get()), first, end, out_span.get(),
                                            nullptr)
                  .ok());
  EXPECT_LT(RelError(out_span.Download(), want_span), 1e-6);

  // SiLU-mul over the same experts' rows only: other rows keep what they held.
  const int64_t inter = 48;
  std::vector<float> gu = Random(static_cast<size_t>(choices * 2 * inter), 2.0f);
  DeviceBuffer<float> dgu(gu);
  const uint16_t untouched = 0x7FC1;
  DeviceBuffer<uint16_t> act(std::vector<uint16_t>(static_cast<size_t>(choices * inter), untouched));
  ASSERT_TRUE(cuda::LaunchSiluMulBf16Span(dgu.get(), inter, cuda::GroupedGemmPlanOffsets(plan.get()), first, end,
                                          choices, act.get(), nullptr)
                  .ok());
  std::vector<uint16_t> got_act = act.Download();
  std::vector<float> one(static_cast<size_t>(inter));
  for (int64_t r = 0; r < choices; ++r) {
    const bool inside = r >= offsets[first] && r < offsets[end];
    if (!inside) {
      for (int64_t i = 0; i < inter; ++i) ASSERT_EQ(got_act[r * inter + i], untouched) << r;
      continue;
    }
    ref::SiluMul(&gu[r * 2 * inter], &gu[r * 2 * inter + inter], inter, one.data());
    for (int64_t i = 0; i < inter; ++i) {
      ASSERT_NEAR(BF16ToFloat(got_act[r * inter + i]), one[i], 1e-2 * std::fabs(one[i]) + 1e-6) << r;
    }
  }
}

// The Gated DeltaNet kernels against a plain CPU rendering of
// models/blocks/gated_deltanet.cc's formulas (ref::L2Normalize, Softplus,
// Sigmoid, Silu), over two chunks -- the first shorter than the conv history --
// from a random state: conv output, gates, per-token outputs, both states after
// each chunk, and the gated norm. Shapes: the fixture's, Qwen3-Next's head dims
// (several warps per column), and 256-dim keys.
TEST_F(PrefillKernelsTest, GatedDeltaNetMatchesTheReference) {
  struct Case { int64_t nk, nv, dk, dv, kernel; };
  for (Case c : {Case{2, 4, 16, 16, 4}, Case{4, 8, 128, 128, 4}, Case{1, 2, 256, 64, 3}}) {
    cuda::GdnShape s;
    s.nk = c.nk, s.nv = c.nv, s.dk = c.dk, s.dv = c.dv, s.kernel = c.kernel;
    const int64_t conv_dim = s.conv_dim(), value_dim = c.nv * c.dv, hist = c.kernel - 1;
    const int64_t stride = conv_dim + value_dim + 2 * c.nv + 3;  // [mixed | z | b | a | pad]
    const int64_t total = 70;
    std::vector<float> proj = Random(static_cast<size_t>(total * stride));
    std::vector<float> conv_w = Random(static_cast<size_t>(conv_dim * c.kernel), 0.5f);
    std::vector<float> conv_b = Random(static_cast<size_t>(conv_dim), 0.1f);
    std::vector<float> dt_bias = Random(static_cast<size_t>(c.nv)), neg_a = Random(static_cast<size_t>(c.nv));
    for (float& a : neg_a) a = -std::exp(a * 0.5f);
    std::vector<float> norm_w = Random(static_cast<size_t>(c.dv), 0.2f);
    for (float& w : norm_w) w += 1.0f;
    std::vector<float> conv_state = Random(static_cast<size_t>(conv_dim * hist));
    std::vector<float> rec_state = Random(static_cast<size_t>(c.nv * c.dk * c.dv), 0.1f);

    DeviceBuffer<float> d_proj(proj), d_w(conv_w), d_b(conv_b), d_dt(dt_bias), d_na(neg_a), d_norm(norm_w);
    DeviceBuffer<float> d_conv(conv_state), d_rec(rec_state);
    DeviceBuffer<float> d_mixed(static_cast<size_t>(total * conv_dim)), d_gates(static_cast<size_t>(total * 2 * c.nv));
    DeviceBuffer<float> d_core(static_cast<size_t>(total * value_dim)), d_out(static_cast<size_t>(total * value_dim));
    DeviceBuffer<uint16_t> d_out16(static_cast<size_t>(total * value_dim));

    const float scale = 1.0f / std::sqrt(static_cast<float>(c.dk));
    for (auto [first, n] : {std::pair<int64_t, int64_t>{0, 2}, {2, total - 2}}) {
      s.n = n;
      s.stride = stride;
      const float* p = d_proj.get() + first * stride;
      ASSERT_TRUE(cuda::LaunchGdnConv(p, s, d_w.get(), d_b.get(), d_conv.get(), d_mixed.get(), nullptr).ok());
      ASSERT_TRUE(cuda::LaunchGdnPrepare(d_mixed.get(), p + conv_dim + value_dim, stride, s, d_dt.get(), d_na.get(),
                                         d_gates.get(), nullptr).ok());
      ASSERT_TRUE(cuda::LaunchGdnRecurrence(d_mixed.get(), d_gates.get(), s, d_rec.get(), d_core.get(), nullptr).ok());
      ASSERT_TRUE(cuda::LaunchGdnGatedNorm(d_core.get(), p + conv_dim, stride, s, d_norm.get(), 1e-6f, d_out.get(),
                                           d_out16.get(), nullptr).ok());
      // The reference, token by token.
      std::vector<float> mixed(static_cast<size_t>(n * conv_dim)), gates(static_cast<size_t>(n * 2 * c.nv));
      std::vector<float> core(static_cast<size_t>(n * value_dim)), out(core.size());
      for (int64_t t = 0; t < n; ++t) {
        const float* in = &proj[(first + t) * stride];
        float* m = &mixed[t * conv_dim];
        for (int64_t ch = 0; ch < conv_dim; ++ch) {
          float* st = &conv_state[ch * hist];
          float acc = conv_b[ch];
          for (int64_t j = 0; j < hist; ++j) acc += conv_w[ch * c.kernel + j] * st[j];
          acc += conv_w[ch * c.kernel + hist] * in[ch];
          for (int64_t j = 0; j + 1 < hist; ++j) st[j] = st[j + 1];
          if (hist > 0) st[hist - 1] = in[ch];
          m[ch] = ref::Silu(acc);
        }
        for (int64_t h = 0; h < c.nk; ++h) {
          ref::L2Normalize(m + h * c.dk, c.dk, 1e-6f);
          ref::L2Normalize(m + (c.nk + h) * c.dk, c.dk, 1e-6f);
          for (int64_t i = 0; i < c.dk; ++i) m[h * c.dk + i] *= scale;
        }
        for (int64_t h = 0; h < c.nv; ++h) {
          const float beta = ref::Sigmoid(in[conv_dim + value_dim + h]);
          const float decay = std::exp(neg_a[h] * ref::Softplus(in[conv_dim + value_dim + c.nv + h] + dt_bias[h]));
          gates[t * 2 * c.nv + h] = beta;
          gates[t * 2 * c.nv + c.nv + h] = decay;
          const float* q = m + (h / (c.nv / c.nk)) * c.dk;
          const float* k = m + (c.nk + h / (c.nv / c.nk)) * c.dk;
          const float* v = m + 2 * c.nk * c.dk + h * c.dv;
          float* S = &rec_state[h * c.dk * c.dv];
          std::vector<double> kv(static_cast<size_t>(c.dv), 0.0), o(static_cast<size_t>(c.dv), 0.0);
          for (int64_t i = 0; i < c.dk; ++i) {
            for (int64_t j = 0; j < c.dv; ++j) S[i * c.dv + j] *= decay, kv[j] += double(k[i]) * S[i * c.dv + j];
          }
          for (int64_t i = 0; i < c.dk; ++i) {
            for (int64_t j = 0; j < c.dv; ++j) {
              S[i * c.dv + j] += k[i] * static_cast<float>((v[j] - kv[j]) * beta);
              o[j] += double(q[i]) * S[i * c.dv + j];
            }
          }
          float* cr = &core[t * value_dim + h * c.dv];
          for (int64_t j = 0; j < c.dv; ++j) cr[j] = static_cast<float>(o[j]);
          double ss = 0;
          for (int64_t j = 0; j < c.dv; ++j) ss += double(cr[j]) * cr[j];
          const float inv = 1.0f / std::sqrt(static_cast<float>(ss / c.dv) + 1e-6f);
          for (int64_t j = 0; j < c.dv; ++j) {
            out[t * value_dim + h * c.dv + j] = cr[j] * inv * norm_w[j] * ref::Silu(in[conv_dim + h * c.dv + j]);
          }
        }
      }
      auto head = [&](std::vector<float> v, size_t count) { v.resize(count); return v; };
      const std::string where = "nk " + std::to_string(c.nk) + " dk " + std::to_string(c.dk) + " dv " +
                                std::to_string(c.dv) + ", chunk of " + std::to_string(n);
      EXPECT_LT(RelError(head(d_mixed.Download(), mixed.size()), mixed), 1e-5) << where << " (conv, q/k norm)";
      EXPECT_LT(RelError(head(d_gates.Download(), gates.size()), gates), 1e-5) << where << " (gates)";
      EXPECT_LT(RelError(head(d_core.Download(), core.size()), core), 1e-4) << where << " (delta rule)";
      EXPECT_LT(RelError(d_conv.Download(), conv_state), 1e-6) << where << " (conv state)";
      EXPECT_LT(RelError(d_rec.Download(), rec_state), 1e-4) << where << " (recurrent state)";
      const std::vector<float> got = head(d_out.Download(), out.size());
      EXPECT_LT(RelError(got, out), 1e-4) << where << " (gated norm)";
      const std::vector<float> got16 = head(Widen(d_out16.Download()), out.size());
      EXPECT_LT(RelError(got16, got), 4e-3) << where << " (gated norm, BF16)";
      EXPECT_GT(RelError(got16, got), 0.0) << where << " (BF16 output actually rounded)";
    }
  }
}

// The chunked (WY) delta rule against the reference's chunked form in double
// and the token-by-token kernel: lengths around a chunk (64) and across a piece
// (2048), a non-zero state carried from call to call, decays near 1, tiny and
// exactly 0, one and several key heads per value head.
TEST_F(PrefillKernelsTest, ChunkedGatedDeltaRuleMatchesTheRecurrenceAndTheReference) {
  std::mt19937 rng(seed_);
  for (GdnTestShape c : {GdnTestShape{2, 4, 16, 16}, GdnTestShape{4, 8, 128, 128}, GdnTestShape{1, 2, 256, 64},
                         GdnTestShape{2, 2, 64, 256}}) {
    cuda::GdnShape s;
    s.nk = c.nk, s.nv = c.nv, s.dk = c.dk, s.dv = c.dv, s.kernel = 4;
    const int64_t value_dim = c.nv * c.dv;
    const std::vector<int64_t> lengths = c.dk == 128 ? std::vector<int64_t>{1, 63, 64, 65, 300, 2148}
                                                      : std::vector<int64_t>{5, 64, 130};
    std::vector<float> state = Random(static_cast<size_t>(c.nv * c.dk * c.dv), 0.1f);
    DeviceBuffer<float> d_chunked(state), d_recurrent(state);
    for (int64_t n : lengths) {
      std::vector<float> mixed, gates;
      MakeGdnInputs(rng, c, n, mixed, gates);
      s.n = n;
      s.stride = c.conv_dim();
      DeviceBuffer<float> d_mixed(mixed), d_gates(gates);
      DeviceBuffer<float> d_core(static_cast<size_t>(n * value_dim)), d_core_rec(static_cast<size_t>(n * value_dim));
      DeviceBuffer<float> d_scratch(static_cast<size_t>(cuda::GdnChunkedScratchFloats(s)));
      ASSERT_TRUE(cuda::LaunchGdnChunked(d_mixed.get(), d_gates.get(), s, d_chunked.get(), d_core.get(),
                                         d_scratch.get(), nullptr).ok());
      ASSERT_TRUE(
          cuda::LaunchGdnRecurrence(d_mixed.get(), d_gates.get(), s, d_recurrent.get(), d_core_rec.get(), nullptr).ok());
      const std::vector<float> core = GdnReference(c, n, mixed, gates, state);
      const std::string where = "nk " + std::to_string(c.nk) + " nv " + std::to_string(c.nv) + " dk " +
                                std::to_string(c.dk) + " dv " + std::to_string(c.dv) + ", " + std::to_string(n) +
                                " tokens";
      const std::vector<float> got = d_core.Download();
      EXPECT_LT(RelError(got, core), 1e-4) << where << " (output vs reference)";
      EXPECT_LT(RelError(got, d_core_rec.Download()), 1e-4) << where << " (output vs token-by-token kernel)";
      const std::vector<float> got_state = d_chunked.Download();
      EXPECT_LT(RelError(got_state, state), 1e-4) << where << " (state vs reference)";
      EXPECT_LT(RelError(got_state, d_recurrent.Download()), 1e-4) << where << " (state vs token-by-token kernel)";
    }
  }
}

TEST_F(PrefillKernelsTest, SigmoidGateScalesByElementOrByRow) {
  const int64_t rows = 37, cols = 200, stride = 450;
  std::vector<float> y = Random(static_cast<size_t>(rows * cols)), gate = Random(static_cast<size_t>(rows * stride));
  for (bool per_row : {false, true}) {
    DeviceBuffer<float> d_y(y), d_gate(gate);
    ASSERT_TRUE(cuda::LaunchSigmoidGate(d_y.get(), rows, cols, d_gate.get(), stride, per_row, nullptr).ok());
    std::vector<float> want = y;
    for (int64_t r = 0; r < rows; ++r) {
      for (int64_t c = 0; c < cols; ++c) want[r * cols + c] *= ref::Sigmoid(gate[r * stride + (per_row ? 0 : c)]);
    }
    EXPECT_LT(RelError(d_y.Download(), want), 1e-6) << (per_row ? "per row" : "per element");
  }
}

}  // namespace
}  // namespace krasis
