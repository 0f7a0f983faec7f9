// Cache variant normalization (see variant.h).
#include "services/loader/variant.h"

#include <cstdio>
#include <optional>
#include <vector>

#include "common/status.h"
#include "services/loader/crc32c.h"

namespace krasis {
namespace {

std::optional<WeightFormat> FormatOfDType(std::optional<DType> dtype) {
  if (!dtype) return std::nullopt;
  switch (*dtype) {
    case DType::kBF16: return WeightFormat::kBF16;
    case DType::kF16: return WeightFormat::kF16;
    case DType::kF32: return WeightFormat::kF32;
    case DType::kF8E4M3: return WeightFormat::kFp8E4M3;
    default: return std::nullopt;
  }
}

std::string StoredTag(std::optional<DType> dtype) {
  if (!dtype) return "none";
  switch (*dtype) {
    case DType::kBF16: return "bf16";
    case DType::kF16: return "f16";
    case DType::kF32: return "f32";
    case DType::kF8E4M3: return "fp8";
    default: return std::string(DTypeName(*dtype));
  }
}

std::string FormatName(WeightFormat format) {
  switch (format) {
    case WeightFormat::kAsStored: return "as stored";
    case WeightFormat::kBF16: return "BF16";
    case WeightFormat::kF16: return "F16";
    case WeightFormat::kF32: return "F32";
    case WeightFormat::kFp8E4M3: return "FP8_E4M3";
    case WeightFormat::kInt8GroupSym: return "INT8_GROUP_SYM";
    case WeightFormat::kInt4GroupSym: return "INT4_GROUP_SYM";
  }
  return "?";
}

// One part of a variant: its key tag and, when it differs from what is stored,
// the conversion it needs.
struct Part {
  std::string tag;
  std::string conversion;  // empty when pass-through
};

absl::StatusOr<Part> ResolvePart(std::string_view what, WeightFormat want, int group_size,
                                 std::optional<DType> stored) {
  if (group_size == 0) group_size = kDefaultGroupSize;
  if (group_size < 16 || group_size > 4096 || (group_size & (group_size - 1)) != 0) {
    return InvalidArgumentError(what, " group size ", group_size,
                                " must be a power of two from 16 to 4096 (0 means ",
                                kDefaultGroupSize, ")");
  }
  Part part;
  if (want == WeightFormat::kAsStored || FormatOfDType(stored) == want || !stored) {
    part.tag = StoredTag(stored);
    return part;
  }
  switch (want) {
    case WeightFormat::kInt4GroupSym: part.tag = StrCat("int4g", group_size); break;
    case WeightFormat::kInt8GroupSym: part.tag = StrCat("int8g", group_size); break;
    case WeightFormat::kBF16: part.tag = "bf16"; break;
    case WeightFormat::kF16: part.tag = "f16"; break;
    case WeightFormat::kF32: part.tag = "f32"; break;
    case WeightFormat::kFp8E4M3: part.tag = "fp8"; break;
    case WeightFormat::kAsStored: break;
  }
  part.conversion = StrCat(what, " ", std::string(DTypeName(*stored)), " -> ", FormatName(want));
  if (want == WeightFormat::kInt4GroupSym || want == WeightFormat::kInt8GroupSym) {
    part.conversion += StrCat(" (group ", group_size, ")");
  }
  return part;
}

}  // namespace

VariantSpec PassThroughSpec() {
  VariantSpec spec;
  spec.decode_experts = WeightFormat::kAsStored;
  return spec;
}

absl::StatusOr<ResolvedVariant> ResolveVariant(const ModelRecord& model, const VariantSpec& spec) {
  ASSIGN_OR_RETURN(Part decode, ResolvePart("decode experts", spec.decode_experts,
                                            spec.decode_group_size, model.expert_dtype));
  ASSIGN_OR_RETURN(Part prefill, ResolvePart("prefill experts", spec.prefill_experts,
                                             spec.prefill_group_size, model.expert_dtype));
  ASSIGN_OR_RETURN(Part dense, ResolvePart("dense weights", spec.dense, 0, model.dense_dtype));
  ResolvedVariant out;
  std::vector<std::string> conversions;
  if (!spec.gguf_experts_path.empty()) {
    char crc[9];
    std::snprintf(crc, sizeof(crc), "%08x", Crc32c(spec.gguf_experts_path));
    decode.tag = "gguf";
    decode.conversion.clear();
    conversions.push_back(StrCat("decode experts from GGUF file ", spec.gguf_experts_path));
    out.cache_key = StrCat("gguf", crc, "-", prefill.tag);
  } else {
    out.cache_key = StrCat(decode.tag, "-", prefill.tag);
  }
  if (!dense.conversion.empty()) out.cache_key += StrCat("-dense", dense.tag);
  for (const Part* p : {&decode, &prefill, &dense}) {
    if (!p->conversion.empty()) conversions.push_back(p->conversion);
  }
  for (const std::string& c : conversions) {
    out.conversion += out.conversion.empty() ? c : StrCat("; ", c);
  }
  out.needs_conversion = !conversions.empty();
  return out;
}

std::string PassThroughCacheKey(const ModelRecord& model) {
  auto resolved = ResolveVariant(model, PassThroughSpec());
  return resolved.ok() ? resolved->cache_key : std::string();
}

}  // namespace krasis
