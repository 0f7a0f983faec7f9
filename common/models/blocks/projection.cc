// Projections of attention-like blocks (see projection.h).
#include "common/models/blocks/projection.h"

#include <vector>

#include "common/kernels/cpu_ops.h"
#include "common/mapped_file.h"
#include "common/models/model.h"
#include "common/quant/quantize.h"
#include "common/status.h"

namespace krasis {

absl::Status Projection::Quantize(ExpertFormat format, int64_t group_size, NumaThreadPool* p, const char* name) {
  quantized.reset();
  if (format == ExpertFormat::kBf16) return absl::OkStatus();
  pool = p != nullptr ? p : &NumaThreadPool::Default();
  ASSIGN_OR_RETURN(quant::QuantizedMatrix m, quant::QuantizeMatrix(weight, ToQuantFormat(format), group_size, name));
  quantized = std::make_shared<const quant::QuantizedMatrix>(std::move(m));
  ReleaseMappedPages({weight.data, weight.nbytes()});  // the BF16 copy is no longer read
  return absl::OkStatus();
}

namespace {
void ApplyOne(const Projection& p, const Ops& ops, const float* x, int64_t n, float* y) {
  if (p.quantized == nullptr) {
    ops.MatMul(x, n, p.weight, y, p.bias.data != nullptr ? &p.bias : nullptr);
    return;
  }
  quant::PoolMatMul(*p.quantized, x, n, y, *p.pool);
  cpu::AddBias(p.bias, n, p.quantized->rows, y);
}
}  // namespace

void Projection::Apply(const Ops& ops, const float* x, int64_t n, float* y) const {
  ProfileScope scope(&ForwardProfile::proj_ns, &ForwardProfile::proj_bytes);
  ApplyOne(*this, ops, x, n, y);
}

void ApplyAll(const Ops& ops, std::span<const Projection* const> projections, const float* x, int64_t n,
              std::span<float* const> ys) {
  ProfileScope scope(&ForwardProfile::proj_ns, &ForwardProfile::proj_bytes);
  std::vector<const quant::QuantizedMatrix*> ws;
  std::vector<float*> outs;
  std::vector<size_t> batched;
  for (size_t i = 0; i < projections.size(); ++i) {
    const Projection& p = *projections[i];
    if (p.quantized != nullptr && (ws.empty() || p.quantized->group_size == ws[0]->group_size)) {
      ws.push_back(p.quantized.get());
      outs.push_back(ys[i]);
      batched.push_back(i);
    } else {
      ApplyOne(p, ops, x, n, ys[i]);
    }
  }
  if (ws.empty()) return;
  quant::PoolMatMulMany(ws, x, n, outs, *projections[batched[0]]->pool);
  for (size_t i : batched) cpu::AddBias(projections[i]->bias, n, projections[i]->quantized->rows, ys[i]);
}

}  // namespace krasis
