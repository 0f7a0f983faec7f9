// A small non-owning view of a tensor: element type, shape, and a pointer to
// contiguous row-major bytes (typically into an mmap'ed safetensors file).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "common/dtype.h"

namespace krasis {

using Shape = std::vector<int64_t>;

// "[2, 3, 4]"
std::string ShapeToString(const Shape& shape);
// Product of the dimensions (1 for a scalar, shape []).
int64_t NumElements(const Shape& shape);

struct TensorView {
  DType dtype = DType::kF32;
  Shape shape;
  const std::byte* data = nullptr;

  int64_t numel() const { return NumElements(shape); }
  size_t nbytes() const { return static_cast<size_t>(numel()) * DTypeSize(dtype); }
  int64_t dim(size_t i) const { return shape.at(i); }
  size_t rank() const { return shape.size(); }

  // Typed pointer; the caller checks dtype first.
  template <typename T>
  const T* as() const {
    return reinterpret_cast<const T*>(data);
  }

  // Row `i` of the leading dimension, as a view of rank-1.
  TensorView Slice0(int64_t i) const;
};

// Copies a view into float32 (any dtype).
std::vector<float> ToFloatVector(const TensorView& view);

// Checks that `view` has exactly `expected` shape; the error names `what`.
absl::Status CheckShape(const TensorView& view, const Shape& expected, std::string_view what);

}  // namespace krasis
