// Preparation jobs (see prepare_job.h).
#include "services/loader/prepare_job.h"

#include "common/models/model.h"

#include <algorithm>

#include "common/logging.h"
#include "common/status.h"
#include "services/loader/file_io.h"

namespace krasis {

// --- PrepareJob ---------------------------------------------------------------

PrepareJob::PrepareJob(std::string key)
    : key_(std::move(key)), start_(absl::Now()), phase_start_(start_), last_publish_(start_) {
  pending_.version = 1;
  history_.push_back(pending_);
}

PrepareState PrepareJob::WithElapsed(PrepareState state) const {
  if (!state.finished()) state.elapsed_seconds = absl::ToDoubleSeconds(absl::Now() - start_);
  return state;
}

PrepareState PrepareJob::Snapshot() const {
  std::lock_guard<std::mutex> lock(mu_);
  return WithElapsed(history_.back());
}

bool PrepareJob::finished() const {
  std::lock_guard<std::mutex> lock(mu_);
  return history_.back().finished();
}

std::vector<PrepareState> PrepareJob::WaitForChange(uint64_t seen, absl::Duration timeout) const {
  std::unique_lock<std::mutex> lock(mu_);
  cv_.wait_for(lock, absl::ToChronoNanoseconds(timeout),
               [&] { return history_.back().version > seen; });
  std::vector<PrepareState> out;
  for (const PrepareState& s : history_) {
    if (s.version > seen) out.push_back(s);
  }
  if (out.empty()) out.push_back(history_.back());
  out.back() = WithElapsed(out.back());
  return out;
}

void PrepareJob::PublishLocked(absl::Time now) {
  pending_.version = history_.back().version + 1;
  pending_.elapsed_seconds = absl::ToDoubleSeconds(now - start_);
  if (history_.back().phase == pending_.phase) {
    history_.back() = pending_;
  } else {
    history_.push_back(pending_);
  }
  last_publish_ = now;
  cv_.notify_all();
}

void PrepareJob::Update(const std::function<void(PrepareState&)>& change, bool publish) {
  std::lock_guard<std::mutex> lock(mu_);
  change(pending_);
  const absl::Time now = absl::Now();
  last_change_ = now;
  const double phase_seconds = absl::ToDoubleSeconds(now - phase_start_);
  if (phase_seconds > 0 && pending_.bytes_done > 0) {
    pending_.bytes_per_second = static_cast<double>(pending_.bytes_done) / phase_seconds;
    const uint64_t left = pending_.bytes_total - std::min(pending_.bytes_total, pending_.bytes_done);
    pending_.eta_seconds = static_cast<double>(left) / pending_.bytes_per_second;
  }
  if (publish || now - last_publish_ >= absl::Milliseconds(100)) PublishLocked(now);
}

void PrepareJob::EnterPhase(PreparePhase phase, uint64_t bytes_total, int64_t tensors_total) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (last_publish_ < last_change_) PublishLocked(absl::Now());  // throttled progress
    phase_start_ = absl::Now();
  }
  Update(
      [&](PrepareState& s) {
        s.phase = phase;
        s.bytes_done = 0;
        s.bytes_total = bytes_total;
        s.tensors_done = 0;
        s.tensors_total = tensors_total;
        s.current_tensor.clear();
        s.bytes_per_second = 0;
        s.eta_seconds = -1;
      },
      true);
}

void PrepareJob::Fail(const absl::Status& error) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (last_publish_ < last_change_) PublishLocked(absl::Now());  // throttled progress
  }
  Update(
      [&](PrepareState& s) {
        s.phase = PreparePhase::kFailed;
        s.error = error;
        s.eta_seconds = -1;
        s.elapsed_seconds = absl::ToDoubleSeconds(absl::Now() - start_);
      },
      true);
}

// --- Preparer -----------------------------------------------------------------

Preparer::Preparer(ModelRegistry* registry) : registry_(registry) {}

Preparer::~Preparer() {
  std::lock_guard<std::mutex> lock(mu_);
  for (auto& [job, thread] : threads_) job->cancel_ = true;
  for (auto& [job, thread] : threads_) thread.join();
}

namespace {

bool Quantized(WeightFormat f) { return f == WeightFormat::kInt4GroupSym || f == WeightFormat::kInt8GroupSym; }

// The conversions built so far: decode experts to INT4/INT8 (from the
// checkpoint or a GGUF file); prefill (GPU) experts as stored or INT4/INT8 --
// the same cache files the decode worker maps (the GPU dequantizes them), built
// too when they are another format; dense weights as stored.
bool ConversionSupported(const VariantSpec& spec) {
  const bool prefill_ok = spec.prefill_experts == WeightFormat::kAsStored || Quantized(spec.prefill_experts);
  return Quantized(spec.decode_experts) && prefill_ok && spec.dense == WeightFormat::kAsStored;
}

// What a variant needing an unbuilt conversion answers.
absl::Status ConversionNotImplemented(const ModelRecord& record, const ResolvedVariant& variant) {
  return UnimplementedError(
      "variant ", variant.cache_key, " of model '", record.id, "' needs ", variant.conversion,
      "; the conversion cache builds INT4/INT8 decode experts (prefill experts as stored, INT4 or INT8; ",
      "dense weights as stored); other formats are not implemented yet. The pass-through variant ",
      PassThroughCacheKey(record), " needs no conversion");
}

}  // namespace

std::shared_ptr<PrepareJob> Preparer::Start(const std::string& model_id, const VariantSpec& spec,
                                            bool verify) {
  std::lock_guard<std::mutex> lock(mu_);
  // Reap finished jobs.
  for (auto it = jobs_.begin(); it != jobs_.end();) {
    it = it->second->finished() ? jobs_.erase(it) : ++it;
  }
  for (auto it = threads_.begin(); it != threads_.end();) {
    if (!it->first->finished()) {
      ++it;
      continue;
    }
    it->second.join();
    it = threads_.erase(it);
  }
  auto failed = [&](const absl::Status& error) {
    auto job = std::make_shared<PrepareJob>(StrCat("failed/", ++next_failed_id_));
    job->Fail(error);
    return job;
  };
  auto record = registry_->FindValid(model_id);
  if (!record.ok()) return failed(record.status());
  auto resolved = ResolveVariant(**record, spec);
  if (!resolved.ok()) return failed(resolved.status());
  if (resolved->needs_conversion && !ConversionSupported(spec)) {
    return failed(ConversionNotImplemented(**record, *resolved));
  }

  const std::string key = StrCat(model_id, "/", resolved->cache_key, verify ? "+verify" : "");
  if (auto it = jobs_.find(key); it != jobs_.end()) return it->second;
  auto job = std::make_shared<PrepareJob>(key);
  jobs_[key] = job;
  threads_.emplace_back(
      job, std::thread([this, job, model_id, spec, verify] { Run(*job, model_id, spec, verify); }));
  return job;
}

void Preparer::Run(PrepareJob& job, const std::string& model_id, const VariantSpec& spec,
                   bool verify) {
  std::unique_lock<std::mutex> slot(slot_);
  if (job.cancel_) return job.Fail(absl::CancelledError("the loader is shutting down"));
  job.EnterPhase(PreparePhase::kValidating, 0, 0);
  auto record = registry_->FindValid(model_id);
  if (!record.ok()) return job.Fail(record.status());
  auto resolved = ResolveVariant(**record, spec);
  if (!resolved.ok()) return job.Fail(resolved.status());
  if (resolved->needs_conversion && !ConversionSupported(spec)) {
    return job.Fail(ConversionNotImplemented(**record, *resolved));
  }
  const ModelRecord& model = **record;
  if (resolved->needs_conversion) return Convert(job, model, spec, *resolved);
  job.Update(
      [&](PrepareState& s) {
        s.bytes_total = s.bytes_done = model.size_bytes;
        s.tensors_total = s.tensors_done = static_cast<int64_t>(model.tensors.size());
      },
      true);
  if (verify) {
    absl::Status s = Verify(job, model);
    if (!s.ok()) return job.Fail(s);
  }
  job.EnterPhase(PreparePhase::kFinalizing, 0, 0);
  job.Update(
      [&](PrepareState& s) {
        s.phase = PreparePhase::kDone;
        s.cache_key = resolved->cache_key;
        s.cache_dir.clear();  // the pass-through variant is the model dir itself
        s.already_prepared = true;
        s.bytes_written = 0;
        s.cache_size_bytes = 0;
      },
      true);
  KLOG_INFO("prepared {} (pass-through{})", job.key(), verify ? ", checksums verified" : "");
}

void Preparer::Convert(PrepareJob& job, const ModelRecord& model, const VariantSpec& spec,
                       const ResolvedVariant& variant) {
  // The decode experts' files, then the prefill experts' when they are another
  // quantized format or group size (progress runs over both).
  auto to_expert = [](WeightFormat f) { return f == WeightFormat::kInt8GroupSym ? ExpertFormat::kInt8 : ExpertFormat::kInt4; };
  const int64_t group = spec.decode_group_size > 0 ? spec.decode_group_size : kDefaultGroupSize;
  std::vector<std::pair<ExpertFormat, int64_t>> builds = {{to_expert(spec.decode_experts), group}};
  if (Quantized(spec.prefill_experts)) {
    const std::pair<ExpertFormat, int64_t> prefill = {
        to_expert(spec.prefill_experts), spec.prefill_group_size > 0 ? spec.prefill_group_size : kDefaultGroupSize};
    if (prefill != builds[0]) builds.push_back(prefill);
  }
  auto loaded = LoadModel(model.path);
  if (!loaded.ok()) return job.Fail(loaded.status());
  int built = 0;
  uint64_t written = 0;
  job.EnterPhase(PreparePhase::kConverting, model.size_bytes, 0);
  absl::StatusOr<ExpertOptions> options;
  for (size_t b = 0; b < builds.size(); ++b) {
    const ExpertFormat format = builds[b].first;
    options = CachedExpertOptions(model.path, registry_->cache_dir(), format, builds[b].second,
                                  spec.gguf_experts_path);
    if (!options.ok()) return job.Fail(options.status());
    options->layers_built = &built;
    const int passes = static_cast<int>(builds.size());
    options->progress = [&, b, passes](int done, int total, uint64_t bytes) {
      written += bytes;
      job.Update(
          [&](PrepareState& s) {
            s.tensors_total = static_cast<int64_t>(total) * passes;
            s.tensors_done = static_cast<int64_t>(b) * total + done;
            s.bytes_done = model.size_bytes * static_cast<uint64_t>(s.tensors_done) /
                           static_cast<uint64_t>(std::max<int64_t>(s.tensors_total, 1));
            s.current_tensor = StrCat("model.layers (", ExpertFormatName(format), " MoE layer ", done, " of ", total, ")");
          },
          true);
    };
    absl::Status s = SetExpertFormat(**loaded, *options);
    if (!s.ok()) return job.Fail(s);
  }
  options = CachedExpertOptions(model.path, registry_->cache_dir(), builds[0].first, builds[0].second,
                                spec.gguf_experts_path);
  if (!options.ok()) return job.Fail(options.status());
  job.EnterPhase(PreparePhase::kFinalizing, 0, 0);
  job.Update(
      [&](PrepareState& st) {
        st.phase = PreparePhase::kDone;
        st.cache_key = variant.cache_key;
        st.cache_dir = options->cache_dir;
        st.already_prepared = built == 0;
        st.bytes_written = built == 0 ? 0 : written;
        st.cache_size_bytes = written;
      },
      true);
  KLOG_INFO("prepared {}: {} MoE layers {} in {}", job.key(), built > 0 ? "built" : "already there",
            ExpertFormatName(builds[0].first), options->cache_dir);
}

absl::Status Preparer::Verify(PrepareJob& job, const ModelRecord& record) {
  uint64_t total = 0;
  for (const auto* files : {&record.weight_files, &record.tokenizer_files}) {
    for (const ModelFile& f : *files) total += f.size_bytes;
  }
  job.EnterPhase(PreparePhase::kVerifying, total, static_cast<int64_t>(record.tensors.size()));
  std::map<std::string, std::vector<const ModelTensor*>> by_file;
  for (const ModelTensor& t : record.tensors) by_file[t.file].push_back(&t);
  std::map<std::string, uint32_t> file_crcs, tensor_crcs;
  uint64_t bytes_base = 0;
  int64_t tensors_base = 0;
  for (const auto* files : {&record.weight_files, &record.tokenizer_files}) {
    for (const ModelFile& f : *files) {
      std::vector<const ModelTensor*>& tensors = by_file[f.file];
      std::sort(tensors.begin(), tensors.end(), [](const ModelTensor* a, const ModelTensor* b) {
        return std::pair(a->offset, a->byte_length) < std::pair(b->offset, b->byte_length);
      });
      std::vector<FileSpan> spans;
      std::vector<const ModelTensor*> spanned;
      for (const ModelTensor* t : tensors) {
        if (t->byte_length == 0) {
          tensor_crcs[t->name] = 0;  // CRC-32C of no bytes
          continue;
        }
        spans.push_back({t->offset, t->byte_length});
        spanned.push_back(t);
      }
      auto progress = [&](uint64_t bytes, size_t span) {
        job.Update(
            [&](PrepareState& s) {
              s.bytes_done = bytes_base + bytes;
              s.tensors_done = tensors_base + static_cast<int64_t>(span);
              s.current_tensor = span < spanned.size() ? spanned[span]->name : std::string();
            },
            false);
        return !job.cancel_;
      };
      ASSIGN_OR_RETURN(FileChecksums sums, ChecksumFile(f.path, spans, progress));
      if (f.crc32c && *f.crc32c != sums.file_crc32c) {
        return DataLossError(f.path, ": CRC-32C is now ", sums.file_crc32c, ", was ", *f.crc32c,
                             " with the same size and mtime: the file is corrupt");
      }
      file_crcs[f.file] = sums.file_crc32c;
      for (size_t i = 0; i < spanned.size(); ++i) {
        tensor_crcs[spanned[i]->name] = sums.span_crc32c[i];
      }
      bytes_base += f.size_bytes;
      tensors_base += static_cast<int64_t>(tensors.size());
    }
  }
  if (!registry_->StoreChecksums(record.id, record.fingerprint, file_crcs, tensor_crcs)) {
    return absl::AbortedError(StrCat("the files of model '", record.id,
                                     "' changed during verification; run Prepare again"));
  }
  return absl::OkStatus();
}

}  // namespace krasis
