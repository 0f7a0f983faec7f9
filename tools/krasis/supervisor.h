// Process supervisor for the `krasis` launcher.
//
// Starts the cluster's services as child processes in order, waits for each to
// say it is ready (it writes its ready file once its gRPC server listens),
// restarts any that dies with exponential backoff, and on shutdown stops them in
// reverse order: SIGTERM, a grace period, then SIGKILL. Children get
// PR_SET_PDEATHSIG so a killed launcher never leaves services behind.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <chrono>
#include <string>
#include <vector>

#include "absl/status/status.h"

namespace krasis {

struct ChildSpec {
  std::string name;               // "loader", "decode", ...
  std::vector<std::string> argv;  // argv[0] is the executable's path
  std::string ready_file;         // the child writes it when ready; empty: ready once started
};

struct SupervisorOptions {
  std::chrono::milliseconds initial_backoff{500};
  std::chrono::milliseconds max_backoff{30000};
  // A child that ran at least this long before dying restarts with the initial backoff.
  std::chrono::milliseconds healthy_after{60000};
  std::chrono::milliseconds ready_timeout{60000};
  std::chrono::milliseconds stop_grace{10000};
  std::chrono::milliseconds poll_interval{50};
};

class Supervisor {
 public:
  explicit Supervisor(SupervisorOptions options = {});
  ~Supervisor();  // stops every child still running

  // Starts the children in order, each after the previous one is ready. On any
  // failure (exec error, exit before ready, timeout) stops those already started;
  // ALREADY_EXISTS when a child exited with kExitAddressInUse (common/ports.h).
  absl::Status StartAll(const std::vector<ChildSpec>& children);

  // Watches the children until `stop` becomes true, restarting those that exit.
  void Run(const std::atomic<bool>& stop);

  // Stops every child: SIGTERM in reverse start order, then SIGKILL after the grace.
  void StopAll();

  // For tests and status output.
  pid_t pid(const std::string& name) const;
  int restarts(const std::string& name) const;

 private:
  struct Child {
    ChildSpec spec;
    pid_t pid = -1;
    int restarts = 0;
    std::chrono::milliseconds backoff{0};
    std::chrono::steady_clock::time_point started;
    std::chrono::steady_clock::time_point restart_at;
    bool waiting_restart = false;
  };

  absl::Status Spawn(Child& child);
  absl::Status WaitReady(Child& child);
  // Reaps exited children; schedules their restarts.
  void Reap();

  SupervisorOptions options_;
  std::vector<Child> children_;
};

}  // namespace krasis
