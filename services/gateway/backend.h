// The gateway's view of the workers: decode workers (one model each) and
// prefill workers, reached over gRPC. It routes a request to the decode worker
// holding the longest cached prefix of its prompt (LookupPrefix), weighed
// against load; sends a long uncached suffix through a prefill worker first
// (which ships the KV to that decode worker); streams the generation; retries on
// another worker when a worker fails before the first token; and cancels the
// worker's work when the client goes away. No HTTP here.
#pragma once

#include <atomic>
#include <functional>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "krasis/v1/decode.grpc.pb.h"
#include "krasis/v1/prefill.grpc.pb.h"

namespace krasis::gateway {

struct BackendOptions {
  std::vector<std::string> decode_addresses;
  std::vector<std::string> prefill_addresses;
  // Uncached prompt tokens at or above which a prefill worker is used.
  int64_t prefill_threshold = 512;
  // Requests in flight at once; more get 429.
  int max_in_flight = 256;
  // A cached token is worth this many in-flight requests less of load.
  double tokens_per_request = 256.0;
};

// How a request was served (for usage, metrics and logs).
struct RouteInfo {
  std::string decode_address;
  int64_t cached_tokens = 0;
  bool prefilled_remotely = false;
  int attempts = 0;
};

class Backend {
 public:
  Backend(BackendOptions options, std::string model_id);

  // Reserves a slot; false when max_in_flight requests are running (429).
  bool Admit();
  void Release();
  int in_flight() const { return in_flight_.load(); }

  // Streams the generation of `prompt` to `on_event` (return false to stop:
  // the work is cancelled). Retries on another decode worker while nothing was
  // delivered. `cancelled` is polled; when it turns true the call is cancelled.
  // Errors: kUnavailable when no worker could serve it, or the worker's error.
  absl::Status Generate(const std::string& request_id, const std::vector<int32_t>& prompt,
                        const v1::SamplingParams& sampling,
                        const std::function<bool(const v1::GenerateResponse&)>& on_event,
                        const std::atomic<bool>& cancelled, RouteInfo* route);

  // Stats of every decode worker (for /metrics); unreachable ones are skipped.
  std::vector<v1::StatsResponse> DecodeStats();

 private:
  struct Worker {
    std::string address;
    std::unique_ptr<v1::Decode::Stub> decode;
    std::unique_ptr<v1::Prefill::Stub> prefill;
    std::atomic<int> load{0};
  };
  struct Choice {
    int index = -1;
    v1::LookupPrefixResponse lookup;
  };
  Choice ChooseDecode(const std::vector<int32_t>& prompt, const std::set<int>& exclude);
  // Runs a remote prefill into decode worker `d`; false if it could not (the
  // decode worker then prefills itself).
  bool RemotePrefill(const std::string& request_id, const std::vector<int32_t>& prompt, const Choice& d,
                     const std::atomic<bool>& cancelled);

  BackendOptions options_;
  std::string model_id_;
  std::vector<std::unique_ptr<Worker>> decode_;
  std::vector<std::unique_ptr<Worker>> prefill_;
  std::atomic<int> in_flight_{0};
  std::atomic<unsigned> next_prefill_{0};
};

}  // namespace krasis::gateway
