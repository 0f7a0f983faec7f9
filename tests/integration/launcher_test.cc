// Integration test of `krasis serve`: starts the real launcher, which starts the
// four real service binaries on loopback; checks each serves grpc.health.v1 and
// its own API; kills the decode worker and checks the supervisor brings it back
// at the same address; then SIGTERM stops everything and cleans up.
#include <gtest/gtest.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <thread>

#include <nlohmann/json.hpp>

#include "grpcpp/grpcpp.h"
#include "krasis/v1/decode.grpc.pb.h"
#include "krasis/v1/inference.grpc.pb.h"
#include "krasis/v1/loader.grpc.pb.h"
#include "krasis/v1/prefill.grpc.pb.h"
#include "common/ports.h"
#include "services/rpc/health_client.h"
#include "tests/common/listening_socket.h"
#include "tests/integration/cluster.h"

extern char** environ;

namespace krasis {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;

using testing::Alive;
using testing::HttpPost;
using testing::WaitForJson;

class LauncherTest : public ::testing::Test {
 protected:
  void SetUp() override {
    home_ = fs::path(::testing::TempDir()) / ("krasis-home-" + std::to_string(getpid()));
    fs::remove_all(home_);
    std::string exe = std::string(KRASIS_BINARY_DIR) + "/bin/krasis";
    std::vector<std::string> args = {exe,    "serve", "--grpc-port", "0", "--port", "0", "--kv-budget-mb",
                                     "64",   "--home", home_.string()};
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    ASSERT_EQ(posix_spawn(&launcher_, exe.c_str(), nullptr, nullptr, argv.data(), environ), 0);
  }

  void TearDown() override {
    if (launcher_ > 0 && Alive(launcher_)) {
      kill(launcher_, SIGKILL);
      waitpid(launcher_, nullptr, 0);
    }
    fs::remove_all(home_);
  }

  fs::path home_;
  pid_t launcher_ = -1;
};

TEST_F(LauncherTest, ServesSupervisesAndStops) {
  fs::path server_file = home_ / "servers" / (std::to_string(launcher_) + ".json");
  nlohmann::json info = WaitForJson(server_file, 60s);
  ASSERT_FALSE(info.is_null()) << "launcher wrote no " << server_file;
  ASSERT_EQ(info["pid"], launcher_);
  const auto& services = info["services"];
  for (const char* name : {"loader", "decode", "prefill", "gateway"}) {
    ASSERT_TRUE(services.contains(name)) << name;
    auto channel = grpc::CreateChannel(services[name].get<std::string>(),
                                       grpc::InsecureChannelCredentials());
    auto health = CheckHealth(channel, "");
    ASSERT_TRUE(health.ok()) << name << ": " << health.status();
    EXPECT_EQ(*health, HealthStatus::kServing) << name;
  }
  // Each serves its own API (declared now; its RPCs answer UNIMPLEMENTED until
  // their engines land) under its full name.
  auto check_service = [&](const char* name, const char* full_name) {
    auto channel = grpc::CreateChannel(services[name].get<std::string>(),
                                       grpc::InsecureChannelCredentials());
    auto health = CheckHealth(channel, full_name);
    ASSERT_TRUE(health.ok()) << full_name << ": " << health.status();
    EXPECT_EQ(*health, HealthStatus::kServing);
  };
  check_service("loader", "krasis.v1.Loader");
  check_service("decode", "krasis.v1.Decode");
  check_service("prefill", "krasis.v1.Prefill");
  check_service("gateway", "krasis.v1.Inference");
  {
    auto channel = grpc::CreateChannel(services["decode"].get<std::string>(),
                                       grpc::InsecureChannelCredentials());
    auto stub = v1::Decode::NewStub(channel);
    grpc::ClientContext ctx;
    v1::StatsRequest req;
    v1::StatsResponse resp;
    ASSERT_TRUE(stub->Stats(&ctx, req, &resp).ok());
    EXPECT_EQ(resp.model_id(), "demo");
    EXPECT_GT(resp.kv_blocks_total(), 0);
  }
  // The OpenAI API answers with the demo model.
  {
    std::string http = info["http_address"].get<std::string>();
    auto [status, headers, body] = HttpPost(http, "/v1/chat/completions",
                                   R"({"model":"demo","max_tokens":8,"temperature":0,)"
                                   R"("messages":[{"role":"user","content":"Write a function."}]})");
    ASSERT_EQ(status, 200) << body;
    auto j = nlohmann::json::parse(body);
    EXPECT_EQ(j["object"], "chat.completion");
    EXPECT_TRUE(j["choices"][0]["message"]["content"].is_string());
    EXPECT_LE(j["usage"]["completion_tokens"].get<int>(), 8);
    EXPECT_GT(j["usage"]["prompt_tokens"].get<int>(), 5);
  }

  // Kill the decode worker: the supervisor restarts it at the same address.
  fs::path ready = home_ / "run" / std::to_string(launcher_) / "decode.ready.json";
  nlohmann::json decode_ready = WaitForJson(ready, 5s);
  ASSERT_FALSE(decode_ready.is_null());
  pid_t decode_pid = decode_ready["pid"].get<int>();
  ASSERT_EQ(kill(decode_pid, SIGKILL), 0);
  auto deadline = std::chrono::steady_clock::now() + 30s;
  nlohmann::json again;
  while (std::chrono::steady_clock::now() < deadline) {
    again = WaitForJson(ready, 1s);
    if (!again.is_null() && again["pid"].get<int>() != decode_pid) break;
    std::this_thread::sleep_for(100ms);
  }
  ASSERT_FALSE(again.is_null());
  ASSERT_NE(again["pid"].get<int>(), decode_pid) << "decode worker was not restarted";
  EXPECT_EQ(again["address"], services["decode"]);
  auto channel = grpc::CreateChannel(services["decode"].get<std::string>(),
                                     grpc::InsecureChannelCredentials());
  auto health = CheckHealth(channel, "krasis.v1.Decode");
  ASSERT_TRUE(health.ok()) << health.status();
  EXPECT_EQ(*health, HealthStatus::kServing);
  // Close our connection: gRPC's server shutdown waits out its drain deadline
  // (5 s) while a client still holds an open connection.
  channel.reset();

  // SIGTERM: every service stops, the launcher exits 0 and removes its files.
  std::vector<pid_t> pids;
  for (const char* name : {"loader", "decode", "prefill", "gateway"}) {
    auto j = WaitForJson(home_ / "run" / std::to_string(launcher_) / (std::string(name) + ".ready.json"), 5s);
    ASSERT_FALSE(j.is_null()) << name;
    pids.push_back(j["pid"].get<int>());
  }
  ASSERT_EQ(kill(launcher_, SIGTERM), 0);
  int wstatus = 0;
  ASSERT_EQ(waitpid(launcher_, &wstatus, 0), launcher_);
  launcher_ = -1;
  EXPECT_TRUE(WIFEXITED(wstatus) && WEXITSTATUS(wstatus) == 0) << wstatus;
  for (pid_t pid : pids) EXPECT_FALSE(Alive(pid)) << "service pid " << pid << " survived";
  EXPECT_FALSE(fs::exists(server_file));
}

TEST(LauncherCliTest, BadFlagsAndMissingCommandFail) {
  std::string exe = std::string(KRASIS_BINARY_DIR) + "/bin/krasis";
  EXPECT_EQ(WEXITSTATUS(std::system((exe + " >/dev/null 2>&1").c_str())), 2);
  EXPECT_EQ(WEXITSTATUS(std::system((exe + " frobnicate >/dev/null 2>&1").c_str())), 2);
  EXPECT_EQ(WEXITSTATUS(std::system((exe + " serve --grpc-port x >/dev/null 2>&1").c_str())), 2);
  EXPECT_EQ(WEXITSTATUS(std::system((exe + " serve --help >/dev/null 2>&1").c_str())), 0);
  std::string svc = std::string(KRASIS_BINARY_DIR) + "/bin/krasis-decode";
  EXPECT_EQ(WEXITSTATUS(std::system((svc + " --bogus >/dev/null 2>&1").c_str())), 2);
  EXPECT_EQ(WEXITSTATUS(std::system((svc + " --log-level loud >/dev/null 2>&1").c_str())), 2);
  // A port that cannot be bound is a clean failure, not a crash.
  EXPECT_EQ(WEXITSTATUS(std::system((svc + " --listen 203.0.113.1:1 >/dev/null 2>&1").c_str())), 1);
}

// A service whose address another program holds exits with kExitAddressInUse,
// which tells the launcher to start again on other ports: the gRPC listen
// address of any service, and the gateway's HTTP address.
TEST(LauncherCliTest, AServiceWhoseAddressIsTakenSaysSo) {
  ListeningSocket socket;
  const std::string held = socket.address();
  const std::string bin = std::string(KRASIS_BINARY_DIR) + "/bin/";
  EXPECT_EQ(WEXITSTATUS(std::system((bin + "krasis-loader --listen " + held + " >/dev/null 2>&1").c_str())),
            kExitAddressInUse);
  const std::string gateway = bin + "krasis-gateway --model " + std::string(KRASIS_SOURCE_DIR) + "/models/demo" +
                              " --listen 127.0.0.1:0 --decode 127.0.0.1:1 --prefill 127.0.0.1:1 --http-listen " +
                              held + " >/dev/null 2>&1";
  EXPECT_EQ(WEXITSTATUS(std::system(gateway.c_str())), kExitAddressInUse);
}

// krasis serve with stand-in services (shell scripts beside a copy of the
// launcher, which looks for its services in its own folder): a gateway that
// finds its address taken (exit kExitAddressInUse) makes the launcher plan new
// ports and start every service again, up to three times; then it fails.
class LauncherRetryTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = fs::path(::testing::TempDir()) / ("krasis-retry-" + std::to_string(getpid()));
    fs::remove_all(root_);
    fs::create_directories(root_ / "bin");
    fs::create_directories(root_ / "model");
    std::ofstream(root_ / "model" / "config.json") << "{}";
    fs::copy_file(std::string(KRASIS_BINARY_DIR) + "/bin/krasis", root_ / "bin" / "krasis");
  }
  void TearDown() override {
    if (launcher_ > 0 && Alive(launcher_)) {
      kill(launcher_, SIGKILL);  // its services follow (PR_SET_PDEATHSIG)
      waitpid(launcher_, nullptr, 0);
    }
    fs::remove_all(root_);
  }

  // A stand-in service: logs its --listen address to <name>.listens, runs
  // `before` (which may exit), then says it is ready and sleeps until stopped.
  void Service(const std::string& name, const std::string& before = "") {
    const fs::path exe = root_ / "bin" / ("krasis-" + name);
    std::ofstream(exe) << "#!/bin/sh\n"
                       << "while [ $# -gt 0 ]; do case \"$1\" in --ready-file) rf=\"$2\"; shift;; "
                       << "--listen) listen=\"$2\"; shift;; esac; shift; done\n"
                       << "echo \"$listen\" >> '" << (root_ / (name + ".listens")).string() << "'\n"
                       << before << "\n"
                       << "touch \"$rf\"\nexec sleep 600\n";
    fs::permissions(exe, fs::perms::owner_all);
  }

  std::vector<std::string> Lines(const std::string& file) {
    std::vector<std::string> lines;
    std::ifstream in(root_ / file);
    for (std::string line; std::getline(in, line);) lines.push_back(line);
    return lines;
  }

  pid_t Launch() {
    const std::string exe = (root_ / "bin" / "krasis").string();
    std::vector<std::string> args = {exe,      "serve",  "--grpc-port", "0", "--port", "0", "--home",
                                     (root_ / "home").string(), "--model", (root_ / "model").string()};
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    EXPECT_EQ(posix_spawn(&launcher_, exe.c_str(), nullptr, nullptr, argv.data(), environ), 0);
    return launcher_;
  }

  // Waits for the launcher to exit; its wait status.
  int Reap() {
    int wstatus = 0;
    EXPECT_EQ(waitpid(launcher_, &wstatus, 0), launcher_);
    launcher_ = -1;
    return wstatus;
  }

  fs::path root_;
  pid_t launcher_ = -1;
};

TEST_F(LauncherRetryTest, StartsAgainOnOtherPortsWhenAnAddressIsTaken) {
  for (const char* name : {"loader", "decode", "prefill"}) Service(name);
  const std::string once = (root_ / "taken-once").string();
  Service("gateway", "if [ ! -e '" + once + "' ]; then touch '" + once + "'; exit " +
                         std::to_string(kExitAddressInUse) + "; fi");
  const pid_t launcher = Launch();
  const nlohmann::json info = WaitForJson(root_ / "home" / "servers" / (std::to_string(launcher) + ".json"), 30s);
  ASSERT_FALSE(info.is_null()) << "the launcher wrote no server file";
  // Two starts of everything, the second on other internal ports; the server
  // file names the second.
  const std::vector<std::string> loader = Lines("loader.listens"), gateway = Lines("gateway.listens");
  ASSERT_EQ(loader.size(), 2u);
  EXPECT_NE(loader[0], loader[1]);
  ASSERT_EQ(gateway.size(), 2u);
  EXPECT_EQ(info["services"]["loader"], loader[1]);
  EXPECT_EQ(info["services"]["gateway"], gateway[1]);
  ASSERT_EQ(kill(launcher, SIGTERM), 0);
  const int wstatus = Reap();
  EXPECT_TRUE(WIFEXITED(wstatus) && WEXITSTATUS(wstatus) == 0) << wstatus;
}

TEST_F(LauncherRetryTest, GivesUpAfterThreeAttempts) {
  for (const char* name : {"loader", "decode", "prefill"}) Service(name);
  Service("gateway", "exit " + std::to_string(kExitAddressInUse));
  Launch();
  const int wstatus = Reap();
  EXPECT_TRUE(WIFEXITED(wstatus) && WEXITSTATUS(wstatus) == 1) << wstatus;
  EXPECT_EQ(Lines("gateway.listens").size(), 3u);
  EXPECT_EQ(Lines("loader.listens").size(), 3u);
}

}  // namespace
}  // namespace krasis
