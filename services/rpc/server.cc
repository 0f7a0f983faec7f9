// Common gRPC server setup (see server.h): health checking, reflection, message
// limits, port-0 binding and orderly shutdown, the same for every service.
#include "services/rpc/server.h"

#include <chrono>
#include <mutex>
#include <set>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "grpc/grpc.h"
#include "grpcpp/ext/proto_server_reflection_plugin.h"
#include "grpcpp/health_check_service_interface.h"
#include "grpcpp/security/server_credentials.h"

namespace krasis {
namespace {

// How long the destructor of a still-running server lets calls in flight finish.
constexpr absl::Duration kDestructorGrace = absl::Seconds(5);

bool IsUnixAddress(std::string_view address) {
  return address.starts_with("unix:") || address.starts_with("unix-abstract:");
}

}  // namespace

struct RunningServer::State {
  std::unique_ptr<grpc::Server> server;
  std::string address;
  int port = 0;
  std::mutex mu;
  bool shut_down = false;  // guarded by mu
};

RunningServer::RunningServer(std::unique_ptr<State> state) : state_(std::move(state)) {}
RunningServer::RunningServer(RunningServer&&) noexcept = default;

RunningServer& RunningServer::operator=(RunningServer&& other) noexcept {
  if (this != &other) {
    if (state_ != nullptr) Shutdown(absl::Now() + kDestructorGrace);
    state_ = std::move(other.state_);
  }
  return *this;
}

RunningServer::~RunningServer() {
  if (state_ != nullptr) Shutdown(absl::Now() + kDestructorGrace);
}

int RunningServer::port() const { return state_->port; }
const std::string& RunningServer::address() const { return state_->address; }
grpc::Server* RunningServer::server() const { return state_->server.get(); }

void RunningServer::SetServing(std::string_view service, bool serving) {
  std::lock_guard<std::mutex> lock(state_->mu);
  if (state_->shut_down) return;
  grpc::HealthCheckServiceInterface* health = state_->server->GetHealthCheckService();
  if (health != nullptr) health->SetServingStatus(std::string(service), serving);
}

void RunningServer::Shutdown(absl::Time deadline) {
  {
    std::lock_guard<std::mutex> lock(state_->mu);
    if (!state_->shut_down) {
      state_->shut_down = true;
      // Health first, so clients watching it stop routing here before the
      // listener closes.
      grpc::HealthCheckServiceInterface* health = state_->server->GetHealthCheckService();
      if (health != nullptr) health->Shutdown();
    }
  }
  // grpc::Server::Shutdown is thread-safe and idempotent; later callers return
  // once the first shutdown has completed.
  state_->server->Shutdown(absl::ToChronoTime(deadline));
  state_->server->Wait();
}

void RunningServer::Wait() { state_->server->Wait(); }

absl::StatusOr<RunningServer> StartServer(const ServerOptions& options,
                                          const std::vector<ServedService>& services) {
  if (options.address.empty()) return absl::InvalidArgumentError("server address is empty");
  if (!IsUnixAddress(options.address) && options.address.rfind(':') == std::string::npos) {
    return absl::InvalidArgumentError(
        absl::StrCat("server address \"", options.address, "\" has no port (host:port)"));
  }
  if (options.max_message_bytes <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("max_message_bytes must be positive, got ", options.max_message_bytes));
  }
  std::set<std::string> names;
  for (const ServedService& entry : services) {
    if (entry.service == nullptr) {
      return absl::InvalidArgumentError(absl::StrCat("service \"", entry.name, "\" is null"));
    }
    if (entry.name.empty()) return absl::InvalidArgumentError("a service has an empty name");
    if (!names.insert(entry.name).second) {
      return absl::InvalidArgumentError(absl::StrCat("service \"", entry.name, "\" given twice"));
    }
  }

  // Both are process-wide switches that the builder reads; setting them again is
  // harmless.
  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();

  grpc::ServerBuilder builder;
  int selected_port = 0;
  builder.AddListeningPort(options.address, grpc::InsecureServerCredentials(), &selected_port);
  builder.SetMaxReceiveMessageSize(options.max_message_bytes);
  builder.SetMaxSendMessageSize(options.max_message_bytes);
  // gRPC sets SO_REUSEPORT by default, which lets a second server bind a port
  // that is already in use without an error; a fixed port must be ours alone.
  builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
  for (const ServedService& entry : services) builder.RegisterService(entry.service);
  if (options.configure) options.configure(builder);

  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (server == nullptr) {
    return absl::UnavailableError(
        absl::StrCat("could not start a gRPC server on \"", options.address, "\""));
  }

  auto state = std::make_unique<RunningServer::State>();
  if (IsUnixAddress(options.address)) {
    state->address = options.address;
  } else {
    if (selected_port <= 0) {
      server->Shutdown(std::chrono::system_clock::now());
      server->Wait();
      return absl::UnavailableError(absl::StrCat("could not bind \"", options.address, "\""));
    }
    state->port = selected_port;
    state->address = absl::StrCat(
        options.address.substr(0, options.address.rfind(':')), ":", selected_port);
  }
  state->server = std::move(server);
  RunningServer running(std::move(state));

  grpc::HealthCheckServiceInterface* health = running.server()->GetHealthCheckService();
  if (health == nullptr) return absl::InternalError("gRPC health check service is missing");
  for (const ServedService& entry : services) health->SetServingStatus(entry.name, entry.serving);
  return running;
}

}  // namespace krasis
