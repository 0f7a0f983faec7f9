// GPU weight placement under a VRAM budget (see gpu_placement.h).
#include "common/models/gpu_placement.h"

#include <algorithm>
#include <cctype>
#include <numeric>
#include <optional>

#include "absl/strings/str_format.h"
#include "common/status.h"

namespace krasis {

namespace {

double Gib(int64_t bytes) { return static_cast<double>(bytes) / (1 << 30); }

int64_t MatrixBytes(const TensorView& t) { return t.data == nullptr ? 0 : t.numel() * 2; }
int64_t VectorBytes(const TensorView& t) { return t.data == nullptr ? 0 : t.numel() * 4; }
int64_t MlpBytes(const MlpDesc& m) { return m.inter == 0 ? 0 : MatrixBytes(m.gate) + MatrixBytes(m.up) + MatrixBytes(m.down); }

// rank[i]: where layer i comes in the bit-reversal order of 0..n-1 (indices
// past n skipped), which visits the stack evenly at every prefix.
std::vector<size_t> SpreadRanks(size_t n) {
  int bits = 0;
  while ((size_t{1} << bits) < n) ++bits;
  std::vector<size_t> rank(n);
  size_t next = 0;
  for (size_t i = 0; i < (size_t{1} << bits); ++i) {
    size_t r = 0;
    for (int b = 0; b < bits; ++b) r |= ((i >> b) & 1) << (bits - 1 - b);
    if (r < n) rank[r] = next++;
  }
  return rank;
}

}  // namespace

int64_t ExpertPartBytes(int64_t experts, int64_t count, int parts) {
  if (parts <= 1 || count <= 1) return experts;
  const int64_t per_part = (count + parts - 1) / parts;
  constexpr int64_t kAlignmentRoom = int64_t{1} << 20;
  return std::min(experts, (experts + count - 1) / count * per_part + kAlignmentRoom);
}

absl::StatusOr<GpuPlacement> PlanGpuPlacement(const GpuPlacementInput& in, int parts) {
  GpuPlacement plan;
  const size_t n = in.layers.size();
  plan.experts_resident.assign(n, true);
  int64_t fixed = in.fixed_bytes, experts = 0, most_experts = 0;
  for (const GpuLayerBytes& l : in.layers) {
    fixed += l.resident;
    experts += l.experts;
    most_experts = std::max(most_experts, l.expert_count);
  }
  if (fixed + experts <= in.budget_bytes) {
    plan.all_resident = true;
    plan.device_bytes = fixed + experts;
    return plan;
  }
  // Largest first; among equals in an order that spreads the chosen ones over
  // the stack (bit-reversed index: 0, n/2, n/4, 3n/4, ...), so the streamed
  // layers alternate with resident ones and each copy overlaps resident compute.
  std::vector<size_t> order(n);
  std::iota(order.begin(), order.end(), size_t{0});
  const std::vector<size_t> spread = SpreadRanks(n);
  std::sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    if (in.layers[a].experts != in.layers[b].experts) return in.layers[a].experts > in.layers[b].experts;
    return spread[a] < spread[b];
  });
  // Streaming: buffers as large as the largest part of a layer's experts.
  std::optional<GpuPlacement> best;
  int64_t smallest_buffers = 0;
  // At most kMaxParts parts: each costs its launches, and small groups of experts fill the card less.
  constexpr int kMaxParts = 8;
  const int64_t most_parts = std::min<int64_t>(kMaxParts, std::max<int64_t>(most_experts, 1));
  for (int p = parts > 0 ? parts : 1; p == parts || (parts <= 0 && p <= most_parts); p *= 2) {
    int64_t largest = 0;
    for (const GpuLayerBytes& l : in.layers) largest = std::max(largest, ExpertPartBytes(l.experts, l.expert_count, p));
    // Two buffers of whole layers; parts + 1 buffers of parts (a layer's parts
    // load while the part before them computes).
    const int64_t buffers = (p <= 1 ? 2 : p + 1) * largest;
    smallest_buffers = smallest_buffers == 0 ? buffers : std::min(smallest_buffers, buffers);
    if (fixed + buffers <= in.budget_bytes) {
      GpuPlacement candidate;
      candidate.experts_resident.assign(n, true);
      int64_t room = in.budget_bytes - fixed - buffers;
      for (size_t l : order) {
        if (in.layers[l].experts == 0) continue;
        if (in.layers[l].experts <= room) {
          room -= in.layers[l].experts;
        } else {
          candidate.experts_resident[l] = false;
          candidate.streamed_bytes += in.layers[l].experts;
        }
      }
      candidate.stream_buffer_bytes = largest;
      candidate.stream_buffers = p <= 1 ? 2 : p + 1;
      candidate.stream_parts = p;
      candidate.device_bytes = in.budget_bytes - room;
      if (!best || candidate.streamed_bytes < best->streamed_bytes) best = std::move(candidate);
    }
    if (p == parts) break;
  }
  if (!best) {
    return absl::ResourceExhaustedError(StrCat(
        "the VRAM budget of ", absl::StrFormat("%.2f", Gib(in.budget_bytes)), " GiB is too small: the non-expert weights, "
        "KV and workspace need ", absl::StrFormat("%.2f", Gib(fixed)), " GiB and two buffers for streaming experts ",
        absl::StrFormat("%.2f", Gib(smallest_buffers)), " GiB more"));
  }
  return *best;
}

std::vector<GpuLayerBytes> GpuLayerSizes(const DecoderModel& model) {
  std::vector<GpuLayerBytes> out;
  for (const DecoderLayer& layer : model.layers) {
    GpuLayerBytes b;
    b.resident = VectorBytes(layer.input_norm) + VectorBytes(layer.post_norm);
    if (auto m = layer.mixer->Describe()) {
      if (m->kind == MixerDesc::Kind::kGqa) {
        const GqaDesc& g = m->gqa;
        b.resident += MatrixBytes(g.q) + MatrixBytes(g.k) + MatrixBytes(g.v) + MatrixBytes(g.o) +
                      VectorBytes(g.q_bias) + VectorBytes(g.k_bias) + VectorBytes(g.v_bias) + VectorBytes(g.q_norm) +
                      VectorBytes(g.k_norm);
      } else if (m->kind == MixerDesc::Kind::kMla) {
        const MlaDesc& d = m->mla;
        b.resident += MatrixBytes(d.q) + MatrixBytes(d.q_a) + MatrixBytes(d.q_b) + MatrixBytes(d.kv_a) +
                      MatrixBytes(d.kv_b) + MatrixBytes(d.o) + VectorBytes(d.q_a_norm) + VectorBytes(d.kv_a_norm) +
                      VectorBytes(d.q_a_bias) + VectorBytes(d.kv_a_bias) + VectorBytes(d.o_bias);
      } else if (m->kind == MixerDesc::Kind::kGatedDeltaNet) {
        const GdnDesc& d = m->gdn;
        b.resident += MatrixBytes(d.in_qkvz) + MatrixBytes(d.in_ba) + MatrixBytes(d.out) + VectorBytes(d.norm) +
                      static_cast<int64_t>(d.conv_weight.size() + d.conv_bias.size() + d.dt_bias.size() +
                                           d.neg_a.size()) * 4 +
                      d.nv * d.dk * d.dv * 4;  // the recurrent state on the card
      }
    }
    if (auto f = layer.ffn->Describe()) {
      if (f->kind == FfnDesc::Kind::kDense) {
        b.resident += MlpBytes(f->dense);
      } else {
        b.resident += VectorBytes(f->router_weight) + MlpBytes(f->shared) + VectorBytes(f->shared_gate) +
                      static_cast<int64_t>(f->correction_bias.size()) * 4;
        for (const MlpDesc& e : f->experts) b.experts += MlpBytes(e);
      }
    }
    out.push_back(b);
  }
  return out;
}

absl::StatusOr<int64_t> ParseByteSize(const std::string& text, const std::string& flag) {
  auto bad = [&] {
    return InvalidArgumentError(flag, " ", text, ": expected a size such as 24G, 16000M or 1073741824");
  };
  size_t i = 0;
  while (i < text.size() && std::isdigit(static_cast<unsigned char>(text[i]))) ++i;
  if (i == 0 || i > 18) return bad();
  int64_t value = std::stoll(text.substr(0, i));
  std::string unit = text.substr(i);
  for (char& c : unit) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  if (unit.ends_with("IB")) unit.resize(unit.size() - 2);
  else if (unit.ends_with("B")) unit.resize(unit.size() - 1);
  int shift = 0;
  if (unit == "K") shift = 10;
  else if (unit == "M") shift = 20;
  else if (unit == "G") shift = 30;
  else if (unit == "T") shift = 40;
  else if (!unit.empty()) return bad();
  if (value > (INT64_MAX >> shift)) return bad();
  return value << shift;
}

absl::StatusOr<std::vector<int>> ParseDeviceList(const std::string& text, const std::string& flag) {
  std::vector<int> out;
  size_t at = 0;
  while (true) {
    const size_t end = std::min(text.find(',', at), text.size());
    const std::string item = text.substr(at, end - at);
    if (item.empty() || item.size() > 4 ||
        !std::all_of(item.begin(), item.end(), [](char c) { return std::isdigit(static_cast<unsigned char>(c)); })) {
      return InvalidArgumentError(flag, " ", text, ": expected CUDA device indices such as 0,1");
    }
    const int d = std::stoi(item);
    if (std::find(out.begin(), out.end(), d) != out.end()) {
      return InvalidArgumentError(flag, " ", text, ": device ", d, " is listed twice");
    }
    out.push_back(d);
    if (end == text.size()) break;
    at = end + 1;
  }
  return out;
}

}  // namespace krasis
