// Common gRPC server setup for every Krasis service.
//
// Each service binary (loader, prefill, decode, gateway) and every test that
// starts a service calls StartServer with its service implementations. It turns
// on what all of them must offer -- grpc.health.v1 health checking with a status
// per service name, server reflection (so grpcurl works), large message limits
// (KV blocks and weight chunks travel in single messages) -- binds the address
// (port 0 picks a free port, which is reported back; tests bind 127.0.0.1:0) and
// returns a RunningServer that owns the grpc::Server.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "grpcpp/server.h"
#include "grpcpp/server_builder.h"

namespace krasis {

// One service to serve. Example:
//   DecodeServiceImpl impl;
//   ServedService{&impl, krasis::v1::Decode::service_full_name()}
struct ServedService {
  // The implementation (sync, callback or async grpc::Service). Not owned; must
  // outlive the server.
  grpc::Service* service = nullptr;
  // Fully qualified service name ("krasis.v1.Decode"): the key of its
  // grpc.health.v1 status.
  std::string name;
  // Initial health status: SERVING if true, NOT_SERVING if false (for a worker
  // that is still loading its model; flip it later with SetServing).
  bool serving = true;
};

// Default for ServerOptions::max_message_bytes: 256 MiB.
inline constexpr int kDefaultMaxMessageBytes = 256 << 20;

// How to start the server.
struct ServerOptions {
  // "host:port" to listen on; port 0 picks a free one. "0.0.0.0:50051" listens
  // on every interface. "unix:/path" listens on a Unix socket.
  std::string address = "127.0.0.1:0";
  // Largest message the server accepts and sends, in bytes (both directions).
  int max_message_bytes = kDefaultMaxMessageBytes;
  // Called on the builder after the standard settings and before the server is
  // built, for service-specific settings (for example AddCompletionQueue for an
  // async service, thread limits, keepalive). May be empty.
  std::function<void(grpc::ServerBuilder&)> configure;
};

// A started gRPC server. Movable, not copyable. Destroying a running server
// shuts it down (waiting up to 5 seconds for in-flight calls). A moved-from
// RunningServer may only be destroyed or assigned to.
class RunningServer {
 public:
  RunningServer(RunningServer&&) noexcept;
  RunningServer& operator=(RunningServer&&) noexcept;
  RunningServer(const RunningServer&) = delete;
  RunningServer& operator=(const RunningServer&) = delete;
  ~RunningServer();

  // The port actually bound (0 for a Unix socket).
  int port() const;
  // Address clients can dial: the requested host with the bound port, e.g.
  // "127.0.0.1:41234" (the requested address for a Unix socket).
  const std::string& address() const;
  // The underlying server (for example to reach its health service).
  grpc::Server* server() const;

  // Sets the grpc.health.v1 status of `service` (a full service name, or "" for
  // the server as a whole). No effect after Shutdown.
  void SetServing(std::string_view service, bool serving);

  // Marks every service NOT_SERVING, stops accepting calls, lets calls in flight
  // finish until `deadline` and cancels the rest, then returns once the server
  // has stopped. Safe to call more than once and from any thread.
  void Shutdown(absl::Time deadline);
  // Blocks until the server has been shut down (by another thread).
  void Wait();

 private:
  struct State;
  friend absl::StatusOr<RunningServer> StartServer(const ServerOptions& options,
                                                   const std::vector<ServedService>& services);
  explicit RunningServer(std::unique_ptr<State> state);

  std::unique_ptr<State> state_;
};

// Builds and starts a server serving `services` plus grpc.health.v1.Health and
// grpc.reflection.v1alpha.ServerReflection, with insecure credentials (Krasis
// runs on a trusted network or behind a proxy). Errors: INVALID_ARGUMENT for a
// null service, an empty or duplicate name, or a bad option; UNAVAILABLE when
// the address cannot be bound (in use, unknown host).
absl::StatusOr<RunningServer> StartServer(const ServerOptions& options,
                                          const std::vector<ServedService>& services);

}  // namespace krasis
