// libFuzzer target for the GGUF parser: GGUF files come from the internet, so
// arbitrary bytes must give a status, never a crash, hang, huge allocation or
// sanitizer report, and whatever the parser accepts must satisfy the invariants
// the expert loader relies on (checked here; a violation aborts). Accepted files
// also go through the metadata accessors, expert lookup and dequantization, which
// must stay inside the bytes given. Seeds: tests/fuzz/corpus/gguf.
//
// With KRASIS_FUZZ=ON the whole build (krasis_common included) is compiled with
// coverage instrumentation, so the parser is linked from the library as usual.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <span>
#include <vector>

#include "common/gguf.h"

namespace {

void Check(bool condition) {
  if (!condition) std::abort();
}

bool Inside(const std::byte* p, uint64_t n, std::span<const std::byte> bytes) {
  return p >= bytes.data() && n <= bytes.size() &&
         static_cast<uint64_t>(p - bytes.data()) <= bytes.size() - n;
}

void WalkValue(const krasis::GgufValue& value) {
  value.AsInt();
  value.AsUint();
  value.AsFloat();
  value.AsBool();
  if (const krasis::GgufArray* array = value.AsArray()) {
    Check(value.type() == krasis::GgufValueType::kArray);
    array->ToInts();
    array->ToFloats();
    for (size_t i = 0; i < array->size(); ++i) WalkValue(array->at(i));
  }
}

void CheckInvariants(const krasis::GgufFile& file, std::span<const std::byte> bytes) {
  const uint64_t alignment = file.alignment();
  Check(alignment > 0 && (alignment & (alignment - 1)) == 0);
  Check(file.data_offset() % alignment == 0);
  Check(file.file_size() == bytes.size());
  for (const auto& [key, value] : file.metadata()) {
    Check(!key.empty());
    Check(file.FindMetadata(key) == &value);  // unique keys
    WalkValue(value);
  }
  std::vector<const krasis::GgufTensor*> by_offset;
  for (const krasis::GgufTensor& t : file.tensors()) {
    Check(file.FindTensor(t.name) == &t);  // unique names
    Check(!t.name.empty() && t.name.size() <= krasis::GgufFile::kMaxTensorNameBytes);
    Check(t.shape.size() <= static_cast<size_t>(krasis::GgufFile::kMaxDims));
    Check(t.offset % alignment == 0);
    for (int64_t d : t.shape) Check(d >= 0);
    const krasis::GgmlTypeInfo& info = krasis::GetGgmlTypeInfo(t.type);
    const int64_t numel = t.num_elements();
    const int64_t ne0 = t.shape.empty() ? 1 : t.shape[0];
    Check(ne0 % info.block_size == 0);
    Check(t.nbytes == static_cast<uint64_t>(numel / info.block_size * info.type_size));
    if (t.nbytes == 0) {
      Check(t.data == nullptr);
      continue;
    }
    Check(Inside(t.data, t.nbytes, bytes));
    Check(t.data == bytes.data() + file.data_offset() + t.offset);
    by_offset.push_back(&t);
    if (info.dequantizable) {
      std::vector<float> out(static_cast<size_t>(numel));
      for (int64_t r = 0; r < numel / ne0; ++r) {
        const uint64_t row_bytes = t.nbytes / static_cast<uint64_t>(numel / ne0);
        Check(
            krasis::DequantizeRow(t.type, t.data + r * row_bytes, ne0, out.data() + r * ne0).ok());
      }
    }
  }
  std::sort(by_offset.begin(), by_offset.end(),
            [](const krasis::GgufTensor* a, const krasis::GgufTensor* b) {
              return a->offset < b->offset;
            });
  for (size_t i = 1; i < by_offset.size(); ++i) {
    Check(by_offset[i - 1]->offset + by_offset[i - 1]->nbytes <=
          by_offset[i]->offset);  // no overlap
  }
  for (int64_t layer = 0; layer < 2; ++layer) {
    for (int64_t expert = 0; expert < 3; ++expert) {
      for (krasis::ExpertProj which :
           {krasis::ExpertProj::kGate, krasis::ExpertProj::kUp, krasis::ExpertProj::kDown}) {
        absl::StatusOr<krasis::GgufMatrixView> view =
            krasis::FindExpert(file, layer, expert, which);
        if (!view.ok()) continue;
        const uint64_t size = static_cast<uint64_t>(view->rows) * view->row_stride;
        if (size == 0) continue;
        Check(Inside(view->data, size, bytes));
        std::vector<float> out(static_cast<size_t>(view->rows * view->cols));
        absl::Status status = krasis::DequantizeMatrix(*view, out.data());
        Check(status.ok() || status.code() == absl::StatusCode::kUnimplemented);
      }
    }
    krasis::CountExperts(file, layer).IgnoreError();
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::span<const std::byte> bytes(reinterpret_cast<const std::byte*>(data), size);
  absl::StatusOr<std::unique_ptr<krasis::GgufFile>> file =
      krasis::GgufFile::Parse(bytes, "fuzz.gguf");
  if (file.ok()) {
    CheckInvariants(**file, bytes);
  } else {
    // Every error names the file.
    Check(file.status().message().find("fuzz.gguf") != absl::string_view::npos);
  }
  return 0;
}
