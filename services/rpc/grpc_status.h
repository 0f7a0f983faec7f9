// Conversion between absl::Status and grpc::Status.
//
// Engine code returns absl::Status / absl::StatusOr<T>; gRPC adapters return
// grpc::Status and clients receive one. This is the one place that translates
// between them (DESIGN.md: "convert to grpc::Status once, in the service
// adapter"). Both libraries use the canonical google.rpc.Code numbering, so every
// code maps to the code of the same name and the message is kept unchanged.
#pragma once

#include "absl/status/status.h"
#include "grpcpp/support/status.h"

namespace krasis {

// The grpc::Status with the same code and message. An absl code outside the
// canonical range becomes UNKNOWN (message kept).
grpc::Status ToGrpcStatus(const absl::Status& status);

// The absl::Status with the same code and message (a gRPC error without a
// message keeps an empty one). An out-of-range gRPC code becomes kUnknown.
absl::Status FromGrpcStatus(const grpc::Status& status);

// The grpc::StatusCode with the same meaning as `code`.
grpc::StatusCode ToGrpcCode(absl::StatusCode code);

// The absl::StatusCode with the same meaning as `code`.
absl::StatusCode FromGrpcCode(grpc::StatusCode code);

}  // namespace krasis
