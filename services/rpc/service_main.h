// What every service binary's main() shares: the common flags (--listen,
// --ready-file, --log-level, --help), logging setup, and the serve loop that
// starts the gRPC server, announces readiness, and shuts down cleanly on SIGINT
// or SIGTERM. Service-specific flags are added to options() before Parse().
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <boost/program_options.hpp>

#include "services/rpc/server.h"

namespace krasis {

struct ServiceFlags {
  std::string listen = "127.0.0.1:0";  // host:port; port 0 picks a free one
  std::string ready_file;              // written (JSON) once the server listens
  std::string log_level;               // empty: $KRASIS_LOG_LEVEL or info
};

class ServiceCommandLine {
 public:
  ServiceCommandLine(std::string service, std::string summary);

  // Add service-specific options here before Parse().
  boost::program_options::options_description& options() { return options_; }

  // Blocks SIGINT and SIGTERM in the calling thread (call it before starting
  // any thread), parses argv and sets up logging. Returns an exit code when the program should
  // stop now (0 after --help, 2 after a bad flag, with the reason on stderr),
  // nullopt to go on.
  std::optional<int> Parse(int argc, char** argv);

  const ServiceFlags& flags() const { return flags_; }
  const std::string& service() const { return service_; }

 private:
  std::string service_;
  std::string summary_;
  ServiceFlags flags_;
  boost::program_options::options_description options_;
};

// Writes the ready file atomically (temp file + rename): {"service", "address",
// "port", "pid"}.
absl::Status WriteReadyFile(const std::string& path, std::string_view service,
                            const RunningServer& server);

// Starts the server on flags.listen with `services`, writes the ready file, logs
// where it listens, and blocks until SIGINT or SIGTERM; then drains calls for up
// to five seconds and returns the process exit code (kExitAddressInUse from
// common/ports.h when the listen address is taken). Call before starting any
// other thread, so that every thread has the two signals blocked.
int ServeUntilSignal(const ServiceCommandLine& command_line,
                     const std::vector<ServedService>& services);

}  // namespace krasis

namespace krasis {

// main() of a service whose API is declared but whose engine has not landed yet:
// it serves health and reflection, and each of its RPCs answers UNIMPLEMENTED.
template <typename ServiceT>
int RunDeclaredService(int argc, char** argv, std::string service, std::string summary,
                       std::string full_name) {
  ServiceCommandLine command_line(std::move(service), std::move(summary));
  if (auto code = command_line.Parse(argc, argv)) return *code;
  typename ServiceT::Service impl;
  return ServeUntilSignal(command_line, {ServedService{&impl, std::move(full_name)}});
}

}  // namespace krasis
