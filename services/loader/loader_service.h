// gRPC adapter of the loader (krasis.v1.Loader, proto/krasis/v1/loader.proto):
// request checks, message conversion (manifest_proto.h) and streaming. The work
// is done by the engine: ModelRegistry (models, validation, manifests' data),
// Preparer (Prepare jobs) and FileRange (chunked reads with CRC-32C). Engine
// errors become grpc::Status once, here, through services/rpc/grpc_status.h.
//
// ReadFile serves only files listed in the model's manifest (weight shards,
// config, generation config, tokenizer and chat template files): a name that is
// not a plain relative path inside the model dir ("../../etc/passwd", "/etc/x")
// is INVALID_ARGUMENT, any other unlisted name NOT_FOUND. Ranges past the end of
// the file or tensor are OUT_OF_RANGE. Chunks are `chunk_size` bytes (0: the
// server default, 4 MiB), clamped to [4 KiB, 64 MiB] by default.
#pragma once

#include <cstddef>
#include <string>

#include "grpcpp/grpcpp.h"
#include "krasis/v1/loader.grpc.pb.h"
#include "services/loader/file_io.h"
#include "services/loader/model_registry.h"
#include "services/loader/prepare_job.h"

namespace krasis {

struct LoaderServiceOptions {
  size_t default_chunk_bytes = 4 << 20;  // when a request says 0
  size_t min_chunk_bytes = 4 << 10;
  size_t max_chunk_bytes = 64 << 20;  // below the servers' 256 MiB message limit
  std::string hostname;               // empty: gethostname()
  std::string host_id;                // empty: ReadMachineId()
};

// This host's /etc/machine-id (or /var/lib/dbus/machine-id), trimmed; empty when
// neither exists.
std::string ReadMachineId();

// A name ReadFile accepts: relative, '/'-separated, no "." / ".." / empty
// components, no backslash or NUL. INVALID_ARGUMENT otherwise.
absl::Status CheckRelativeFileName(const std::string& file);

class LoaderService final : public v1::Loader::Service {
 public:
  // `registry` must outlive the service.
  explicit LoaderService(ModelRegistry* registry, LoaderServiceOptions options = {});

  grpc::Status ListModels(grpc::ServerContext* context, const v1::LoaderListModelsRequest* request,
                          v1::LoaderListModelsResponse* response) override;
  grpc::Status GetManifest(grpc::ServerContext* context, const v1::GetManifestRequest* request,
                           v1::Manifest* response) override;
  grpc::Status Prepare(grpc::ServerContext* context, const v1::PrepareRequest* request,
                       grpc::ServerWriter<v1::PrepareProgress>* writer) override;
  grpc::Status ReadFile(grpc::ServerContext* context, const v1::ReadFileRequest* request,
                        grpc::ServerWriter<v1::ReadResponse>* writer) override;
  grpc::Status ReadTensor(grpc::ServerContext* context, const v1::ReadTensorRequest* request,
                          grpc::ServerWriter<v1::ReadResponse>* writer) override;

 private:
  size_t ChunkBytes(uint32_t requested) const;
  // Writes the header, the chunks of `range` and the trailer.
  grpc::Status StreamRange(grpc::ServerContext* context, const FileRange& range,
                           uint32_t chunk_size, v1::ReadHeader header,
                           grpc::ServerWriter<v1::ReadResponse>* writer) const;

  ModelRegistry* registry_;
  LoaderServiceOptions options_;
  Preparer preparer_;
};

}  // namespace krasis
