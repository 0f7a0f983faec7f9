// PickFreePort: a port that is free to bind right away, below the kernel's
// ephemeral range (where nothing binding port 0 or connecting out can take it
// before the launcher's child listens), different from call to call.
#include "tools/krasis/launch_plan.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <set>
#include <string>
#include <vector>

#include "tests/common/listening_socket.h"

namespace krasis {
namespace {

TEST(PickFreePortTest, FreeAndOutsideTheEphemeralRange) {
  int low = 32768;
  std::ifstream("/proc/sys/net/ipv4/ip_local_port_range") >> low;
  std::set<int> seen;
  for (int i = 0; i < 20; ++i) {
    auto port = PickFreePort("127.0.0.1");
    ASSERT_TRUE(port.ok()) << port.status();
    if (low > 21000) {
      EXPECT_LT(*port, low);
    }
    EXPECT_GT(*port, 0);
    seen.insert(*port);
    // It binds.
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(static_cast<uint16_t>(*port));
    inet_pton(AF_INET, "127.0.0.1", &addr.sin_addr);
    EXPECT_EQ(bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0) << *port;
    close(fd);
  }
  EXPECT_GT(seen.size(), 10u);  // random, not one port over and over
}

// The plan hands each service its own port: PickFreePort never returns one it
// is told to avoid, even when nearly every port of its range is avoided.
TEST(PickFreePortTest, NeverReturnsAnAvoidedPort) {
  int low = 32768;
  std::ifstream("/proc/sys/net/ipv4/ip_local_port_range") >> low;
  std::vector<int> avoid;
  for (int port = 20000; port < std::min(low, 32768); ++port) {
    if (port % 4000 != 0) avoid.push_back(port);
  }
  for (int i = 0; i < 10; ++i) {
    auto port = PickFreePort("127.0.0.1", avoid);
    ASSERT_TRUE(port.ok()) << port.status();
    EXPECT_EQ(std::find(avoid.begin(), avoid.end(), *port), avoid.end()) << *port;
  }
}

TEST(PickFreePortTest, BadHostIsAnError) {
  auto port = PickFreePort("not-an-address");
  ASSERT_FALSE(port.ok());
  EXPECT_NE(std::string(port.status().message()).find("not-an-address"), std::string::npos);
}

}  // namespace
}  // namespace krasis

namespace krasis {
namespace {

// The workers' command lines carry the expert formats and the VRAM budget:
// the prefill worker maps the same conversion cache as the decode worker.
// Options for a fake install under `root`: service binaries that are empty
// scripts and a model directory with an empty config, ports picked.
LaunchOptions FakeInstall(const std::string& root) {
  const std::string bin = root + "/bin", model = root + "/model";
  std::filesystem::create_directories(bin);
  std::filesystem::create_directories(model);
  std::ofstream(model + "/config.json") << "{}";
  for (const char* name : {"loader", "decode", "prefill", "gateway"}) {
    const std::string exe = bin + "/krasis-" + name;
    std::ofstream(exe) << "#!/bin/sh\n";
    std::filesystem::permissions(exe, std::filesystem::perms::owner_all);
  }
  LaunchOptions options;
  options.model_dir = model;
  options.bin_dir = bin;
  options.home = root + "/home";
  options.port = options.grpc_port = 0;
  return options;
}

TEST(MakeLaunchPlanTest, PrefillWorkerGetsItsExpertFormatCacheAndBudget) {
  const std::string root = ::testing::TempDir() + "/krasis_launch_plan_" + std::to_string(getpid());
  LaunchOptions options = FakeInstall(root);
  options.experts = "int4";
  options.prefill_experts = "int4";
  options.vram_budget = "16G";
  options.prefill_cuda_devices = "0,1";
  auto plan = MakeLaunchPlan(options, 4242);
  ASSERT_TRUE(plan.ok()) << plan.status();
  auto argv_of = [&](const std::string& name) {
    for (const ChildSpec& c : plan->children) {
      if (c.name == name) return c.argv;
    }
    return std::vector<std::string>{};
  };
  auto value = [](const std::vector<std::string>& argv, const std::string& flag) {
    auto it = std::find(argv.begin(), argv.end(), flag);
    return it == argv.end() || it + 1 == argv.end() ? std::string("<missing>") : *(it + 1);
  };
  const auto decode = argv_of("decode"), prefill = argv_of("prefill");
  EXPECT_EQ(value(prefill, "--experts"), "int4");
  EXPECT_EQ(value(prefill, "--vram-budget"), "16G");
  EXPECT_EQ(value(prefill, "--cuda-devices"), "0,1");
  EXPECT_EQ(value(prefill, "--cache-dir"), value(decode, "--cache-dir"));
  EXPECT_EQ(value(prefill, "--cache-dir"), options.home + "/cache");
  options.vram_budget.clear();
  options.prefill_cuda_devices.clear();
  options.prefill_experts = "bf16";
  plan = MakeLaunchPlan(options, 4243);
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_EQ(value(argv_of("prefill"), "--experts"), "bf16");
  EXPECT_EQ(value(argv_of("prefill"), "--vram-budget"), "<missing>");
  EXPECT_EQ(value(argv_of("prefill"), "--cuda-devices"), "<missing>");
  std::filesystem::remove_all(root);
}

// Every port of a plan differs from the others, and a port the user fixed that
// another program holds is a clear error before anything starts.
TEST(MakeLaunchPlanTest, PortsDifferAndAFixedPortInUseIsAnError) {
  const std::string root = ::testing::TempDir() + "/krasis_launch_ports_" + std::to_string(getpid());
  LaunchOptions options = FakeInstall(root);
  for (int i = 0; i < 50; ++i) {
    auto plan = MakeLaunchPlan(options, 4244);
    ASSERT_TRUE(plan.ok()) << plan.status();
    std::set<std::string> ports;
    for (const std::string& address : {plan->loader_address, plan->decode_address, plan->prefill_address,
                                       plan->gateway_grpc_address, plan->http_address}) {
      ports.insert(address.substr(address.rfind(':') + 1));
    }
    EXPECT_EQ(ports.size(), 5u) << plan->http_address;
  }

  ListeningSocket socket;
  const int held = socket.port();
  options.host = "127.0.0.1";
  options.port = held;
  auto plan = MakeLaunchPlan(options, 4245);
  ASSERT_FALSE(plan.ok());
  EXPECT_EQ(plan.status().code(), absl::StatusCode::kAlreadyExists) << plan.status();
  EXPECT_NE(plan.status().message().find(std::to_string(held)), std::string::npos) << plan.status();
  options.port = 0;
  options.grpc_port = held;
  EXPECT_EQ(MakeLaunchPlan(options, 4246).status().code(), absl::StatusCode::kAlreadyExists);
  std::filesystem::remove_all(root);
}

}  // namespace
}  // namespace krasis
