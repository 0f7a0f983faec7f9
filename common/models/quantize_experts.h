// The one way a process switches a loaded model's routed experts to a format
// asked for on its command line (the decode and prefill workers, krasis-cli,
// the benchmarks), so they all build and map the same conversion cache files.
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "common/models/model.h"

namespace krasis {

// Nothing for kBf16 (experts as stored). Otherwise quantizes the routed experts
// to `format` with `group_size`, mapping (and first building) the conversion
// cache under `cache_root` when it is given, else quantizing in memory;
// `gguf_path` (optional) takes the experts from that GGUF file.
absl::Status QuantizeExperts(DecoderModel& model, const std::string& model_dir, ExpertFormat format,
                             int64_t group_size, const std::string& cache_root, const std::string& gguf_path = "");

}  // namespace krasis
