// Named, shape-checked access to a checkpoint's tensors for model code. Every
// error names the tensor, the file it lives in, and the shape that was expected,
// so a model directory with a missing or mis-shaped tensor is reported plainly.
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "common/safetensors.h"
#include "common/tensor.h"

namespace krasis {

class Weights {
 public:
  explicit Weights(std::unique_ptr<SafetensorsModel> model) : model_(std::move(model)) {}

  // The tensor `name`, which must have exactly `shape`.
  absl::StatusOr<TensorView> Get(const std::string& name, const Shape& shape) const;
  // Same, but absent is fine (returns a view with data == nullptr).
  absl::StatusOr<TensorView> GetOptional(const std::string& name, const Shape& shape) const;
  bool Contains(const std::string& name) const { return model_->Contains(name); }
  const SafetensorsModel& model() const { return *model_; }

 private:
  std::unique_ptr<SafetensorsModel> model_;
};

}  // namespace krasis
