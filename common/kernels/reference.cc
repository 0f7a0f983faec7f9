// Reference CPU kernels (see reference.h).
#include "common/kernels/reference.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

namespace krasis::ref {

namespace {
// Widens row `r` of a 2-D weight into `out`.
void WidenRow(const TensorView& w, int64_t r, int64_t cols, float* out) {
  const std::byte* base = w.data + static_cast<size_t>(r * cols) * DTypeSize(w.dtype);
  ConvertToFloat(w.dtype, base, out, static_cast<size_t>(cols));
}
}  // namespace

void MatMul(const float* x, int64_t n, const TensorView& w, float* y, const TensorView* bias) {
  const int64_t out = w.shape[0];
  const int64_t in = w.numel() / out;
  std::vector<float> row(static_cast<size_t>(in));
  std::vector<float> b;
  if (bias != nullptr && bias->data != nullptr) b = ToFloatVector(*bias);
  for (int64_t o = 0; o < out; ++o) {
    WidenRow(w, o, in, row.data());
    for (int64_t t = 0; t < n; ++t) {
      const float* xt = x + t * in;
      // Accumulate in double so the reference is no less accurate than torch's
      // blocked fp32 GEMM.
      double acc = 0.0;
      for (int64_t i = 0; i < in; ++i) acc += static_cast<double>(xt[i]) * row[i];
      if (!b.empty()) acc += b[o];
      y[t * out + o] = static_cast<float>(acc);
    }
  }
}

void HeadsMatMul(const float* x, int64_t n, int64_t heads, int64_t x_stride,
                 const std::function<TensorView(int64_t)>& w, float* y, int64_t y_stride) {
  std::vector<float> xh, yh;
  for (int64_t h = 0; h < heads; ++h) {
    const TensorView wh = w(h);
    const int64_t out = wh.shape[0], in = wh.numel() / out;
    xh.resize(static_cast<size_t>(n * in));
    yh.resize(static_cast<size_t>(n * out));
    for (int64_t i = 0; i < n; ++i) {
      const float* s = x + (i * heads + h) * x_stride;
      std::copy(s, s + in, &xh[static_cast<size_t>(i * in)]);
    }
    MatMul(xh.data(), n, wh, yh.data());
    for (int64_t i = 0; i < n; ++i) {
      std::copy(&yh[static_cast<size_t>(i * out)], &yh[static_cast<size_t>((i + 1) * out)],
                y + (i * heads + h) * y_stride);
    }
  }
}

void GatedDeltaChunked(const float* q, const float* k, const float* v, const float* beta, const float* decay,
                       int64_t n, int64_t dk, int64_t dv, int64_t chunk, float* s, float* o) {
  std::vector<double> S(s, s + dk * dv);
  chunk = std::max<int64_t>(chunk, 1);
  for (int64_t t0 = 0; t0 < n; t0 += chunk) {
    const int64_t c = std::min(chunk, n - t0);
    const float* qc = q + t0 * dk;
    const float* kc = k + t0 * dk;
    // lg[t]: log of the decays' product up to t (log 0 taken as -1000: e^-1000 is 0).
    std::vector<double> lg(static_cast<size_t>(c));
    double acc = 0.0;
    for (int64_t t = 0; t < c; ++t) {
      acc += std::max(std::log(static_cast<double>(decay[t0 + t])), -1000.0);
      lg[static_cast<size_t>(t)] = acc;
    }
    auto ratio = [&](int64_t t, int64_t i) { return std::exp(lg[static_cast<size_t>(t)] - lg[static_cast<size_t>(i)]); };
    auto dot = [&](const float* a, const float* b) {
      double d = 0.0;
      for (int64_t x = 0; x < dk; ++x) d += static_cast<double>(a[x]) * b[x];
      return d;
    };
    // X = (I + A)^-1 diag(beta) [V | diag(g) K] by forward substitution: [U | W].
    const int64_t width = dv + dk;
    std::vector<double> X(static_cast<size_t>(c * width));
    for (int64_t t = 0; t < c; ++t) {
      double* xt = &X[static_cast<size_t>(t * width)];
      const double b = beta[t0 + t], g = std::exp(lg[static_cast<size_t>(t)]);
      for (int64_t j = 0; j < dv; ++j) xt[j] = b * v[(t0 + t) * dv + j];
      for (int64_t x = 0; x < dk; ++x) xt[dv + x] = b * g * kc[t * dk + x];
      for (int64_t i = 0; i < t; ++i) {
        const double a = b * ratio(t, i) * dot(kc + t * dk, kc + i * dk);
        const double* xi = &X[static_cast<size_t>(i * width)];
        for (int64_t j = 0; j < width; ++j) xt[j] -= a * xi[j];
      }
    }
    // D = U - W S0.
    std::vector<double> D(static_cast<size_t>(c * dv));
    for (int64_t t = 0; t < c; ++t) {
      const double* xt = &X[static_cast<size_t>(t * width)];
      for (int64_t j = 0; j < dv; ++j) {
        double d = xt[j];
        for (int64_t x = 0; x < dk; ++x) d -= xt[dv + x] * S[static_cast<size_t>(x * dv + j)];
        D[static_cast<size_t>(t * dv + j)] = d;
      }
    }
    // O = diag(g) Q S0 + (M o Q K^T) D.
    for (int64_t t = 0; t < c; ++t) {
      const double g = std::exp(lg[static_cast<size_t>(t)]);
      float* ot = o + (t0 + t) * dv;
      std::vector<double> row(static_cast<size_t>(dv), 0.0);
      for (int64_t x = 0; x < dk; ++x) {
        const double qx = g * qc[t * dk + x];
        for (int64_t j = 0; j < dv; ++j) row[static_cast<size_t>(j)] += qx * S[static_cast<size_t>(x * dv + j)];
      }
      for (int64_t i = 0; i <= t; ++i) {
        const double w = ratio(t, i) * dot(qc + t * dk, kc + i * dk);
        for (int64_t j = 0; j < dv; ++j) row[static_cast<size_t>(j)] += w * D[static_cast<size_t>(i * dv + j)];
      }
      for (int64_t j = 0; j < dv; ++j) ot[j] = static_cast<float>(row[static_cast<size_t>(j)]);
    }
    // S = g_C S0 + K^T diag(g_C / g) D.
    const double g_end = std::exp(lg[static_cast<size_t>(c - 1)]);
    for (double& x : S) x *= g_end;
    for (int64_t i = 0; i < c; ++i) {
      const double r = ratio(c - 1, i);
      for (int64_t x = 0; x < dk; ++x) {
        const double kx = r * kc[i * dk + x];
        for (int64_t j = 0; j < dv; ++j) S[static_cast<size_t>(x * dv + j)] += kx * D[static_cast<size_t>(i * dv + j)];
      }
    }
  }
  for (int64_t i = 0; i < dk * dv; ++i) s[i] = static_cast<float>(S[static_cast<size_t>(i)]);
}

void Attention(const AttentionArgs& a) {
  const int64_t group = a.heads / a.kv_heads;
  const int64_t positions = a.start_pos + a.n;
  // Every cached row widened to float up front (the reference favours clarity).
  const int64_t row_elems = std::max(a.k_offset + a.kv_heads * a.head_dim, a.v_offset + a.kv_heads * a.v_dim);
  const size_t esize = DTypeSize(a.kv_dtype);
  std::vector<float> rows(static_cast<size_t>(positions * row_elems));
  for (int64_t p = 0; p < positions; ++p) {
    const std::byte* src = a.block_row(p / a.block_size) + (p % a.block_size) * a.slot_stride * esize;
    ConvertToFloat(a.kv_dtype, src, &rows[static_cast<size_t>(p * row_elems)], static_cast<size_t>(row_elems));
  }
  std::vector<float> scores(static_cast<size_t>(positions));
  std::vector<double> acc(static_cast<size_t>(a.v_dim));
  for (int64_t t = 0; t < a.n; ++t) {
    const int64_t last = a.start_pos + t;
    for (int64_t h = 0; h < a.heads; ++h) {
      const float* q = a.q + (t * a.heads + h) * a.head_dim;
      const int64_t kvh = h / group;
      for (int64_t p = 0; p <= last; ++p) {
        const float* k = &rows[static_cast<size_t>(p * row_elems + a.k_offset + kvh * a.head_dim)];
        double dot = 0.0;
        for (int64_t d = 0; d < a.head_dim; ++d) dot += static_cast<double>(q[d]) * k[d];
        scores[static_cast<size_t>(p)] = static_cast<float>(dot) * a.scale;
      }
      Softmax(scores.data(), last + 1);
      std::fill(acc.begin(), acc.end(), 0.0);
      for (int64_t p = 0; p <= last; ++p) {
        const float* v = &rows[static_cast<size_t>(p * row_elems + a.v_offset + kvh * a.v_dim)];
        for (int64_t d = 0; d < a.v_dim; ++d) acc[d] += static_cast<double>(scores[p]) * v[d];
      }
      float* o = a.out + (t * a.heads + h) * a.v_dim;
      for (int64_t d = 0; d < a.v_dim; ++d) o[d] = static_cast<float>(acc[d]);
    }
  }
}

void EmbeddingRow(const TensorView& table, int64_t row, float* out) {
  WidenRow(table, row, table.shape[1], out);
}

void RmsNorm(const float* x, int64_t rows, int64_t dim, const TensorView& weight, float eps,
             bool zero_centred, float* out) {
  std::vector<float> w = ToFloatVector(weight);
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = x + r * dim;
    double ss = 0.0;
    for (int64_t i = 0; i < dim; ++i) ss += static_cast<double>(xr[i]) * xr[i];
    float inv = 1.0f / std::sqrt(static_cast<float>(ss / dim) + eps);
    float* o = out + r * dim;
    for (int64_t i = 0; i < dim; ++i) {
      float scale = zero_centred ? 1.0f + w[i] : w[i];
      o[i] = xr[i] * inv * scale;
    }
  }
}

float Silu(float x) { return x / (1.0f + std::exp(-x)); }
float Sigmoid(float x) { return 1.0f / (1.0f + std::exp(-x)); }
float Softplus(float x) { return x > 20.0f ? x : std::log1p(std::exp(x)); }

void SiluMul(const float* gate, const float* up, int64_t n, float* out) {
  for (int64_t i = 0; i < n; ++i) out[i] = Silu(gate[i]) * up[i];
}

void Softmax(float* x, int64_t n) {
  float m = *std::max_element(x, x + n);
  double sum = 0.0;
  for (int64_t i = 0; i < n; ++i) {
    x[i] = std::exp(x[i] - m);
    sum += x[i];
  }
  for (int64_t i = 0; i < n; ++i) x[i] = static_cast<float>(x[i] / sum);
}

void L2Normalize(float* x, int64_t n, float eps) {
  double ss = 0.0;
  for (int64_t i = 0; i < n; ++i) ss += static_cast<double>(x[i]) * x[i];
  float inv = 1.0f / std::sqrt(static_cast<float>(ss) + eps);
  for (int64_t i = 0; i < n; ++i) x[i] *= inv;
}

std::vector<int> TopK(std::span<const float> values, int k) {
  std::vector<int> idx(values.size());
  std::iota(idx.begin(), idx.end(), 0);
  // Larger first, then the lower index: the first k of a stable descending sort.
  const size_t keep = static_cast<size_t>(std::clamp<int64_t>(k, 0, static_cast<int64_t>(idx.size())));
  std::partial_sort(idx.begin(), idx.begin() + keep, idx.end(), [&](int a, int b) {
    return values[a] > values[b] || (values[a] == values[b] && a < b);
  });
  idx.resize(keep);
  return idx;
}

}  // namespace krasis::ref
