// libFuzzer target for the safetensors header parser: checkpoints come from the
// internet, so arbitrary bytes must give a status, never a crash, hang or sanitizer
// report, and whatever the parser accepts must satisfy the invariants the loader
// relies on (checked here; a violation aborts). Seeds: tests/fuzz/corpus/safetensors.
//
// With KRASIS_FUZZ=ON the whole build (krasis_common included) is compiled with
// coverage instrumentation, so the parser is linked from the library as usual.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <span>

#include "common/safetensors.h"

namespace {

void Check(bool condition) {
  if (!condition) std::abort();
}

void CheckInvariants(const krasis::ParsedHeader& header, size_t file_size) {
  Check(header.data_offset >= 8 && header.data_offset <= file_size);
  Check(header.data_offset + header.data_size == file_size);
  uint64_t furthest_end = 0;
  for (size_t i = 0; i < header.tensors.size(); ++i) {
    const krasis::TensorInfo& t = header.tensors[i];
    Check(t.begin <= t.end && t.end <= header.data_size);
    uint64_t numel = 1;
    for (int64_t d : t.shape) {
      Check(d >= 0);
      numel *= static_cast<uint64_t>(d);
    }
    Check(numel * krasis::DTypeSize(t.dtype) == t.nbytes());
    Check(krasis::NumElements(t.shape) == static_cast<int64_t>(numel));
    if (i > 0) Check(header.tensors[i - 1].begin <= t.begin);  // file order
    if (t.nbytes() > 0) {
      Check(t.begin >= furthest_end);  // no overlap
      furthest_end = std::max(furthest_end, t.end);
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::span<const std::byte> bytes(reinterpret_cast<const std::byte*>(data), size);
  absl::StatusOr<krasis::ParsedHeader> header =
      krasis::ParseSafetensorsHeader(bytes, "fuzz.safetensors");
  if (header.ok()) {
    CheckInvariants(*header, size);
  } else {
    // Every error names the file.
    Check(header.status().message().find("fuzz.safetensors") != absl::string_view::npos);
  }
  return 0;
}
