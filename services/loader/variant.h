// Cache variants: which weight formats a worker wants, normalized into a cache key
// (no gRPC; the adapter maps krasis.v1.PrepareOptions onto VariantSpec).
//
// A variant names the format of the routed experts for decode (CPU) and for
// prefill (GPU) and of the dense weights. Its cache key is
// "<decode>-<prefill>" plus "-dense<fmt>" when the dense weights change and
// "-gguf<crc>" when experts come from a GGUF file, where a format is "int4g128",
// "int8g64", "bf16", "f16", "f32" or "fp8" ("as stored" is spelled as the
// checkpoint's own type), e.g. "int4g128-bf16" for INT4 decode experts and the
// checkpoint's BF16 experts for prefill.
//
// This issue serves only the pass-through variant: every format as stored in the
// checkpoint, so nothing needs converting and the source files are the variant
// (e.g. "bf16-bf16"). Quantized variants (INT4/INT8 experts, GGUF experts) need
// the conversion cache, which arrives in a later issue: ResolveVariant names them
// and says what would be converted, and callers answer UNIMPLEMENTED (Prepare),
// FAILED_PRECONDITION (GetManifest: "not prepared") or NOT_FOUND (ReadFile and
// ReadTensor with that cache key: no such files or tensors yet).
#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "services/loader/model_inspect.h"

namespace krasis {

enum class WeightFormat {
  kAsStored,  // keep the checkpoint's format
  kBF16,
  kF16,
  kF32,
  kFp8E4M3,
  kInt8GroupSym,
  kInt4GroupSym,
};

inline constexpr int kDefaultGroupSize = 128;

// The requested formats. Defaults are loader.proto's: INT4 g128 decode experts,
// everything else as stored.
struct VariantSpec {
  WeightFormat decode_experts = WeightFormat::kInt4GroupSym;
  int decode_group_size = 0;  // 0: kDefaultGroupSize
  WeightFormat prefill_experts = WeightFormat::kAsStored;
  int prefill_group_size = 0;  // 0: kDefaultGroupSize
  WeightFormat dense = WeightFormat::kAsStored;
  std::string gguf_experts_path;  // empty: none
};

// The pass-through spec: every format as stored.
VariantSpec PassThroughSpec();

struct ResolvedVariant {
  std::string cache_key;
  // True when some tensors must be converted (a cache must be built).
  bool needs_conversion = false;
  // What must be converted, e.g. "decode experts BF16 -> INT4_GROUP_SYM (group
  // 128)"; empty when nothing.
  std::string conversion;
};

// Normalizes `spec` against the model's stored types. INVALID_ARGUMENT for a group
// size that is not a power of two in [16, 4096] (0 means 128).
absl::StatusOr<ResolvedVariant> ResolveVariant(const ModelRecord& model, const VariantSpec& spec);

// Cache key of the pass-through variant of `model` (e.g. "bf16-bf16").
std::string PassThroughCacheKey(const ModelRecord& model);

}  // namespace krasis
