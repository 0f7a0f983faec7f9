// Process supervisor (see supervisor.h).
#include "tools/krasis/supervisor.h"

#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <thread>

#include "common/logging.h"
#include "common/ports.h"
#include "common/status.h"

namespace krasis {

namespace {
using Clock = std::chrono::steady_clock;

std::string DescribeExit(int wstatus) {
  if (WIFEXITED(wstatus)) return StrCat("exited with status ", WEXITSTATUS(wstatus));
  if (WIFSIGNALED(wstatus)) return StrCat("killed by signal ", WTERMSIG(wstatus));
  return "stopped";
}
}  // namespace

Supervisor::Supervisor(SupervisorOptions options) : options_(options) {}

Supervisor::~Supervisor() { StopAll(); }

absl::Status Supervisor::Spawn(Child& child) {
  if (!child.spec.ready_file.empty()) {
    std::error_code ec;
    std::filesystem::remove(child.spec.ready_file, ec);
  }
  std::vector<char*> argv;
  for (auto& a : child.spec.argv) argv.push_back(a.data());
  argv.push_back(nullptr);
  pid_t parent = getpid();
  pid_t pid = fork();
  if (pid < 0) return InternalError("fork for ", child.spec.name, " failed: ", std::strerror(errno));
  if (pid == 0) {
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (getppid() != parent) _exit(127);  // the launcher died before prctl took effect
    execv(argv[0], argv.data());
    // Only reached when exec failed; the parent sees exit status 127.
    _exit(127);
  }
  child.pid = pid;
  child.started = Clock::now();
  child.waiting_restart = false;
  KLOG_INFO("started {} (pid {}): {}", child.spec.name, pid, child.spec.argv[0]);
  return absl::OkStatus();
}

absl::Status Supervisor::WaitReady(Child& child) {
  auto deadline = Clock::now() + options_.ready_timeout;
  while (true) {
    if (child.spec.ready_file.empty() || std::filesystem::exists(child.spec.ready_file)) {
      return absl::OkStatus();
    }
    int wstatus = 0;
    pid_t r = waitpid(child.pid, &wstatus, WNOHANG);
    if (r == child.pid) {
      child.pid = -1;
      std::string what = StrCat(child.spec.name, " ", DescribeExit(wstatus), " before it was ready (see its log above)");
      if (WIFEXITED(wstatus) && WEXITSTATUS(wstatus) == kExitAddressInUse) {
        return absl::AlreadyExistsError(StrCat(what, ": its address is in use"));
      }
      return absl::FailedPreconditionError(what);
    }
    if (Clock::now() > deadline) {
      return absl::DeadlineExceededError(StrCat(child.spec.name, " was not ready within ",
                                                options_.ready_timeout.count(), " ms"));
    }
    std::this_thread::sleep_for(options_.poll_interval);
  }
}

absl::Status Supervisor::StartAll(const std::vector<ChildSpec>& children) {
  children_.reserve(children_.size() + children.size());
  for (const auto& spec : children) {
    children_.emplace_back();
    Child& child = children_.back();
    child.spec = spec;
    child.backoff = options_.initial_backoff;
    absl::Status s = Spawn(child);
    if (s.ok()) s = WaitReady(child);
    if (!s.ok()) {
      StopAll();
      return s;
    }
  }
  return absl::OkStatus();
}

void Supervisor::Reap() {
  for (auto& child : children_) {
    if (child.pid <= 0) continue;
    int wstatus = 0;
    if (waitpid(child.pid, &wstatus, WNOHANG) != child.pid) continue;
    auto ran = Clock::now() - child.started;
    if (ran >= options_.healthy_after) child.backoff = options_.initial_backoff;
    KLOG_WARN("{} (pid {}) {}; restarting in {} ms", child.spec.name, child.pid,
              DescribeExit(wstatus), child.backoff.count());
    child.pid = -1;
    child.waiting_restart = true;
    child.restart_at = Clock::now() + child.backoff;
    child.backoff = std::min(child.backoff * 2, options_.max_backoff);
  }
}

void Supervisor::Run(const std::atomic<bool>& stop) {
  while (!stop.load()) {
    Reap();
    for (auto& child : children_) {
      if (child.waiting_restart && Clock::now() >= child.restart_at) {
        ++child.restarts;
        absl::Status s = Spawn(child);
        if (!s.ok()) {
          KLOG_ERROR("restart of {} failed: {}", child.spec.name, s.ToString());
          child.waiting_restart = true;
          child.restart_at = Clock::now() + child.backoff;
        }
      }
    }
    std::this_thread::sleep_for(options_.poll_interval);
  }
}

void Supervisor::StopAll() {
  for (auto it = children_.rbegin(); it != children_.rend(); ++it) {
    if (it->pid > 0) kill(it->pid, SIGTERM);
    it->waiting_restart = false;
  }
  auto deadline = Clock::now() + options_.stop_grace;
  for (auto it = children_.rbegin(); it != children_.rend(); ++it) {
    while (it->pid > 0) {
      int wstatus = 0;
      pid_t r = waitpid(it->pid, &wstatus, WNOHANG);
      if (r == it->pid || (r < 0 && errno == ECHILD)) {
        KLOG_INFO("{} stopped ({})", it->spec.name, DescribeExit(wstatus));
        it->pid = -1;
        break;
      }
      if (Clock::now() > deadline) {
        KLOG_WARN("{} did not stop within {} ms; killing it", it->spec.name,
                  options_.stop_grace.count());
        kill(it->pid, SIGKILL);
        waitpid(it->pid, &wstatus, 0);
        it->pid = -1;
        break;
      }
      std::this_thread::sleep_for(options_.poll_interval);
    }
  }
}

pid_t Supervisor::pid(const std::string& name) const {
  for (const auto& c : children_)
    if (c.spec.name == name) return c.pid;
  return -1;
}

int Supervisor::restarts(const std::string& name) const {
  for (const auto& c : children_)
    if (c.spec.name == name) return c.restarts;
  return -1;
}

}  // namespace krasis
