// Conversions between the loader engine's types (model_inspect.h, variant.h,
// prepare_job.h) and the krasis.v1 messages of loader.proto. Used only by the
// gRPC adapter; kept apart so the adapter stays about RPC plumbing.
#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "krasis/v1/loader.pb.h"
#include "services/loader/model_inspect.h"
#include "services/loader/prepare_job.h"
#include "services/loader/variant.h"

namespace krasis {

// ModelInfo of a record (status AVAILABLE or INVALID with the message).
v1::ModelInfo ToModelInfo(const ModelRecord& record);

// The typed architecture fields of a valid record (record.config set).
v1::ArchitectureConfig ToArchitectureConfig(const ModelRecord& record);

v1::FileEntry ToFileEntry(const ModelFile& file);

// A source tensor's entry: format from its dtype; FP8 weights name their
// "<name>_scale_inv" companion and the config's quantization block.
v1::TensorEntry ToTensorEntry(const ModelRecord& record, const ModelTensor& tensor);

// The requested formats. INVALID_ARGUMENT for formats that are not conversion
// targets (PLAIN, GGUF_*: GGUF experts come from gguf_experts_path).
absl::StatusOr<VariantSpec> FromPrepareOptions(const v1::PrepareOptions& options);

v1::PrepareProgress ToPrepareProgress(const PrepareState& state);

// The manifest of a valid record for `request` (target and variant), with this
// host's name and machine id. FAILED_PRECONDITION for a variant that needs a
// conversion (not prepared: the conversion cache arrives in a later issue).
absl::StatusOr<v1::Manifest> BuildManifest(const ModelRecord& record,
                                           const v1::GetManifestRequest& request,
                                           const std::string& hostname, const std::string& host_id);

}  // namespace krasis
