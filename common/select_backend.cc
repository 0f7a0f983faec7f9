// MakePrefillBackend (see models/prefill_backend.h): the one place that knows
// whether this build has the CUDA backend (KRASIS_HAVE_CUDA).
#include "common/models/prefill_backend.h"
#include "common/status.h"
#include "absl/strings/str_format.h"

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
  // Checked whatever the backend: a bad value is refused on every machine, not only where a GPU is found.
  if (choice.cuda_split != "layers" && choice.cuda_split != "experts") {
    return InvalidArgumentError("--cuda-split ", choice.cuda_split, ": expected layers or experts");
  }
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
  for (int d : choice.devices) {
    if (d < 0 || d >= static_cast<int>(gpus.size())) {
      return absl::FailedPreconditionError(StrCat("--cuda-devices: no CUDA device ", d, " (", gpus.size(), " present)"));
    }
  }
  CudaBackendOptions options;
  options.device = choice.devices.empty() ? choice.device : choice.devices[0];
  options.devices = choice.devices;
  options.vram_budget_bytes = choice.vram_budget_bytes;
  if (choice.stream_pinning != "register" && choice.stream_pinning != "ring") {
    return InvalidArgumentError("--stream-pinning ", choice.stream_pinning, ": expected register or ring");
  }
  options.pinning = choice.stream_pinning == "ring" ? cuda::Pinning::kRing : cuda::Pinning::kRegister;
  options.split = choice.cuda_split == "layers" ? CudaBackendOptions::Split::kLayers : CudaBackendOptions::Split::kExperts;
  CudaBackendInfo info;
  auto cuda = MakeCudaPrefillBackend(model, options, &info);
  if (!cuda.ok()) {
    if (choice.name == "cuda" || cuda.status().code() != absl::StatusCode::kUnimplemented) return cuda.status();
    say(StrCat("cpu backend: ", cuda.status().message()));
    return MakeCpuPrefillBackend(model);
  }
  const double gib = 1 << 30;
  std::string experts;
  if (info.moe_layers > 0) {
    experts = StrCat("; routed experts ", info.expert_format, ": ", info.moe_layers - info.streamed_layers, " of ",
                     info.moe_layers, " layers resident (", absl::StrFormat("%.2f", info.resident_expert_bytes / gib),
                     " GiB)");
    if (info.streamed_layers > 0) {
      absl::StrAppend(&experts, ", ", info.streamed_layers, " streamed from host RAM (",
                      absl::StrFormat("%.2f", info.streamed_expert_bytes / gib), " GiB per chunk, pinning ",
                      info.pinning, ")");
    }
  }
  const std::string cards =
      info.cards > 1 ? StrCat(info.cards, " cards (NCCL, routed experts split), first ") : std::string();
  say(StrCat("cuda backend on ", cards, gpus[static_cast<size_t>(options.device)].name, " (VRAM budget ",
             absl::StrFormat("%.2f", info.budget_bytes / gib), " GiB", experts, ")"));
  return cuda;
#else
  if (choice.name == "cuda") return absl::FailedPreconditionError("--backend cuda: this build has no CUDA (nvcc was not found)");
  say("cpu backend: this build has no CUDA");
  return MakeCpuPrefillBackend(model);
#endif
}

}  // namespace krasis
