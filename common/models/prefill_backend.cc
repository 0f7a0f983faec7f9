// The CPU prefill backend (see prefill_backend.h). MakePrefillBackend lives in
// common/cuda/select_backend.cc, which knows whether this build has CUDA.
#include "common/models/prefill_backend.h"

#include "common/status.h"

namespace krasis {
namespace {

class CpuPrefillBackend final : public PrefillBackend {
 public:
  explicit CpuPrefillBackend(const DecoderModel& model) : model_(model) {}
  std::string name() const override { return "cpu"; }
  absl::Status Forward(std::span<const int32_t> tokens, SequenceState& seq, PagedKvCache& cache,
                       std::vector<float>* logits, bool all_positions,
                       const std::function<void(int layer)>& on_layer_done) override {
    BatchItem item{&seq, std::vector<int32_t>(tokens.begin(), tokens.end()), all_positions};
    std::vector<std::vector<float>> out;
    RETURN_IF_ERROR(model_.Forward(std::span(&item, 1), cache, &out, on_layer_done));
    if (logits != nullptr) *logits = std::move(out[0]);
    return absl::OkStatus();
  }

 private:
  const DecoderModel& model_;
};

}  // namespace

std::unique_ptr<PrefillBackend> MakeCpuPrefillBackend(const DecoderModel& model) {
  return std::make_unique<CpuPrefillBackend>(model);
}

}  // namespace krasis
