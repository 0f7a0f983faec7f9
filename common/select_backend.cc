// MakePrefillBackend (see models/prefill_backend.h): the one place that knows
// whether this build has the CUDA backend (KRASIS_HAVE_CUDA).
#include "common/models/prefill_backend.h"
#include "common/status.h"

#if KRASIS_HAVE_CUDA
#include "common/cuda/cuda_model.h"
#include "common/cuda/device.h"
#endif

namespace krasis {

absl::StatusOr<std::unique_ptr<PrefillBackend>> MakePrefillBackend(const DecoderModel& model,
                                                                   const BackendChoice& choice, std::string* why) {
  auto say = [&](std::string line) {
    if (why != nullptr) *why = std::move(line);
  };
  if (choice.name == "cpu") {
    say("cpu backend (asked for)");
    return MakeCpuPrefillBackend(model);
  }
  if (choice.name != "auto" && choice.name != "cuda") {
    return InvalidArgumentError("--backend ", choice.name, ": expected auto, cpu or cuda");
  }
#if KRASIS_HAVE_CUDA
  std::string none;
  ASSIGN_OR_RETURN(std::vector<GpuInfo> gpus, ListGpus(&none));
  if (gpus.empty() || choice.device >= static_cast<int>(gpus.size()) || choice.device < 0) {
    const std::string reason = gpus.empty() ? StrCat("no CUDA GPU (", none, ")")
                                            : StrCat("no CUDA device ", choice.device, " (", gpus.size(), " present)");
    if (choice.name == "cuda") return absl::FailedPreconditionError(StrCat("--backend cuda: ", reason));
    say(StrCat("cpu backend: ", reason));
    return MakeCpuPrefillBackend(model);
  }
  CudaBackendOptions options;
  options.device = choice.device;
  auto cuda = MakeCudaPrefillBackend(model, options);
  if (!cuda.ok()) {
    if (choice.name == "cuda" || cuda.status().code() != absl::StatusCode::kUnimplemented) return cuda.status();
    say(StrCat("cpu backend: ", cuda.status().message()));
    return MakeCpuPrefillBackend(model);
  }
  say(StrCat("cuda backend on ", gpus[static_cast<size_t>(choice.device)].name));
  return cuda;
#else
  if (choice.name == "cuda") return absl::FailedPreconditionError("--backend cuda: this build has no CUDA (nvcc was not found)");
  say("cpu backend: this build has no CUDA");
  return MakeCpuPrefillBackend(model);
#endif
}

}  // namespace krasis
