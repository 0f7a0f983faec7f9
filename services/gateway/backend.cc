// Worker routing and generation calls (see backend.h).
#include "services/gateway/backend.h"

#include <chrono>
#include <thread>

#include "common/logging.h"
#include "common/status.h"
#include "grpcpp/grpcpp.h"
#include "services/rpc/grpc_status.h"

namespace krasis::gateway {

namespace {
std::shared_ptr<grpc::Channel> Channel(const std::string& address) {
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(256 << 20);
  args.SetMaxSendMessageSize(256 << 20);
  // A worker that crashed is back within seconds under the supervisor (or
  // systemd); reconnect soon rather than after gRPC's default backoff (up to 2 min).
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 250);
  args.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, 250);
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 2000);
  return grpc::CreateCustomChannel(address, grpc::InsecureChannelCredentials(), args);
}

// Polls `cancelled` while a blocking call runs, and cancels the call.
class CancelWatch {
 public:
  CancelWatch(grpc::ClientContext* ctx, const std::atomic<bool>& cancelled) {
    thread_ = std::thread([this, ctx, &cancelled] {
      while (!done_.load()) {
        if (cancelled.load()) {
          ctx->TryCancel();
          return;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
      }
    });
  }
  ~CancelWatch() {
    done_ = true;
    thread_.join();
  }

 private:
  std::atomic<bool> done_{false};
  std::thread thread_;
};
}  // namespace

Backend::Backend(BackendOptions options, std::string model_id)
    : options_(std::move(options)), model_id_(std::move(model_id)) {
  for (const auto& a : options_.decode_addresses) {
    auto w = std::make_unique<Worker>();
    w->address = a;
    w->decode = v1::Decode::NewStub(Channel(a));
    decode_.push_back(std::move(w));
  }
  for (const auto& a : options_.prefill_addresses) {
    auto w = std::make_unique<Worker>();
    w->address = a;
    w->prefill = v1::Prefill::NewStub(Channel(a));
    prefill_.push_back(std::move(w));
  }
}

bool Backend::Admit() {
  if (in_flight_.fetch_add(1) >= options_.max_in_flight) {
    in_flight_.fetch_sub(1);
    return false;
  }
  return true;
}

void Backend::Release() { in_flight_.fetch_sub(1); }

Backend::Choice Backend::ChooseDecode(const std::vector<int32_t>& prompt, const std::set<int>& exclude) {
  Choice best;
  double best_score = -1e300;
  for (size_t i = 0; i < decode_.size(); ++i) {
    if (exclude.contains(static_cast<int>(i))) continue;
    Worker& w = *decode_[i];
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::milliseconds(500));
    v1::LookupPrefixRequest req;
    req.set_model_id(model_id_);
    req.mutable_token_ids()->Add(prompt.begin(), prompt.end());
    v1::LookupPrefixResponse resp;
    grpc::Status s = w.decode->LookupPrefix(&ctx, req, &resp);
    if (!s.ok()) {
      KLOG_WARN("decode worker {} did not answer LookupPrefix: {}", w.address, s.error_message());
      continue;
    }
    double score = static_cast<double>(resp.cached_tokens()) / options_.tokens_per_request - w.load.load();
    if (score > best_score) {
      best_score = score;
      best.index = static_cast<int>(i);
      best.lookup = resp;
    }
  }
  return best;
}

bool Backend::RemotePrefill(const std::string& request_id, const std::vector<int32_t>& prompt, const Choice& d,
                            const std::atomic<bool>& cancelled) {
  if (prefill_.empty()) return false;
  int64_t cached = d.lookup.cached_tokens();
  if (static_cast<int64_t>(prompt.size()) - cached < options_.prefill_threshold) return false;
  Worker& p = *prefill_[next_prefill_.fetch_add(1) % prefill_.size()];
  const std::string& dest = decode_[d.index]->address;
  grpc::ClientContext ctx;
  CancelWatch watch(&ctx, cancelled);
  v1::PrefillRequest req;
  req.set_request_id(request_id);
  req.set_model_id(model_id_);
  req.mutable_token_ids()->Add(prompt.begin(), prompt.end());
  if (cached > 0) {
    req.mutable_cached()->set_num_tokens(static_cast<int32_t>(cached));
    req.mutable_cached()->set_source_address(dest);
    req.mutable_cached()->mutable_block_hashes()->CopyFrom(d.lookup.block_hashes());
  }
  req.set_destination(dest);
  req.set_kv_block_size(d.lookup.block_size());
  v1::PrefillResponse resp;
  grpc::Status s = p.prefill->Prefill(&ctx, req, &resp);
  if (!s.ok()) {
    KLOG_WARN("prefill worker {} failed for {} ({}); the decode worker prefills instead", p.address, request_id,
              s.error_message());
    return false;
  }
  KLOG_DEBUG("prefill {}: {} tokens computed on {} in {:.1f} ms", request_id, resp.computed_tokens(), p.address,
             resp.timing().total_ms());
  return true;
}

absl::Status Backend::Generate(const std::string& request_id, const std::vector<int32_t>& prompt,
                               const v1::SamplingParams& sampling,
                               const std::function<bool(const v1::GenerateResponse&)>& on_event,
                               const std::atomic<bool>& cancelled, RouteInfo* route) {
  std::set<int> tried;
  absl::Status last = absl::UnavailableError("no decode worker is configured");
  for (size_t attempt = 0; attempt < decode_.size(); ++attempt) {
    if (cancelled.load()) return absl::CancelledError("client went away");
    Choice d = ChooseDecode(prompt, tried);
    if (d.index < 0) break;
    tried.insert(d.index);
    Worker& w = *decode_[d.index];
    route->attempts = static_cast<int>(attempt) + 1;
    route->decode_address = w.address;
    route->cached_tokens = d.lookup.cached_tokens();
    std::string import_id;
    if (RemotePrefill(request_id, prompt, d, cancelled)) {
      import_id = request_id;
      route->prefilled_remotely = true;
    }
    grpc::ClientContext ctx;
    CancelWatch watch(&ctx, cancelled);
    v1::GenerateRequest req;
    req.set_request_id(request_id);
    req.set_model_id(model_id_);
    req.mutable_prompt_token_ids()->Add(prompt.begin(), prompt.end());
    *req.mutable_sampling() = sampling;
    req.set_kv_import_id(import_id);
    w.load.fetch_add(1);
    auto reader = w.decode->Generate(&ctx, req);
    v1::GenerateResponse resp;
    bool delivered = false, stopped = false;
    while (reader->Read(&resp)) {
      delivered = true;
      if (!on_event(resp)) {
        stopped = true;
        ctx.TryCancel();
        break;
      }
    }
    grpc::Status s = reader->Finish();
    w.load.fetch_sub(1);
    if (stopped || s.ok()) return absl::OkStatus();
    last = Annotate(FromGrpcStatus(s), StrCat("decode worker ", w.address));
    if (cancelled.load()) return absl::CancelledError("client went away");
    if (delivered) return last;  // mid-stream failure: tell the client
    // Retry elsewhere only for failures of the worker, not of the request.
    if (s.error_code() != grpc::StatusCode::UNAVAILABLE && s.error_code() != grpc::StatusCode::INTERNAL &&
        s.error_code() != grpc::StatusCode::UNKNOWN && s.error_code() != grpc::StatusCode::ABORTED) {
      return last;
    }
    KLOG_WARN("request {} failed on {} before any token ({}); retrying elsewhere", request_id, w.address,
              s.error_message());
  }
  if (last.code() == absl::StatusCode::kUnavailable || tried.empty()) {
    return absl::UnavailableError(StrCat("no decode worker is available: ", last.message()));
  }
  return last;
}

std::vector<v1::StatsResponse> Backend::DecodeStats() {
  std::vector<v1::StatsResponse> out;
  for (auto& w : decode_) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::milliseconds(300));
    v1::StatsResponse resp;
    if (w->decode->Stats(&ctx, v1::StatsRequest(), &resp).ok()) out.push_back(resp);
  }
  return out;
}

}  // namespace krasis::gateway
