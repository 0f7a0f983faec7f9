// TensorView helpers (see tensor.h).
#include "common/tensor.h"

#include "absl/strings/str_join.h"
#include "common/status.h"

namespace krasis {

std::string ShapeToString(const Shape& shape) {
  return StrCat("[", absl::StrJoin(shape, ", "), "]");
}

int64_t NumElements(const Shape& shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

TensorView TensorView::Slice0(int64_t i) const {
  TensorView out;
  out.dtype = dtype;
  out.shape.assign(shape.begin() + 1, shape.end());
  out.data = data + static_cast<size_t>(i) * out.nbytes();
  return out;
}

std::vector<float> ToFloatVector(const TensorView& view) {
  std::vector<float> out(static_cast<size_t>(view.numel()));
  ConvertToFloat(view.dtype, view.data, out.data(), out.size());
  return out;
}

absl::Status CheckShape(const TensorView& view, const Shape& expected, std::string_view what) {
  if (view.shape == expected) return absl::OkStatus();
  return InvalidArgumentError(what, " has shape ", ShapeToString(view.shape), ", expected ",
                              ShapeToString(expected));
}

}  // namespace krasis
