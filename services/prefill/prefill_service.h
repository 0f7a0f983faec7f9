// gRPC adapter of the prefill worker: krasis.v1.Prefill on PrefillEngine. It
// fetches a cached prefix from its decode worker (Decode.ExportKv), runs the
// rest of the prompt, and streams KV blocks (as each layer of each chunk
// finishes), linear-attention state and the last logits to the destination
// decode worker (Decode.ImportKv) from a sender thread, so transfer overlaps
// compute.
#pragma once

#include <atomic>
#include <map>
#include <memory>
#include <mutex>
#include <string>

#include "krasis/v1/decode.grpc.pb.h"
#include "krasis/v1/prefill.grpc.pb.h"
#include "services/prefill/prefill_engine.h"

namespace krasis {

class PrefillService final : public v1::Prefill::Service {
 public:
  PrefillService(std::string model_id, PrefillEngine* engine, int64_t chunk_tokens)
      : model_id_(std::move(model_id)), engine_(engine), chunk_tokens_(chunk_tokens) {}

  grpc::Status Prefill(grpc::ServerContext* context, const v1::PrefillRequest* request,
                       v1::PrefillResponse* response) override;
  grpc::Status Cancel(grpc::ServerContext* context, const v1::CancelRequest* request,
                      v1::CancelResponse* response) override;

 private:
  absl::Status Run(grpc::ServerContext* context, const v1::PrefillRequest& request,
                   v1::PrefillResponse& response, const std::atomic<bool>& cancelled);
  absl::StatusOr<PrefixKv> FetchPrefix(const v1::PrefillRequest& request);
  std::shared_ptr<v1::Decode::Stub> DecodeStub(const std::string& address);

  std::string model_id_;
  PrefillEngine* engine_;
  int64_t chunk_tokens_;
  std::mutex mu_;
  std::map<std::string, std::shared_ptr<std::atomic<bool>>> running_;
  std::map<std::string, std::shared_ptr<v1::Decode::Stub>> stubs_;
};

}  // namespace krasis
