// Model directories from the loader (see model_fetch.h).
#include "services/loader/model_fetch.h"

#include <filesystem>
#include <fstream>
#include <thread>

#include "common/logging.h"
#include "common/status.h"
#include "grpcpp/grpcpp.h"
#include "krasis/v1/loader.grpc.pb.h"
#include "services/loader/crc32c.h"
#include "services/loader/loader_service.h"
#include "services/rpc/grpc_status.h"

namespace krasis {

namespace fs = std::filesystem;

namespace {

// Every file of the manifest (weights, config, tokenizer, template).
std::vector<v1::FileEntry> Files(const v1::Manifest& m) {
  std::vector<v1::FileEntry> files(m.weight_files().begin(), m.weight_files().end());
  files.insert(files.end(), m.tokenizer_files().begin(), m.tokenizer_files().end());
  return files;
}

bool SameHost(const v1::Manifest& m, const std::string& local_host_id) {
  const std::string here = local_host_id.empty() ? ReadMachineId() : local_host_id;
  if (here.empty() || here != m.host_id()) return false;
  for (const auto& f : Files(m)) {
    std::error_code ec;
    if (fs::file_size(f.path(), ec) != f.size_bytes() || ec) return false;
  }
  return true;
}

absl::StatusOr<uint32_t> FileCrc(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return InternalError("cannot read ", path.string());
  std::vector<char> buf(1 << 20);
  uint32_t crc = 0;
  while (in) {
    in.read(buf.data(), static_cast<std::streamsize>(buf.size()));
    crc = Crc32cExtend(crc, buf.data(), static_cast<size_t>(in.gcount()));
  }
  return crc;
}

// Streams one file into `dest` (via dest.part), checking every CRC-32C.
absl::Status FetchFile(v1::Loader::Stub& stub, const std::string& model_id, const v1::FileEntry& entry,
                       const fs::path& dest) {
  fs::path part = dest;
  part += ".part";
  std::ofstream out(part, std::ios::binary | std::ios::trunc);
  if (!out) return InternalError("cannot write ", part.string());
  v1::ReadFileRequest req;
  req.set_model_id(model_id);
  req.set_location(entry.location());
  req.set_file(entry.file());
  grpc::ClientContext ctx;
  auto reader = stub.ReadFile(&ctx, req);
  v1::ReadResponse resp;
  uint64_t next = 0;
  uint32_t crc = 0;
  std::optional<v1::ReadTrailer> trailer;
  while (reader->Read(&resp)) {
    if (resp.has_chunk()) {
      const auto& c = resp.chunk();
      if (c.offset() != next) {
        ctx.TryCancel();
        return DataLossError(entry.file(), ": chunk at offset ", c.offset(), ", expected ", next);
      }
      if (Crc32c(c.data()) != c.crc32c()) {
        ctx.TryCancel();
        return DataLossError(entry.file(), ": chunk at offset ", c.offset(), " fails its CRC-32C");
      }
      out.write(c.data().data(), static_cast<std::streamsize>(c.data().size()));
      crc = Crc32cExtend(crc, c.data().data(), c.data().size());
      next += c.data().size();
    } else if (resp.has_trailer()) {
      trailer = resp.trailer();
    }
  }
  RETURN_IF_ERROR(FromGrpcStatus(reader->Finish()));
  out.close();
  if (!out) return InternalError("cannot write ", part.string());
  if (!trailer || trailer->bytes_sent() != next || next != entry.size_bytes() || trailer->range_crc32c() != crc) {
    return DataLossError(entry.file(), ": received ", next, " of ", entry.size_bytes(),
                         " bytes or a whole-file CRC-32C that does not match");
  }
  if (entry.has_crc32c() && entry.crc32c() != crc) {
    return DataLossError(entry.file(), ": CRC-32C differs from the manifest's");
  }
  std::error_code ec;
  fs::rename(part, dest, ec);
  if (ec) return InternalError("cannot rename ", part.string(), ": ", ec.message());
  return absl::OkStatus();
}

// Whether `path` already holds the entry (size, and the CRC when the manifest
// has one).
bool Complete(const fs::path& path, const v1::FileEntry& entry) {
  std::error_code ec;
  if (fs::file_size(path, ec) != entry.size_bytes() || ec) return false;
  if (!entry.has_crc32c()) return true;
  auto crc = FileCrc(path);
  return crc.ok() && *crc == entry.crc32c();
}

absl::Status WriteText(const fs::path& path, const std::string& text) {
  std::ofstream out(path, std::ios::trunc);
  out << text;
  return out ? absl::OkStatus() : InternalError("cannot write ", path.string());
}

}  // namespace

std::string DefaultFetchDir() {
  const char* home = std::getenv("HOME");
  return home != nullptr && *home != '\0' ? (fs::path(home) / ".krasis" / "fetched").string() : "/tmp/krasis-fetched";
}

absl::StatusOr<std::string> FetchModelFromLoader(const ModelFetchOptions& options) {
  if (options.model_id.empty()) return InvalidArgumentError("--model-id is needed with --loader");
  auto stub = v1::Loader::NewStub(grpc::CreateChannel(options.loader_address, grpc::InsecureChannelCredentials()));
  v1::GetManifestRequest req;
  req.set_model_id(options.model_id);
  req.set_target(v1::TARGET_SOURCE);
  v1::Manifest manifest;
  auto deadline = std::chrono::steady_clock::now() + options.wait;
  for (;;) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
    grpc::Status s = stub->GetManifest(&ctx, req, &manifest);
    if (s.ok()) break;
    if (s.error_code() != grpc::StatusCode::UNAVAILABLE) {
      return FromGrpcStatus(s);
    }
    if (std::chrono::steady_clock::now() > deadline) {
      return absl::DeadlineExceededError(StrCat("the loader at ", options.loader_address, " did not answer within ",
                                                options.wait.count(), " s: ", s.error_message()));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(250));
  }
  if (SameHost(manifest, options.local_host_id)) {
    KLOG_INFO("model {}: the loader is on this host, using {} directly", options.model_id, manifest.model_dir());
    return manifest.model_dir();
  }
  fs::path dir = fs::path(options.fetch_dir) / options.model_id;
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) return InternalError("cannot create ", dir.string(), ": ", ec.message());
  uint64_t fetched = 0;
  bool has_config = false;
  for (const auto& f : Files(manifest)) {
    RETURN_IF_ERROR(CheckRelativeFileName(f.file()));
    fs::path dest = dir / f.file();
    has_config |= f.file() == "config.json";
    if (Complete(dest, f)) continue;
    fs::create_directories(dest.parent_path(), ec);
    KLOG_INFO("model {}: fetching {} ({} bytes) from the loader at {}", options.model_id, f.file(), f.size_bytes(),
              options.loader_address);
    RETURN_IF_ERROR(FetchFile(*stub, options.model_id, f, dest));
    fetched += f.size_bytes();
  }
  if (!has_config) RETURN_IF_ERROR(WriteText(dir / "config.json", manifest.config_json()));
  if (!manifest.generation_config_json().empty() && !fs::exists(dir / "generation_config.json")) {
    RETURN_IF_ERROR(WriteText(dir / "generation_config.json", manifest.generation_config_json()));
  }
  KLOG_INFO("model {}: {} ready ({} bytes fetched)", options.model_id, dir.string(), fetched);
  return dir.string();
}

absl::StatusOr<std::string> ResolveModelDir(const std::string& model_dir, const std::string& loader_address,
                                            const std::string& model_id, const std::string& fetch_dir) {
  if (!model_dir.empty()) return model_dir;
  if (loader_address.empty()) return std::string();
  ModelFetchOptions options;
  options.loader_address = loader_address;
  options.model_id = model_id;
  options.fetch_dir = fetch_dir.empty() ? DefaultFetchDir() : fetch_dir;
  return FetchModelFromLoader(options);
}

void AddModelSourceOptions(boost::program_options::options_description& options, ModelSource* source) {
  namespace po = boost::program_options;
  options.add_options()
      ("loader", po::value(&source->loader),
       "krasis-loader address to get the model from (instead of --model; needs --model-id)")
      ("fetch-dir", po::value(&source->fetch_dir),
       "where a model from a loader on another host is copied (default ~/.krasis/fetched)");
}

bool ResolveModelDirOrLog(const ModelSource& source, const std::string& model_id, std::string* model_dir) {
  auto dir = ResolveModelDir(*model_dir, source.loader, model_id, source.fetch_dir);
  if (!dir.ok()) {
    KLOG_ERROR("cannot get model '{}' from the loader at {}: {}", model_id, source.loader, dir.status().ToString());
    return false;
  }
  *model_dir = *dir;
  return true;
}

}  // namespace krasis
