// MoE expert lookup in GGUF files: merged blk.L.ffn_*_exps tensors and
// per-expert ones, as matrix views into the mapping. See gguf.h.
#include <array>
#include <optional>

#include "common/gguf.h"
#include "common/status.h"

namespace krasis {

std::string_view ExpertProjName(ExpertProj which) {
  switch (which) {
    case ExpertProj::kGate:
      return "gate";
    case ExpertProj::kUp:
      return "up";
    case ExpertProj::kDown:
      return "down";
  }
  return "?";
}

namespace {

// The expert tensors of one layer and projection, by name.
struct ExpertNames {
  std::string merged;    // blk.L.ffn_gate_exps.weight
  std::string per;       // blk.L.ffn_gate.E.weight
  std::string per_exps;  // blk.L.ffn_gate_exps.E.weight
};

ExpertNames NamesFor(int64_t layer, int64_t expert, ExpertProj which) {
  const std::string base = StrCat("blk.", layer, ".ffn_", ExpertProjName(which));
  return {StrCat(base, "_exps.weight"), StrCat(base, ".", expert, ".weight"),
          StrCat(base, "_exps.", expert, ".weight")};
}

// The per-expert tensor for (layer, expert, which), either spelling; an error if
// both exist.
absl::StatusOr<const GgufTensor*> FindPerExpert(const GgufFile& file, const ExpertNames& names) {
  const GgufTensor* a = file.FindTensor(names.per);
  const GgufTensor* b = file.FindTensor(names.per_exps);
  if (a != nullptr && b != nullptr) {
    return InvalidArgumentError(file.name(), ": both '", names.per, "' and '", names.per_exps,
                                "' exist");
  }
  return a != nullptr ? a : b;
}

// [cols, rows, count] of a tensor of at most `rank` dimensions (missing ones are
// 1; dimensions past `rank` must be 1, as ggml drops trailing 1s when writing).
std::optional<std::array<int64_t, 3>> MatrixDims(const Shape& shape, size_t rank) {
  std::array<int64_t, 3> dims = {1, 1, 1};
  for (size_t i = 0; i < shape.size(); ++i) {
    if (i < rank) {
      dims[i] = shape[i];
    } else if (shape[i] != 1) {
      return std::nullopt;
    }
  }
  return dims;
}

}  // namespace

absl::StatusOr<GgufMatrixView> FindExpert(const GgufFile& file, int64_t layer, int64_t expert,
                                          ExpertProj which) {
  if (layer < 0 || expert < 0) {
    return InvalidArgumentError(file.name(), ": bad expert (layer ", layer, ", expert ", expert,
                                ")");
  }
  const ExpertNames names = NamesFor(layer, expert, which);
  const GgufTensor* merged = file.FindTensor(names.merged);
  ASSIGN_OR_RETURN(const GgufTensor* per, FindPerExpert(file, names));
  if (merged != nullptr && per != nullptr) {
    return InvalidArgumentError(file.name(), ": layer ", layer, " has both merged '", names.merged,
                                "' and per-expert '", per->name, "'");
  }
  const GgufTensor* t = merged != nullptr ? merged : per;
  if (t == nullptr) {
    return NotFoundError(file.name(), ": layer ", layer, " expert ", expert, ": no ",
                         ExpertProjName(which), " weights (none of '", names.merged, "', '",
                         names.per, "', '", names.per_exps, "')");
  }
  const std::optional<std::array<int64_t, 3>> dims = MatrixDims(t->shape, merged ? 3 : 2);
  if (!dims) {
    return InvalidArgumentError(file.name(), ": tensor '", t->name, "' has shape ",
                                ShapeToString(t->shape), ", expected ",
                                merged ? "[cols, rows, n_expert]" : "[cols, rows]");
  }
  const auto [cols, rows, count] = *dims;
  if (expert >= count && merged) {
    return InvalidArgumentError(file.name(), ": expert ", expert, " out of range: tensor '",
                                t->name, "' holds ", count, " experts");
  }
  GgufMatrixView view;
  view.type = t->type;
  view.rows = rows;
  view.cols = cols;
  ASSIGN_OR_RETURN(view.row_stride, GgmlRowBytes(t->type, cols));
  if (t->data != nullptr) {
    view.data = t->data + static_cast<uint64_t>(merged ? expert : 0) * static_cast<uint64_t>(rows) *
                              view.row_stride;
  }
  view.tensor = t->name;
  return view;
}

absl::StatusOr<int64_t> CountExperts(const GgufFile& file, int64_t layer) {
  const ExpertNames first = NamesFor(layer, 0, ExpertProj::kGate);
  if (const GgufTensor* merged = file.FindTensor(first.merged)) {
    const std::optional<std::array<int64_t, 3>> dims = MatrixDims(merged->shape, 3);
    if (!dims) {
      return InvalidArgumentError(file.name(), ": tensor '", merged->name, "' has shape ",
                                  ShapeToString(merged->shape),
                                  ", expected [cols, rows, n_expert]");
    }
    return (*dims)[2];
  }
  int64_t count = 0;
  while (true) {
    ASSIGN_OR_RETURN(const GgufTensor* t,
                     FindPerExpert(file, NamesFor(layer, count, ExpertProj::kGate)));
    if (t == nullptr) break;
    ++count;
  }
  if (count == 0) {
    return NotFoundError(file.name(), ": layer ", layer, " has no expert weights (none of '",
                         first.merged, "', '", first.per, "', '", first.per_exps, "')");
  }
  return count;
}

absl::Status DequantizeMatrix(const GgufMatrixView& view, float* out) {
  if (view.rows < 0 || view.cols < 0) {
    return InvalidArgumentError("matrix '", view.tensor, "' has negative dimensions");
  }
  if (view.rows > 0 && view.cols > 0 && view.data == nullptr) {
    return InvalidArgumentError("matrix '", view.tensor, "' has no data");
  }
  for (int64_t r = 0; r < view.rows; ++r) {
    absl::Status status =
        DequantizeRow(view.type, view.data + static_cast<uint64_t>(r) * view.row_stride, view.cols,
                      out + r * view.cols);
    if (!status.ok()) return Annotate(status, StrCat("matrix '", view.tensor, "'"));
  }
  return absl::OkStatus();
}

}  // namespace krasis
