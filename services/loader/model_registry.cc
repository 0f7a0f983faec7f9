// The loader's model registry (see model_registry.h).
#include "services/loader/model_registry.h"

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <set>

#include "common/logging.h"
#include "common/status.h"

namespace krasis {
namespace {

namespace fs = std::filesystem;

constexpr int kMaxScanDepth = 3;

std::string AbsoluteDir(const std::string& dir) {
  std::error_code ec;
  std::string out = fs::absolute(dir, ec).lexically_normal().string();
  while (out.size() > 1 && out.back() == '/') out.pop_back();
  return out;
}

bool IsModelDir(const fs::path& dir) {
  std::error_code ec;
  if (fs::exists(dir / "config.json", ec)) return true;
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    const std::string name = it->path().filename().string();
    if (name.ends_with(".safetensors") || name == "model.safetensors.index.json") return true;
  }
  return false;
}

// Appends the model directories under `dir`, sorted.
void Walk(const fs::path& dir, int depth, std::vector<fs::path>& out) {
  std::error_code ec;
  std::vector<fs::path> children;
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    if (it->path().filename().string().starts_with(".")) continue;
    if (it->is_directory(ec)) children.push_back(it->path());
  }
  std::sort(children.begin(), children.end());
  for (const fs::path& child : children) {
    if (IsModelDir(child)) {
      out.push_back(child);
    } else if (depth + 1 < kMaxScanDepth) {
      Walk(child, depth + 1, out);
    }
  }
}

void LogInspection(const ModelRecord& record) {
  if (record.ok()) {
    KLOG_INFO("model {}: {} ({}), {} layers, {} experts, {} params ({} active), {} bytes",
              record.id, record.architecture, record.model_type, record.num_layers,
              record.num_experts, record.total_params, record.active_params, record.size_bytes);
  } else {
    KLOG_WARN("model {} is invalid: {}", record.id, std::string(record.status.message()));
  }
}

}  // namespace

std::string DefaultKrasisDir(std::string_view leaf) {
  const char* home = std::getenv("HOME");
  return (fs::path(home != nullptr && *home != '\0' ? home : "/tmp") / ".krasis" / leaf).string();
}

ModelRegistry::ModelRegistry(RegistryOptions options)
    : models_dir_(AbsoluteDir(options.models_dir.empty() ? DefaultKrasisDir("models")
                                                         : options.models_dir)),
      cache_dir_(
          AbsoluteDir(options.cache_dir.empty() ? DefaultKrasisDir("cache") : options.cache_dir)),
      scan_max_age_(options.scan_max_age),
      recheck_interval_(options.recheck_interval) {
  for (const std::string& dir : options.model_dirs) explicit_dirs_.push_back(AbsoluteDir(dir));
}

std::vector<ModelRegistry::Candidate> ModelRegistry::Candidates() const {
  std::vector<Candidate> out;
  for (const std::string& dir : explicit_dirs_) {
    out.push_back({fs::path(dir).filename().string(), dir});
  }
  std::vector<fs::path> found;
  std::error_code ec;
  if (fs::is_directory(models_dir_, ec)) Walk(models_dir_, 0, found);
  for (const fs::path& dir : found) {
    out.push_back({dir.lexically_relative(models_dir_).generic_string(), dir.string()});
  }
  return out;
}

std::shared_ptr<const ModelRecord> ModelRegistry::Refresh(
    const std::string& id, const std::string& dir, std::shared_ptr<const ModelRecord> previous) {
  if (previous && previous->path == dir && FingerprintDir(dir) == previous->fingerprint) {
    return previous;
  }
  inspections_.fetch_add(1);
  auto record = std::make_shared<const ModelRecord>(InspectModel(id, dir));
  LogInspection(*record);
  return record;
}

void ModelRegistry::Scan() {
  std::lock_guard<std::mutex> scan_lock(scan_mu_);
  std::map<std::string, std::shared_ptr<const ModelRecord>, std::less<>> old, fresh;
  {
    std::lock_guard<std::mutex> lock(mu_);
    old = models_;
  }
  std::set<std::string> paths;
  for (const Candidate& c : Candidates()) {
    // A --model DIR inside the models dir is listed once, under its explicit id.
    if (!paths.insert(c.dir).second) continue;
    if (fresh.count(c.id) != 0) {
      KLOG_WARN("model dir {} has the id {} of another model ({}); skipped", c.dir, c.id,
                fresh[c.id]->path);
      continue;
    }
    auto it = old.find(c.id);
    fresh[c.id] = Refresh(c.id, c.dir, it == old.end() ? nullptr : it->second);
  }
  std::lock_guard<std::mutex> lock(mu_);
  models_ = std::move(fresh);
  last_scan_ = absl::Now();
}

std::vector<std::shared_ptr<const ModelRecord>> ModelRegistry::List(bool rescan) {
  bool stale;
  {
    std::lock_guard<std::mutex> lock(mu_);
    stale = absl::Now() - last_scan_ > scan_max_age_;
  }
  if (rescan || stale) Scan();
  std::vector<std::shared_ptr<const ModelRecord>> out;
  std::lock_guard<std::mutex> lock(mu_);
  for (const auto& [id, record] : models_) out.push_back(record);
  return out;  // std::map keeps them sorted by id
}

absl::StatusOr<std::shared_ptr<const ModelRecord>> ModelRegistry::Find(std::string_view id) {
  auto lookup = [&]() -> std::shared_ptr<const ModelRecord> {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = models_.find(id);
    return it == models_.end() ? nullptr : it->second;
  };
  auto not_found = [&] {
    return NotFoundError("unknown model '", id, "' (no such model under ", models_dir_,
                         " and none registered with --model)");
  };
  std::shared_ptr<const ModelRecord> previous = lookup();
  if (previous == nullptr) {
    Scan();
    previous = lookup();
    if (previous == nullptr) return not_found();
  }
  const absl::Time now = absl::Now();
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = last_checked_.find(id);
    if (it != last_checked_.end() && now - it->second < recheck_interval_) return previous;
    last_checked_[std::string(id)] = now;
  }
  std::shared_ptr<const ModelRecord> current = Refresh(previous->id, previous->path, previous);
  const bool is_explicit = std::find(explicit_dirs_.begin(), explicit_dirs_.end(), current->path) !=
                           explicit_dirs_.end();
  if (!current->fingerprint.exists && !is_explicit) {  // a scanned model was removed
    Scan();
    return not_found();
  }
  if (current != previous) {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = models_.find(id);
    if (it != models_.end() && it->second == previous) it->second = current;
  }
  return current;
}

absl::StatusOr<std::shared_ptr<const ModelRecord>> ModelRegistry::FindValid(std::string_view id) {
  ASSIGN_OR_RETURN(std::shared_ptr<const ModelRecord> record, Find(id));
  if (!record->ok()) {
    return FailedPreconditionError("model '", id, "' is invalid: ", record->status.message());
  }
  return record;
}

bool ModelRegistry::StoreChecksums(std::string_view id, const DirFingerprint& fingerprint,
                                   const std::map<std::string, uint32_t>& file_crcs,
                                   const std::map<std::string, uint32_t>& tensor_crcs) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = models_.find(id);
  if (it == models_.end() || !(it->second->fingerprint == fingerprint)) return false;
  auto updated = std::make_shared<ModelRecord>(*it->second);
  for (auto* files : {&updated->weight_files, &updated->tokenizer_files}) {
    for (ModelFile& f : *files) {
      if (auto c = file_crcs.find(f.file); c != file_crcs.end()) f.crc32c = c->second;
    }
  }
  for (ModelTensor& t : updated->tensors) {
    if (auto c = tensor_crcs.find(t.name); c != tensor_crcs.end()) t.crc32c = c->second;
  }
  it->second = std::move(updated);
  return true;
}

}  // namespace krasis
