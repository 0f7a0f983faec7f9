// Routed experts on the card: resident or streamed (see expert_store.h).
#include "common/cuda/expert_store.h"

#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cstring>
#include <map>
#include <mutex>
#include <utility>

#include "common/logging.h"
#include "common/quant/expert_set.h"
#include "common/status.h"

namespace krasis::cuda {
namespace {

// Host ranges closer than this merge (copying a small gap beats another copy).
constexpr size_t kMergeGap = size_t{64} << 10;
// kRing: pinned slots and the threads that fill each.
constexpr int kRingSlots = 4;
constexpr size_t kSlotBytes = size_t{32} << 20;
constexpr size_t kCopyPiece = size_t{64} << 20;  // largest single copy of a streamed layer
constexpr int kCopyThreads = 8;

// Host pages pinned with cudaHostRegister, shared by every ExpertStore of the
// process: the stores of several cards (each streaming its share of a layer's
// experts) may pin neighbouring ranges that meet inside one page, and a page
// can be registered only once. Spans never overlap; each counts its users.
struct PinnedSpan {
  uintptr_t end = 0;
  int users = 0;
};
std::mutex pin_mu;
std::map<uintptr_t, PinnedSpan> pinned;  // by start

void UnpinLocked(const std::vector<uintptr_t>& held) {
  for (uintptr_t key : held) {
    auto it = pinned.find(key);
    if (it == pinned.end() || --it->second.users > 0) continue;
    cudaHostUnregister(reinterpret_cast<void*>(key));
    pinned.erase(it);
  }
}

// Pins the pages [b, e): registers what no store has pinned yet and counts a
// use of each span it covers; `held` gets their starts.
absl::Status PinPages(uintptr_t b, uintptr_t e, std::vector<uintptr_t>* held) {
  std::lock_guard<std::mutex> lock(pin_mu);
  std::vector<uintptr_t> taken;
  uintptr_t at = b;
  auto it = pinned.upper_bound(at);
  if (it != pinned.begin() && std::prev(it)->second.end > at) {
    auto prev = std::prev(it);
    ++prev->second.users;
    taken.push_back(prev->first);
    at = prev->second.end;
  }
  while (at < e) {
    it = pinned.lower_bound(at);
    if (it != pinned.end() && it->first == at) {
      ++it->second.users;
      taken.push_back(at);
      at = it->second.end;
      continue;
    }
    const uintptr_t gap_end = it == pinned.end() ? e : std::min(e, it->first);
    const cudaError_t err =
        cudaHostRegister(reinterpret_cast<void*>(at), gap_end - at, cudaHostRegisterPortable | cudaHostRegisterReadOnly);
    if (err != cudaSuccess) {
      cudaGetLastError();  // clear it
      UnpinLocked(taken);
      return InternalError("cudaHostRegister of ", gap_end - at, " bytes: ", cudaGetErrorString(err));
    }
    pinned[at] = {gap_end, 1};
    taken.push_back(at);
    at = gap_end;
  }
  held->insert(held->end(), taken.begin(), taken.end());
  return absl::OkStatus();
}

// Where the spans in `held` start and end, sorted: a copy must not cross one
// (the driver rejects a source that runs from one registration into another).
std::vector<uintptr_t> SpanBounds(const std::vector<uintptr_t>& held) {
  std::lock_guard<std::mutex> lock(pin_mu);
  std::vector<uintptr_t> out;
  for (uintptr_t key : held) {
    auto it = pinned.find(key);
    if (it == pinned.end()) continue;
    out.push_back(key);
    out.push_back(it->second.end);
  }
  std::sort(out.begin(), out.end());
  out.erase(std::unique(out.begin(), out.end()), out.end());
  return out;
}

void UnpinPages(const std::vector<uintptr_t>& held) {
  std::lock_guard<std::mutex> lock(pin_mu);
  UnpinLocked(held);
}

}  // namespace

const char* PinningName(Pinning p) { return p == Pinning::kRegister ? "register" : "ring"; }

namespace {

// Lays out the experts [out.first, out.end) of `out` on the card (the others
// get no bytes): every matrix, by host address, coalesced into ranges laid end
// to end, each keeping its host address modulo 256 (alignment carries over).
void LayRanges(ExpertLayout& out) {
  struct Part {
    const char* host;
    size_t bytes;
    size_t* offset;
  };
  const int64_t count = static_cast<int64_t>(out.experts.size());
  out.ranges.clear();
  std::vector<Part> parts;
  for (int64_t i = 0; i < count; ++i) {
    if (i < out.first || i >= out.end) {
      for (StoredMatrix& m : out.experts[static_cast<size_t>(i)]) m.host = nullptr, m.bytes = 0, m.host_scales = nullptr, m.scale_bytes = 0;
      continue;
    }
    for (StoredMatrix& m : out.experts[static_cast<size_t>(i)]) {
      parts.push_back({static_cast<const char*>(m.host), m.bytes, &m.offset});
      if (m.quant != 0) parts.push_back({reinterpret_cast<const char*>(m.host_scales), m.scale_bytes, &m.scales_offset});
    }
  }
  std::sort(parts.begin(), parts.end(), [](const Part& a, const Part& b) { return a.host < b.host; });
  size_t at = 0;
  for (size_t i = 0; i < parts.size();) {
    const char* begin = parts[i].host;
    const char* end = begin + parts[i].bytes;
    size_t j = i + 1;
    while (j < parts.size() && parts[j].host <= end + kMergeGap) {
      end = std::max(end, parts[j].host + parts[j].bytes);
      ++j;
    }
    // Keep the host address modulo 256 (alignment carries over).
    const size_t mod = reinterpret_cast<uintptr_t>(begin) % 256;
    const size_t offset = (at + 255) / 256 * 256 + mod;
    out.ranges.push_back({begin, static_cast<size_t>(end - begin), offset});
    for (size_t k = i; k < j; ++k) *parts[k].offset = offset + static_cast<size_t>(parts[k].host - begin);
    at = offset + static_cast<size_t>(end - begin);
    i = j;
  }
  out.bytes = at;
}

}  // namespace

absl::StatusOr<ExpertLayout> LayoutExperts(const FfnDesc& ffn, int64_t hidden, int share, int shares) {
  if (shares < 1 || share < 0 || share >= shares) {
    return InvalidArgumentError("LayoutExperts: share ", share, " of ", shares);
  }
  ExpertLayout out;
  out.hidden = hidden;
  if (ffn.quantized != nullptr) {
    for (const quant::QuantExpert& q : ffn.quantized->experts()) {
      std::array<StoredMatrix, 3> e;
      const quant::QuantizedMatrix* ms[3] = {&q.gate, &q.up, &q.down};
      for (int k = 0; k < 3; ++k) {
        const quant::QuantizedMatrix& m = *ms[k];
        e[k].rows = m.rows;
        e[k].cols = m.cols;
        e[k].quant = static_cast<int>(m.format);
        e[k].group = m.group_size;
        e[k].host = m.data;
        e[k].bytes = m.data_bytes();
        e[k].host_scales = m.scales;
        e[k].scale_bytes = m.scale_count() * sizeof(float);
      }
      out.inter = q.gate.rows;
      out.format = std::string(quant::QuantFormatName(q.gate.format));
      out.experts.push_back(e);
    }
  } else {
    for (const MlpDesc& d : ffn.experts) {
      std::array<StoredMatrix, 3> e;
      const TensorView* vs[3] = {&d.gate, &d.up, &d.down};
      for (int k = 0; k < 3; ++k) {
        const TensorView& v = *vs[k];
        if (v.dtype != DType::kBF16 && v.dtype != DType::kF16 && v.dtype != DType::kF32) {
          return InvalidArgumentError("routed expert matrices stored as ", DTypeName(v.dtype),
                                      " cannot go to the GPU as stored (BF16, F16 or F32 expected)");
        }
        e[k].rows = v.dim(0);
        e[k].cols = v.dim(1);
        e[k].dtype = v.dtype;
        e[k].host = v.data;
        e[k].bytes = v.nbytes();
      }
      out.inter = d.inter;
      out.format = std::string(DTypeName(d.gate.dtype));
      for (char& c : out.format) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
      out.experts.push_back(e);
    }
  }
  const int64_t count = static_cast<int64_t>(out.experts.size());
  out.first = share * count / shares;
  out.end = (share + 1) * count / shares;
  LayRanges(out);
  return out;
}

std::vector<ExpertLayout> SplitLayout(const ExpertLayout& layout, int parts) {
  const int64_t count = layout.end - layout.first;
  parts = static_cast<int>(std::clamp<int64_t>(parts, 1, std::max<int64_t>(count, 1)));
  std::vector<ExpertLayout> out;
  for (int p = 0; p < parts; ++p) {
    ExpertLayout part = layout;
    part.first = layout.first + p * count / parts;
    part.end = layout.first + (p + 1) * count / parts;
    LayRanges(part);
    out.push_back(std::move(part));
  }
  return out;
}

ExpertStore::~ExpertStore() {
  if (ring_thread_.joinable()) {
    {
      std::lock_guard<std::mutex> lock(ring_mu_);
      ring_stop_ = true;
    }
    ring_cv_.notify_all();
    ring_thread_.join();
  }
  if (copy_stream_ != nullptr) {
    cudaStreamSynchronize(copy_stream_);
    cudaStreamDestroy(copy_stream_);
  }
  for (const std::vector<cudaEvent_t>* events : {&copied_, &consumed_}) {
    for (cudaEvent_t e : *events) {
      if (e != nullptr) cudaEventDestroy(e);
    }
  }
  for (cudaEvent_t e : slot_free_) cudaEventDestroy(e);
  UnpinPages(registered_);
}

size_t ExpertStore::streamed_bytes() const {
  size_t n = 0;
  for (size_t u = 0; u < order_.size(); ++u) n += Unit(u).bytes;
  return n;
}

absl::Status ExpertStore::Init(std::vector<ExpertLayout> layouts, const std::vector<bool>& resident,
                               Pinning pinning, int stream_parts) {
  layouts_ = std::move(layouts);
  pinning_ = pinning;
  position_.assign(layouts_.size(), -1);
  resident_.resize(layouts_.size());
  parts_.resize(layouts_.size());
  for (size_t l = 0; l < layouts_.size(); ++l) {
    const ExpertLayout& L = layouts_[l];
    if (L.experts.empty() || resident[l]) {
      parts_[l] = {L};
    } else {
      parts_[l] = SplitLayout(L, stream_parts);
    }
    if (L.experts.empty()) continue;
    if (!resident[l]) {
      position_[l] = static_cast<int>(order_.size());
      ++streamed_layers_;
      for (size_t p = 0; p < parts_[l].size(); ++p) {
        order_.emplace_back(l, static_cast<int>(p));
        stage_bytes_ = std::max(stage_bytes_, parts_[l][p].bytes);
      }
      continue;
    }
    RETURN_IF_ERROR(resident_[l].Reserve(L.bytes));
    for (const HostRange& r : L.ranges) {
      CUDA_RETURN_IF_ERROR(cudaMemcpy(resident_[l].as<char>() + r.offset, r.host, r.bytes, cudaMemcpyHostToDevice));
    }
  }
  if (order_.empty()) return absl::OkStatus();
  CUDA_RETURN_IF_ERROR(cudaStreamCreateWithFlags(&copy_stream_, cudaStreamNonBlocking));
  const int stages = StagesFor(stream_parts);
  stage_.resize(static_cast<size_t>(stages));
  copied_.assign(static_cast<size_t>(stages), nullptr);
  consumed_.assign(static_cast<size_t>(stages), nullptr);
  stage_holds_.assign(static_cast<size_t>(stages), -1);
  for (size_t s = 0; s < stage_.size(); ++s) {
    CUDA_RETURN_IF_ERROR(cudaEventCreateWithFlags(&copied_[s], cudaEventDisableTiming));
    CUDA_RETURN_IF_ERROR(cudaEventCreateWithFlags(&consumed_[s], cudaEventDisableTiming));
    RETURN_IF_ERROR(stage_[s].Reserve(stage_bytes_));
  }
  if (pinning_ == Pinning::kRegister) {
    absl::Status s = RegisterRanges();
    if (!s.ok()) {
      KLOG_WARN("cannot pin the streamed experts in place ({}); streaming through pinned buffers instead",
                std::string(s.message()));
      pinning_ = Pinning::kRing;
    }
  }
  if (pinning_ == Pinning::kRing) {
    for (int k = 0; k < kRingSlots; ++k) {
      slots_.push_back(std::make_unique<PinnedMemory>());
      RETURN_IF_ERROR(slots_.back()->Reserve(kSlotBytes));
      cudaEvent_t e = nullptr;
      CUDA_RETURN_IF_ERROR(cudaEventCreateWithFlags(&e, cudaEventDisableTiming));
      slot_free_.push_back(e);
    }
    int device = 0;
    CUDA_RETURN_IF_ERROR(cudaGetDevice(&device));
    ring_thread_ = std::thread([this, device] {
      cudaSetDevice(device);
      RingLoop();
    });
  }
  return absl::OkStatus();
}

absl::Status ExpertStore::RegisterRanges() {
  const uintptr_t page = static_cast<uintptr_t>(sysconf(_SC_PAGESIZE));
  std::vector<std::pair<uintptr_t, uintptr_t>> spans;
  for (size_t u = 0; u < order_.size(); ++u) {
    for (const HostRange& r : Unit(u).ranges) {
      const uintptr_t b = reinterpret_cast<uintptr_t>(r.host) / page * page;
      const uintptr_t e = (reinterpret_cast<uintptr_t>(r.host) + r.bytes + page - 1) / page * page;
      spans.emplace_back(b, e);
    }
  }
  std::sort(spans.begin(), spans.end());
  std::vector<std::pair<uintptr_t, uintptr_t>> merged;
  for (auto [b, e] : spans) {
    if (!merged.empty() && b <= merged.back().second) {
      merged.back().second = std::max(merged.back().second, e);
    } else {
      merged.emplace_back(b, e);
    }
  }
  for (auto [b, e] : merged) {
    absl::Status s = PinPages(b, e, &registered_);
    if (!s.ok()) {
      UnpinPages(registered_);
      registered_.clear();
      return s;
    }
  }
  span_bounds_ = SpanBounds(registered_);
  return absl::OkStatus();
}

absl::Status ExpertStore::Issue(uint64_t use) {
  const int stage = static_cast<int>(use % stage_.size());
  const size_t unit = static_cast<size_t>(use % order_.size());
  const bool held = stage_holds_[stage] == static_cast<int64_t>(unit);
  stage_holds_[stage] = static_cast<int64_t>(unit);
  if (pinning_ == Pinning::kRing) {
    {
      std::lock_guard<std::mutex> lock(ring_mu_);
      jobs_.push_back({use, stage, held ? -1 : static_cast<int64_t>(unit)});
    }
    ring_cv_.notify_all();
    return absl::OkStatus();
  }
  return held ? absl::OkStatus() : CopyUnit(stage, unit);
}

absl::Status ExpertStore::CopyUnit(int stage, size_t unit) {
  CUDA_RETURN_IF_ERROR(cudaStreamWaitEvent(copy_stream_, consumed_[stage], 0));
  for (const HostRange& r : Unit(unit).ranges) {
    // In pieces that each stay inside one pinned span (another card's store may
    // have pinned the pages where this range begins or ends).
    const uintptr_t begin = reinterpret_cast<uintptr_t>(r.host), end = begin + r.bytes;
    auto cut = std::upper_bound(span_bounds_.begin(), span_bounds_.end(), begin);
    for (uintptr_t at = begin; at < end;) {
      uintptr_t next = cut != span_bounds_.end() && *cut < end ? *cut : end;
      // At most kCopyPiece at a time: the copy engine takes other streams'
      // small copies (token ids, state) between pieces instead of after the layer.
      if (next - at > kCopyPiece) {
        next = at + kCopyPiece;
      } else if (next != end) {
        ++cut;
      }
      CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(stage_[stage].as<char>() + r.offset + (at - begin),
                                           reinterpret_cast<const void*>(at), next - at, cudaMemcpyHostToDevice,
                                           copy_stream_));
      at = next;
    }
  }
  CUDA_RETURN_IF_ERROR(cudaEventRecord(copied_[stage], copy_stream_));
  return absl::OkStatus();
}

void ExpertStore::RingLoop() {
  for (;;) {
    Job job;
    {
      std::unique_lock<std::mutex> lock(ring_mu_);
      ring_cv_.wait(lock, [&] { return ring_stop_ || !jobs_.empty(); });
      if (ring_stop_) return;
      job = jobs_.front();
      jobs_.pop_front();
    }
    absl::Status s = job.unit < 0 ? absl::OkStatus() : RingCopy(job.stage, static_cast<size_t>(job.unit));
    {
      std::lock_guard<std::mutex> lock(ring_mu_);
      if (!s.ok() && ring_error_.ok()) ring_error_ = s;
      ring_done_ = job.use + 1;
    }
    ring_cv_.notify_all();
  }
}

absl::Status ExpertStore::RingCopy(int stage, size_t unit) {
  CUDA_RETURN_IF_ERROR(cudaStreamWaitEvent(copy_stream_, consumed_[stage], 0));
  static thread_local size_t next_slot = 0;
  for (const HostRange& r : Unit(unit).ranges) {
    for (size_t off = 0; off < r.bytes; off += kSlotBytes) {
      const size_t n = std::min(kSlotBytes, r.bytes - off);
      const size_t k = next_slot++ % slots_.size();
      CUDA_RETURN_IF_ERROR(cudaEventSynchronize(slot_free_[k]));
      char* slot = slots_[k]->as<char>();
      // memcpy into the slot split over a few threads (one core does not reach PCIe speed).
      const size_t per = (n / kCopyThreads + 63) / 64 * 64;
      std::vector<std::thread> threads;
      for (size_t at = per; at < n; at += per) {
        threads.emplace_back([=] { std::memcpy(slot + at, r.host + off + at, std::min(per, n - at)); });
      }
      std::memcpy(slot, r.host + off, std::min(per, n));
      for (std::thread& t : threads) t.join();
      CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(stage_[stage].as<char>() + r.offset + off, slot, n, cudaMemcpyHostToDevice,
                                           copy_stream_));
      CUDA_RETURN_IF_ERROR(cudaEventRecord(slot_free_[k], copy_stream_));
    }
  }
  CUDA_RETURN_IF_ERROR(cudaEventRecord(copied_[stage], copy_stream_));
  return absl::OkStatus();
}

absl::Status ExpertStore::Drain() {
  if (pinning_ == Pinning::kRing) {
    std::unique_lock<std::mutex> lock(ring_mu_);
    ring_cv_.wait(lock, [&] { return ring_done_ >= issued_; });
    RETURN_IF_ERROR(ring_error_);
  }
  CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(copy_stream_));
  return absl::OkStatus();
}

absl::Status ExpertStore::Prefetch() {
  if (order_.empty()) return absl::OkStatus();
  while (issued_ < next_use_ + stage_.size()) RETURN_IF_ERROR(Issue(issued_++));
  return absl::OkStatus();
}

absl::StatusOr<const char*> ExpertStore::Acquire(size_t layer, int p, cudaStream_t stream) {
  const int pos = position_[layer];
  if (pos < 0) return resident_[layer].as<const char>();
  const uint64_t count = order_.size(), unit = static_cast<uint64_t>(pos + p);
  if (next_use_ % count != unit) {
    // A pass stopped part way (an error): start over from this part.
    RETURN_IF_ERROR(Drain());
    CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream));
    std::fill(stage_holds_.begin(), stage_holds_.end(), -1);
    next_use_ += (unit + count - next_use_ % count) % count;
    issued_ = next_use_;
    if (pinning_ == Pinning::kRing) {
      std::lock_guard<std::mutex> lock(ring_mu_);
      ring_done_ = next_use_;
    }
  }
  RETURN_IF_ERROR(Prefetch());
  const int stage = static_cast<int>(next_use_ % stage_.size());
  if (pinning_ == Pinning::kRing) {
    std::unique_lock<std::mutex> lock(ring_mu_);
    ring_cv_.wait(lock, [&] { return ring_done_ > next_use_ || !ring_error_.ok(); });
    RETURN_IF_ERROR(ring_error_);
  }
  CUDA_RETURN_IF_ERROR(cudaStreamWaitEvent(stream, copied_[stage], 0));
  return stage_[stage].as<const char>();
}

absl::Status ExpertStore::Release(size_t layer, int /*p*/, cudaStream_t stream) {
  if (position_[layer] < 0) return absl::OkStatus();
  CUDA_RETURN_IF_ERROR(cudaEventRecord(consumed_[next_use_ % stage_.size()], stream));
  ++next_use_;
  return Prefetch();
}

}  // namespace krasis::cuda
