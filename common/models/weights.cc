// Checked weight lookup (see weights.h).
#include "common/models/weights.h"

#include "common/status.h"

namespace krasis {

absl::StatusOr<TensorView> Weights::Get(const std::string& name, const Shape& shape) const {
  const TensorInfo* info = model_->Find(name);
  if (info == nullptr) {
    return NotFoundError("tensor '", name, "' (expected shape ", ShapeToString(shape),
                         ") is missing from the checkpoint in ", model_->root());
  }
  if (info->shape != shape) {
    return InvalidArgumentError("tensor '", name, "' in ", info->file, " has shape ",
                                ShapeToString(info->shape), ", expected ", ShapeToString(shape));
  }
  if (!IsFloatingDType(info->dtype)) {
    return InvalidArgumentError("tensor '", name, "' in ", info->file, " has dtype ",
                                DTypeName(info->dtype), "; weights must be BF16, F16, F32 or F8_E4M3");
  }
  return model_->GetTensor(name);
}

absl::StatusOr<TensorView> Weights::GetOptional(const std::string& name, const Shape& shape) const {
  if (!model_->Contains(name)) return TensorView{};
  return Get(name, shape);
}

}  // namespace krasis
