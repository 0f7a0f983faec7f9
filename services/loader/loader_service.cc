// gRPC adapter of the loader (see loader_service.h).
#include "services/loader/loader_service.h"

#include <unistd.h>

#include <algorithm>
#include <fstream>

#include "common/status.h"
#include "services/loader/manifest_proto.h"
#include "services/loader/variant.h"
#include "services/rpc/grpc_status.h"

namespace krasis {
namespace {

std::string Hostname() {
  char name[256] = {};
  if (gethostname(name, sizeof(name) - 1) != 0) return "";
  return name;
}

}  // namespace

std::string ReadMachineId() {
  for (const char* path : {"/etc/machine-id", "/var/lib/dbus/machine-id"}) {
    std::ifstream in(path);
    std::string id;
    if (in >> id && !id.empty()) return id;
  }
  return "";
}

absl::Status CheckRelativeFileName(const std::string& file) {
  auto bad = [&](std::string_view why) {
    return InvalidArgumentError("file '", file, "' ", why,
                                ": ReadFile takes a FileEntry.file of the model's manifest, a ",
                                "relative path inside the model dir");
  };
  if (file.empty()) return bad("is empty");
  if (file.front() == '/') return bad("is absolute");
  if (file.find('\0') != std::string::npos || file.find('\\') != std::string::npos) {
    return bad("contains a NUL or a backslash");
  }
  size_t start = 0;
  while (start <= file.size()) {
    size_t end = file.find('/', start);
    if (end == std::string::npos) end = file.size();
    std::string_view part(file.data() + start, end - start);
    if (part == "..") return bad("escapes the model dir");
    if (part.empty() || part == ".") return bad("is not a normalized path");
    start = end + 1;
  }
  return absl::OkStatus();
}

LoaderService::LoaderService(ModelRegistry* registry, LoaderServiceOptions options)
    : registry_(registry), options_(std::move(options)), preparer_(registry) {
  if (options_.hostname.empty()) options_.hostname = Hostname();
  if (options_.host_id.empty()) options_.host_id = ReadMachineId();
  options_.min_chunk_bytes = std::max<size_t>(1, options_.min_chunk_bytes);
  options_.max_chunk_bytes = std::max(options_.max_chunk_bytes, options_.min_chunk_bytes);
  options_.default_chunk_bytes =
      std::clamp(options_.default_chunk_bytes, options_.min_chunk_bytes, options_.max_chunk_bytes);
}

size_t LoaderService::ChunkBytes(uint32_t requested) const {
  if (requested == 0) return options_.default_chunk_bytes;
  return std::clamp<size_t>(requested, options_.min_chunk_bytes, options_.max_chunk_bytes);
}

grpc::Status LoaderService::ListModels(grpc::ServerContext*,
                                       const v1::LoaderListModelsRequest* request,
                                       v1::LoaderListModelsResponse* response) {
  for (const auto& record : registry_->List(request->rescan())) {
    if (!record->ok() && !request->include_invalid()) continue;
    *response->add_models() = ToModelInfo(*record);
  }
  response->set_models_dir(registry_->models_dir());
  response->set_cache_dir(registry_->cache_dir());
  return grpc::Status::OK;
}

grpc::Status LoaderService::GetManifest(grpc::ServerContext*, const v1::GetManifestRequest* request,
                                        v1::Manifest* response) {
  auto record = registry_->FindValid(request->model_id());
  if (!record.ok()) return ToGrpcStatus(record.status());
  auto manifest = BuildManifest(**record, *request, options_.hostname, options_.host_id);
  if (!manifest.ok()) return ToGrpcStatus(manifest.status());
  *response = std::move(*manifest);
  return grpc::Status::OK;
}

grpc::Status LoaderService::Prepare(grpc::ServerContext* context, const v1::PrepareRequest* request,
                                    grpc::ServerWriter<v1::PrepareProgress>* writer) {
  auto spec = FromPrepareOptions(request->options());
  if (!spec.ok()) {  // a failed stream ends with a FAILED message, then the status
    v1::PrepareProgress failed;
    failed.set_phase(v1::PREPARE_PHASE_FAILED);
    failed.mutable_error()->set_code(static_cast<int32_t>(spec.status().code()));
    failed.mutable_error()->set_message(std::string(spec.status().message()));
    writer->Write(failed);
    return ToGrpcStatus(spec.status());
  }
  std::shared_ptr<PrepareJob> job =
      preparer_.Start(request->model_id(), *spec, request->options().verify());
  // Send every published change, and the current state at least once a second.
  // A caller that goes away detaches; the job goes on.
  uint64_t seen = 0;
  while (true) {
    for (const PrepareState& state : job->WaitForChange(seen, absl::Seconds(1))) {
      if (context->IsCancelled() || !writer->Write(ToPrepareProgress(state))) {
        return grpc::Status(grpc::StatusCode::CANCELLED, "caller went away");
      }
      seen = state.version;
      if (state.finished()) {
        return state.phase == PreparePhase::kDone ? grpc::Status::OK : ToGrpcStatus(state.error);
      }
    }
  }
}

grpc::Status LoaderService::ReadFile(grpc::ServerContext* context,
                                     const v1::ReadFileRequest* request,
                                     grpc::ServerWriter<v1::ReadResponse>* writer) {
  if (absl::Status s = CheckRelativeFileName(request->file()); !s.ok()) return ToGrpcStatus(s);
  auto record = registry_->FindValid(request->model_id());
  if (!record.ok()) return ToGrpcStatus(record.status());
  switch (request->location()) {
    case v1::LOCATION_UNSPECIFIED:  // the model dir, the only place files live today
    case v1::LOCATION_MODEL_DIR: break;
    case v1::LOCATION_CACHE_DIR:
      if (request->cache_key().empty()) {
        return ToGrpcStatus(InvalidArgumentError("cache_key is required for LOCATION_CACHE_DIR"));
      }
      return ToGrpcStatus(NotFoundError(
          "model '", request->model_id(), "' has no cache variant '", request->cache_key(),
          "' (converted variants arrive with the conversion cache; the pass-through variant ",
          PassThroughCacheKey(**record), " reads from LOCATION_MODEL_DIR)"));
    default: return ToGrpcStatus(InvalidArgumentError("unknown location ", request->location()));
  }
  const ModelFile* file = (*record)->FindFile(request->file());
  if (file == nullptr) {
    return ToGrpcStatus(NotFoundError("'", request->file(), "' is not a file of model '",
                                      request->model_id(), "' (see its manifest)"));
  }
  auto range =
      FileRange::Open(file->path, 0, file->size_bytes, request->offset(), request->length());
  if (!range.ok()) return ToGrpcStatus(Annotate(range.status(), file->file));
  return StreamRange(context, *range, request->chunk_size(), v1::ReadHeader(), writer);
}

grpc::Status LoaderService::ReadTensor(grpc::ServerContext* context,
                                       const v1::ReadTensorRequest* request,
                                       grpc::ServerWriter<v1::ReadResponse>* writer) {
  auto record = registry_->FindValid(request->model_id());
  if (!record.ok()) return ToGrpcStatus(record.status());
  const ModelRecord& model = **record;
  if (!request->cache_key().empty() && request->cache_key() != PassThroughCacheKey(model)) {
    return ToGrpcStatus(NotFoundError(
        "model '", model.id, "' has no prepared variant '", request->cache_key(),
        "' (converted variants arrive with the conversion cache; the pass-through variant is ",
        PassThroughCacheKey(model), ", or leave cache_key empty for the checkpoint's tensors)"));
  }
  const ModelTensor* tensor = model.FindTensor(request->name());
  if (tensor == nullptr) {
    return ToGrpcStatus(
        NotFoundError("model '", model.id, "' has no tensor '", request->name(), "'"));
  }
  auto range = FileRange::Open(tensor->path, tensor->offset, tensor->byte_length, request->offset(),
                               request->length());
  if (!range.ok()) return ToGrpcStatus(Annotate(range.status(), StrCat("tensor ", tensor->name)));
  v1::ReadHeader header;
  *header.mutable_tensor() = ToTensorEntry(model, *tensor);
  return StreamRange(context, *range, request->chunk_size(), std::move(header), writer);
}

grpc::Status LoaderService::StreamRange(grpc::ServerContext* context, const FileRange& range,
                                        uint32_t chunk_size, v1::ReadHeader header,
                                        grpc::ServerWriter<v1::ReadResponse>* writer) const {
  header.set_object_size(range.object_size());
  header.set_range_offset(range.range_offset());
  header.set_range_length(range.range_length());
  v1::ReadResponse message;
  *message.mutable_header() = std::move(header);
  if (!writer->Write(message)) return grpc::Status(grpc::StatusCode::CANCELLED, "reader went away");
  uint64_t sent = 0;
  auto crc =
      range.Stream(ChunkBytes(chunk_size),
                   [&](uint64_t offset, std::span<const std::byte> data, uint32_t chunk_crc) {
                     v1::DataChunk* chunk = message.mutable_chunk();
                     chunk->set_offset(offset);
                     chunk->set_data(reinterpret_cast<const char*>(data.data()), data.size());
                     chunk->set_crc32c(chunk_crc);
                     sent += data.size();
                     return !context->IsCancelled() && writer->Write(message);
                   });
  if (!crc.ok()) return ToGrpcStatus(crc.status());
  message.mutable_trailer()->set_bytes_sent(sent);
  message.mutable_trailer()->set_range_crc32c(*crc);
  writer->Write(message);
  return grpc::Status::OK;
}

}  // namespace krasis
