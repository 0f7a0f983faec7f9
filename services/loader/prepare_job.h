// Loader.Prepare as an engine (no gRPC): background preparation jobs that
// callers watch for progress.
//
// A job validates the model, resolves the requested variant and, when asked to
// verify, reads every file of the model once and records the CRC-32C of each
// file and tensor (they then appear in manifests). Phases: QUEUED (one job
// works at a time), VALIDATING, VERIFYING (with `verify`), FINALIZING, then DONE
// or FAILED. Several callers asking for the same model and variant share one
// job; a caller that stops watching leaves the job running.
//
// Conversion: decode experts to INT4/INT8 (from the checkpoint or a GGUF file)
// are built into the conversion cache (common/quant/expert_cache.h, phase
// CONVERTING, one "tensor" per MoE layer); other conversions (GPU-only formats,
// dense weights) fail with UNIMPLEMENTED naming what would be converted. The pass-through variant (every
// format as stored, e.g. PrepareOptions{decode_expert_format: BF16} for a BF16
// checkpoint) needs no cache and completes with already_prepared = true (and
// `force` changes nothing: there is nothing to convert again).
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "services/loader/model_registry.h"
#include "services/loader/variant.h"

namespace krasis {

enum class PreparePhase {
  kQueued,
  kValidating,
  kConverting,
  kVerifying,
  kFinalizing,
  kDone,
  kFailed
};

// A snapshot of a job's progress (mirrors krasis.v1.PrepareProgress/PrepareResult).
struct PrepareState {
  PreparePhase phase = PreparePhase::kQueued;
  uint64_t bytes_done = 0;  // in this phase
  uint64_t bytes_total = 0;
  int64_t tensors_done = 0;
  int64_t tensors_total = 0;
  std::string current_tensor;
  double bytes_per_second = 0;
  double eta_seconds = -1;  // negative: unknown
  double elapsed_seconds = 0;
  // Result (phase kDone).
  std::string cache_key;
  std::string cache_dir;
  bool already_prepared = false;
  uint64_t bytes_written = 0;
  uint64_t cache_size_bytes = 0;
  // Why it failed (phase kFailed).
  absl::Status error;
  // Grows with every published change.
  uint64_t version = 0;

  bool finished() const { return phase == PreparePhase::kDone || phase == PreparePhase::kFailed; }
};

class PrepareJob {
 public:
  explicit PrepareJob(std::string key);

  // "<model id>/<cache key>[+verify]", or a unique key for a job that failed
  // before it could resolve one.
  const std::string& key() const { return key_; }
  PrepareState Snapshot() const;
  // Waits until a state newer than version `seen` is published, or `timeout`.
  // Returns, oldest first, the latest state of every phase that changed after
  // `seen` (so no phase is missed, however short), or when nothing changed the
  // current state with its elapsed time brought up to date. Never empty.
  std::vector<PrepareState> WaitForChange(uint64_t seen, absl::Duration timeout) const;
  bool finished() const;

 private:
  friend class Preparer;
  // Applies `change` to the state and publishes it (wakes watchers) when
  // `publish` or when the last publication is 100 ms old.
  void Update(const std::function<void(PrepareState&)>& change, bool publish);
  // Publishes the last state of the current phase, then starts `phase`.
  void EnterPhase(PreparePhase phase, uint64_t bytes_total, int64_t tensors_total);
  void Fail(const absl::Status& error);
  void PublishLocked(absl::Time now);
  PrepareState WithElapsed(PrepareState state) const;

  const std::string key_;
  const absl::Time start_;
  mutable std::mutex mu_;
  mutable std::condition_variable cv_;
  // Published states: the latest of each phase, in order (back() is current).
  std::vector<PrepareState> history_;
  PrepareState pending_;  // latest, published at most every 100 ms
  absl::Time phase_start_;
  absl::Time last_publish_;
  absl::Time last_change_;  // of pending_
  std::atomic<bool> cancel_{false};
};

class Preparer {
 public:
  // `registry` must outlive the Preparer.
  explicit Preparer(ModelRegistry* registry);
  // Stops running jobs (they fail with CANCELLED) and joins their threads.
  ~Preparer();
  Preparer(const Preparer&) = delete;
  Preparer& operator=(const Preparer&) = delete;

  // Starts (or joins) the preparation of `model_id` in variant `spec`. Never
  // null; problems found up front come back as an already failed job.
  std::shared_ptr<PrepareJob> Start(const std::string& model_id, const VariantSpec& spec,
                                    bool verify);

 private:
  void Run(PrepareJob& job, const std::string& model_id, const VariantSpec& spec, bool verify);
  absl::Status Verify(PrepareJob& job, const ModelRecord& record);
  // Builds the conversion cache of a quantized variant (decode experts).
  void Convert(PrepareJob& job, const ModelRecord& model, const VariantSpec& spec, const ResolvedVariant& variant);

  ModelRegistry* registry_;
  std::mutex slot_;  // held by the job that is working; the others are QUEUED
  std::mutex mu_;
  std::map<std::string, std::shared_ptr<PrepareJob>> jobs_;  // unfinished, by key
  std::vector<std::pair<std::shared_ptr<PrepareJob>, std::thread>> threads_;
  uint64_t next_failed_id_ = 0;
};

}  // namespace krasis
