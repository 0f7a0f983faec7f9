// Paged KV cache (see kv_cache.h).
#include "common/models/kv_cache.h"

#include <algorithm>
#include <cstring>

#include "absl/status/statusor.h"
#include "common/status.h"

namespace krasis {

PagedKvCache::PagedKvCache(int64_t num_blocks, int64_t block_size,
                           std::vector<int64_t> floats_per_token, DType dtype)
    : num_blocks_(num_blocks),
      block_size_(block_size),
      dtype_(dtype == DType::kBF16 || dtype == DType::kF16 ? dtype : DType::kF32) {
  layer_floats_ = floats_per_token;
  for (int64_t f : floats_per_token) {
    layer_offset_.push_back(floats_per_slot_);
    floats_per_slot_ += f;
  }
  storage_.assign(static_cast<size_t>(num_blocks * block_size * floats_per_slot_) * ElementBytes(), std::byte{0});
  for (int64_t b = num_blocks - 1; b >= 0; --b) free_.push_back(static_cast<int32_t>(b));
}

absl::StatusOr<int32_t> PagedKvCache::Allocate() {
  if (free_.empty()) {
    return absl::ResourceExhaustedError(StrCat("KV cache is full (", num_blocks_, " blocks of ",
                                               block_size_, " tokens)"));
  }
  int32_t b = free_.back();
  free_.pop_back();
  return b;
}

void PagedKvCache::Release(int32_t block) { free_.push_back(block); }

std::byte* PagedKvCache::Slot(int32_t block, int layer, int64_t slot) {
  size_t index = (static_cast<size_t>(block) * block_size_ + slot) * floats_per_slot_ +
                 layer_offset_[layer];
  return storage_.data() + index * ElementBytes();
}

void PagedKvCache::Store(const float* src, int64_t count, std::byte* dst) const {
  ConvertFromFloat(dtype_, src, dst, static_cast<size_t>(count));
}

void PagedKvCache::Load(const std::byte* src, int64_t count, float* dst) const {
  ConvertToFloat(dtype_, src, dst, static_cast<size_t>(count));
}

absl::Status SequenceState::Reserve(PagedKvCache& cache, int64_t total_tokens) {
  int64_t needed = (total_tokens + cache.block_size() - 1) / cache.block_size();
  while (static_cast<int64_t>(block_table.size()) < needed) {
    ASSIGN_OR_RETURN(int32_t b, cache.Allocate());
    block_table.push_back(b);
  }
  return absl::OkStatus();
}

void SequenceState::ReadRows(PagedKvCache& cache, int layer, int64_t first, int64_t count,
                             float* out) const {
  const int64_t f = cache.LayerFloats(layer);
  for (int64_t t = 0; t < count; ++t) cache.Load(Slot(cache, layer, first + t), f, out + t * f);
}

void SequenceState::WriteRows(PagedKvCache& cache, int layer, int64_t first, int64_t count,
                              const float* in) const {
  const int64_t f = cache.LayerFloats(layer);
  for (int64_t t = 0; t < count; ++t) StoreRow(cache, layer, first + t, 0, in + t * f, f);
}

absl::StatusOr<DType> ParseKvCacheDtype(const std::string& name) {
  if (name == "bf16" || name == "bfloat16") return DType::kBF16;
  if (name == "f16" || name == "fp16" || name == "float16") return DType::kF16;
  if (name == "f32" || name == "fp32" || name == "float32") return DType::kF32;
  return absl::InvalidArgumentError(StrCat("--kv-cache-dtype ", name, ": expected bf16, f16 or f32"));
}

void SequenceState::WriteRawRows(PagedKvCache& cache, int layer, int64_t first, int64_t count,
                                 const std::byte* in) const {
  const size_t row = static_cast<size_t>(cache.LayerFloats(layer)) * cache.ElementBytes();
  for (int64_t t = 0; t < count; ++t) std::memcpy(Slot(cache, layer, first + t), in + t * row, row);
}

void SequenceState::Release(PagedKvCache& cache) {
  for (int32_t b : block_table) cache.Release(b);
  block_table.clear();
  linear.clear();
  num_tokens = 0;
}

}  // namespace krasis
