// Health client (see health_client.h): a generic unary call with wire-compatible
// messages, on a private completion queue.
#include "services/rpc/health_client.h"

#include "grpcpp/generic/generic_stub.h"
#include "grpcpp/grpcpp.h"
#include "grpcpp/impl/codegen/proto_utils.h"  // protobuf SerializationTraits
#include "krasis/internal/health_wire.pb.h"
#include "services/rpc/grpc_status.h"

namespace krasis {

absl::StatusOr<HealthStatus> CheckHealth(const std::shared_ptr<grpc::Channel>& channel,
                                         const std::string& service, absl::Duration timeout) {
  using Request = internal::HealthCheckRequest;
  using Response = internal::HealthCheckResponse;
  grpc::TemplatedGenericStub<Request, Response> stub(channel);
  grpc::CompletionQueue cq;
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(absl::Now() + timeout));
  Request request;
  request.set_service(service);
  Response response;
  grpc::Status status;
  auto call = stub.PrepareUnaryCall(&context, "/grpc.health.v1.Health/Check", request, &cq);
  call->StartCall();
  call->Finish(&response, &status, reinterpret_cast<void*>(1));
  void* tag = nullptr;
  bool ok = false;
  cq.Next(&tag, &ok);  // the only event: the call's completion (or its deadline)
  cq.Shutdown();
  while (cq.Next(&tag, &ok)) {
  }
  if (!status.ok()) return FromGrpcStatus(status);
  switch (response.status()) {
    case Response::SERVING:
      return HealthStatus::kServing;
    case Response::NOT_SERVING:
      return HealthStatus::kNotServing;
    default:
      return HealthStatus::kUnknown;
  }
}

}  // namespace krasis
