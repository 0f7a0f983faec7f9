// Shared service main() plumbing (see service_main.h).
#include "services/rpc/service_main.h"

#include <signal.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>

#include <nlohmann/json.hpp>

#include "common/logging.h"
#include "common/ports.h"
#include "common/status.h"

namespace krasis {

namespace po = boost::program_options;

ServiceCommandLine::ServiceCommandLine(std::string service, std::string summary)
    : service_(std::move(service)), summary_(std::move(summary)), options_("Options") {
  options_.add_options()
      ("help,h", "print this help and exit")
      ("listen", po::value(&flags_.listen)->default_value(flags_.listen),
       "gRPC address to listen on, host:port (port 0 picks a free port)")
      ("ready-file", po::value(&flags_.ready_file),
       "write this JSON file (service, address, port, pid) once listening")
      ("log-level", po::value(&flags_.log_level),
       "trace, debug, info, warn, error (default: $KRASIS_LOG_LEVEL or info)");
}

std::optional<int> ServiceCommandLine::Parse(int argc, char** argv) {
  // Block SIGINT and SIGTERM first thing, before any thread exists (gRPC
  // channels, HTTP threads, model loading), so every thread inherits the mask and
  // ServeUntilSignal's sigwait is the one place the signals arrive. A signal sent
  // during startup waits there.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  po::variables_map vm;
  try {
    po::store(po::command_line_parser(argc, argv).options(options_).run(), vm);
    if (vm.count("help")) {
      std::cout << "krasis-" << service_ << ": " << summary_ << "\n\n" << options_ << "\n";
      return 0;
    }
    po::notify(vm);
  } catch (const po::error& e) {
    std::cerr << "krasis-" << service_ << ": " << e.what() << " (see --help)\n";
    return 2;
  }
  absl::Status s = InitLogging(service_, flags_.log_level);
  if (!s.ok()) {
    std::cerr << "krasis-" << service_ << ": " << s.message() << "\n";
    return 2;
  }
  return std::nullopt;
}

absl::Status WriteReadyFile(const std::string& path, std::string_view service,
                            const RunningServer& server) {
  nlohmann::json j = {{"service", std::string(service)},
                      {"address", server.address()},
                      {"port", server.port()},
                      {"pid", static_cast<int>(getpid())}};
  std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::trunc);
    out << j.dump() << "\n";
    if (!out) return InternalError("cannot write ready file ", tmp);
  }
  std::error_code ec;
  std::filesystem::rename(tmp, path, ec);
  if (ec) return InternalError("cannot rename ", tmp, " to ", path, ": ", ec.message());
  return absl::OkStatus();
}

int ServeUntilSignal(const ServiceCommandLine& command_line,
                     const std::vector<ServedService>& services) {
  // Block the signals in this thread before gRPC starts its threads, so that
  // they all inherit the mask and sigwait below receives the signal.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  const ServiceFlags& flags = command_line.flags();
  ServerOptions options;
  options.address = flags.listen;
  auto server = StartServer(options, services);
  if (!server.ok()) {
    KLOG_ERROR("cannot start the gRPC server on {}: {}", flags.listen, server.status().ToString());
    return AddressInUse(flags.listen) ? kExitAddressInUse : 1;
  }
  KLOG_INFO("serving gRPC on {}", server->address());
  if (!flags.ready_file.empty()) {
    absl::Status s = WriteReadyFile(flags.ready_file, command_line.service(), *server);
    if (!s.ok()) {
      KLOG_ERROR("{}", s.ToString());
      return 1;
    }
  }
  int sig = 0;
  sigwait(&signals, &sig);
  KLOG_INFO("received {}, shutting down", sig == SIGINT ? "SIGINT" : "SIGTERM");
  server->Shutdown(absl::Now() + absl::Seconds(5));
  KLOG_INFO("gRPC server stopped");
  if (!flags.ready_file.empty()) std::remove(flags.ready_file.c_str());
  return 0;
}

}  // namespace krasis
