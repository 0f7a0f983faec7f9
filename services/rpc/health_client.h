// A client for the standard gRPC health service (grpc.health.v1.Health/Check),
// which every Krasis service serves. The launcher, the gateway (to know which
// workers are up) and the tests use it.
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "grpcpp/channel.h"

namespace krasis {

enum class HealthStatus { kUnknown, kServing, kNotServing };

// Asks `channel`'s server for the health of `service` ("" = the whole server).
// Transport failures and unknown services come back as the call's error status
// (UNAVAILABLE, NOT_FOUND, DEADLINE_EXCEEDED ...).
absl::StatusOr<HealthStatus> CheckHealth(const std::shared_ptr<grpc::Channel>& channel,
                                         const std::string& service,
                                         absl::Duration timeout = absl::Seconds(5));

}  // namespace krasis
