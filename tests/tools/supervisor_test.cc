// Tests for the launcher's process supervisor with real child processes (/bin/sh):
// readiness, restart with backoff after a crash, clean and forced shutdown, and
// clear errors for children that die before they are ready.
#include "tools/krasis/supervisor.h"

#include <gtest/gtest.h>
#include <signal.h>

#include <filesystem>
#include <thread>

#include "common/ports.h"

namespace krasis {
namespace {

using namespace std::chrono_literals;

std::string TempPath(const std::string& name) {
  return (std::filesystem::path(::testing::TempDir()) /
          (name + "." + std::to_string(getpid()))).string();
}

ChildSpec Shell(const std::string& name, const std::string& script, const std::string& ready) {
  return ChildSpec{name, {"/bin/sh", "-c", script}, ready};
}

bool Alive(pid_t pid) { return pid > 0 && kill(pid, 0) == 0; }

SupervisorOptions FastOptions() {
  SupervisorOptions o;
  o.initial_backoff = 100ms;
  o.max_backoff = 400ms;
  o.ready_timeout = 5000ms;
  o.stop_grace = 2000ms;
  o.poll_interval = 10ms;
  return o;
}

TEST(SupervisorTest, StartsInOrderAndStops) {
  std::string r1 = TempPath("ready1"), r2 = TempPath("ready2");
  Supervisor sup(FastOptions());
  ASSERT_TRUE(sup.StartAll({Shell("a", "sleep 0.2; touch " + r1 + "; exec sleep 100", r1),
                            Shell("b", "test -f " + r1 + " || exit 9; touch " + r2 +
                                           "; exec sleep 100", r2)})
                  .ok());
  pid_t a = sup.pid("a"), b = sup.pid("b");
  EXPECT_TRUE(Alive(a));
  EXPECT_TRUE(Alive(b));
  sup.StopAll();
  EXPECT_FALSE(Alive(a));
  EXPECT_FALSE(Alive(b));
}

TEST(SupervisorTest, RestartsACrashingChildWithBackoff) {
  std::string ready = TempPath("ready_crash");
  Supervisor sup(FastOptions());
  ASSERT_TRUE(sup.StartAll({Shell("crashy", "touch " + ready + "; sleep 0.05; exit 3", ready)}).ok());
  std::atomic<bool> stop{false};
  std::thread stopper([&] {
    std::this_thread::sleep_for(1500ms);
    stop = true;
  });
  sup.Run(stop);
  stopper.join();
  // Backoff 100, 200, 400, 400 ms: within 1.5 s it restarts a few times, not dozens.
  EXPECT_GE(sup.restarts("crashy"), 2);
  EXPECT_LE(sup.restarts("crashy"), 6);
}

TEST(SupervisorTest, ChildThatDiesBeforeReadyIsAnError) {
  Supervisor sup(FastOptions());
  absl::Status s = sup.StartAll({Shell("early", "exit 5", TempPath("never"))});
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(s.message().find("early exited with status 5"), std::string::npos) << s;
}

// A child whose address is taken says so by its exit status; the launcher
// starts again on other ports only then.
TEST(SupervisorTest, ChildWhoseAddressIsTakenIsAlreadyExists) {
  Supervisor sup(FastOptions());
  absl::Status s = sup.StartAll({Shell("taken", "exit " + std::to_string(kExitAddressInUse), TempPath("never"))});
  EXPECT_EQ(s.code(), absl::StatusCode::kAlreadyExists) << s;
  EXPECT_NE(s.message().find("address is in use"), std::string::npos) << s;
}

TEST(SupervisorTest, MissingExecutableIsAnError) {
  Supervisor sup(FastOptions());
  absl::Status s = sup.StartAll({ChildSpec{"ghost", {"/nonexistent/krasis-ghost"}, TempPath("g")}});
  EXPECT_FALSE(s.ok());
  EXPECT_NE(s.message().find("status 127"), std::string::npos) << s;
}

TEST(SupervisorTest, ReadyTimeoutStopsEverything) {
  SupervisorOptions o = FastOptions();
  o.ready_timeout = 300ms;
  std::string r1 = TempPath("ready_ok");
  Supervisor sup(o);
  absl::Status s = sup.StartAll({Shell("ok", "touch " + r1 + "; exec sleep 100", r1),
                                 Shell("slow", "exec sleep 100", TempPath("slow"))});
  EXPECT_EQ(s.code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_FALSE(Alive(sup.pid("ok")));
}

TEST(SupervisorTest, KillsAChildThatIgnoresSigterm) {
  SupervisorOptions o = FastOptions();
  o.stop_grace = 300ms;
  std::string ready = TempPath("ready_stubborn");
  Supervisor sup(o);
  ASSERT_TRUE(sup.StartAll({Shell("stubborn",
                                  "trap '' TERM; touch " + ready + "; while true; do sleep 0.05; done",
                                  ready)})
                  .ok());
  pid_t pid = sup.pid("stubborn");
  auto t0 = std::chrono::steady_clock::now();
  sup.StopAll();
  EXPECT_FALSE(Alive(pid));
  EXPECT_GE(std::chrono::steady_clock::now() - t0, 300ms);
}

}  // namespace
}  // namespace krasis
