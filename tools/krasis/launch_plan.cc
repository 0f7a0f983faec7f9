// Launch plan for `krasis serve` (see launch_plan.h).
#include "tools/krasis/launch_plan.h"

#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <random>
#include <utility>

#include <nlohmann/json.hpp>

#include "common/ports.h"
#include "common/status.h"

namespace krasis {

namespace fs = std::filesystem;

namespace {

// The kernel's ephemeral range (where port 0 binds and outgoing connections
// take their source ports).
std::pair<int, int> EphemeralRange() {
  int low = 32768, high = 60999;
  std::ifstream in("/proc/sys/net/ipv4/ip_local_port_range");
  in >> low >> high;
  return {low, high};
}

}  // namespace

absl::StatusOr<int> PickFreePort(const std::string& host, const std::vector<int>& avoid) {
  auto avoided = [&](int port) { return std::find(avoid.begin(), avoid.end(), port) != avoid.end(); };
  // The port is closed again until the child binds it, so prefer one outside
  // the ephemeral range: an outgoing connection or another port-0 bind cannot
  // take it in the meantime. Random tries, then the kernel's choice.
  const auto [low, high] = EphemeralRange();
  const int first = 20000, last = std::min(low - 1, 32767);
  if (last - first > 1000) {
    std::random_device seed;
    std::mt19937 rng(seed());
    std::uniform_int_distribution<int> pick(first, last);
    for (int attempt = 0; attempt < 64; ++attempt) {
      const int candidate = pick(rng);
      if (avoided(candidate)) continue;
      auto port = ProbeBind(host, candidate);
      if (port.ok()) return *port;
      if (absl::IsInvalidArgument(port.status())) return port.status();
    }
  }
  for (int attempt = 0; attempt < 16; ++attempt) {
    ASSIGN_OR_RETURN(int port, ProbeBind(host, 0));
    if (!avoided(port)) return port;
  }
  return absl::UnavailableError(StrCat("cannot find a free port on ", host));
}

absl::StatusOr<LaunchPlan> MakeLaunchPlan(const LaunchOptions& options, int pid) {
  LaunchPlan plan;
  plan.options = options;
  plan.pid = pid;
  plan.run_dir = (fs::path(options.home) / "run" / std::to_string(pid)).string();
  plan.server_file = (fs::path(options.home) / "servers" / (std::to_string(pid) + ".json")).string();
  std::error_code ec;
  fs::create_directories(plan.run_dir, ec);
  if (ec) return InternalError("cannot create ", plan.run_dir, ": ", ec.message());

  auto address_of = [](const std::string& host, int port) { return StrCat(host, ":", port); };
  // A port the user fixed must be free now (a clear error instead of a
  // gateway that dies at start); every other port is picked different from
  // all the plan's ports, which are only bound once the children start.
  std::vector<int> taken;
  for (int fixed : {options.grpc_port, options.port}) {
    if (fixed == 0) continue;
    if (auto probe = ProbeBind(options.host, fixed); !probe.ok()) {
      return absl::Status(probe.status().code(),
                          StrCat(probe.status().message(), absl::IsAlreadyExists(probe.status())
                                                               ? " (another program listens there; pick another port)"
                                                               : ""));
    }
    taken.push_back(fixed);
  }
  auto pick = [&](const std::string& host) -> absl::StatusOr<int> {
    ASSIGN_OR_RETURN(int port, PickFreePort(host, taken));
    taken.push_back(port);
    return port;
  };
  ASSIGN_OR_RETURN(int loader_port, pick("127.0.0.1"));
  ASSIGN_OR_RETURN(int decode_port, pick("127.0.0.1"));
  ASSIGN_OR_RETURN(int prefill_port, pick("127.0.0.1"));
  int grpc_port = options.grpc_port;
  if (grpc_port == 0) {
    ASSIGN_OR_RETURN(grpc_port, pick(options.host));
  }
  plan.loader_address = address_of("127.0.0.1", loader_port);
  plan.decode_address = address_of("127.0.0.1", decode_port);
  plan.prefill_address = address_of("127.0.0.1", prefill_port);
  plan.gateway_grpc_address = address_of(options.host, grpc_port);
  int http_port = options.port;
  if (http_port == 0) {
    ASSIGN_OR_RETURN(http_port, pick(options.host));
  }
  plan.http_address = address_of(options.host, http_port);
  if (options.model_dir.empty() || !fs::exists(fs::path(options.model_dir) / "config.json")) {
    return NotFoundError("model directory '", options.model_dir, "' has no config.json (pass --model DIR)");
  }
  std::string model_id = options.model_id.empty()
                             ? fs::path(options.model_dir).lexically_normal().filename().string()
                             : options.model_id;
  if (model_id.empty()) model_id = fs::path(options.model_dir).lexically_normal().parent_path().filename().string();

  auto child = [&](const std::string& name, const std::string& listen) -> absl::StatusOr<ChildSpec> {
    std::string exe = (fs::path(options.bin_dir) / ("krasis-" + name)).string();
    if (access(exe.c_str(), X_OK) != 0) {
      return NotFoundError("service binary ", exe, " is missing (build it with scripts/build)");
    }
    ChildSpec spec;
    spec.name = name;
    spec.ready_file = (fs::path(plan.run_dir) / (name + ".ready.json")).string();
    spec.argv = {exe, "--listen", listen, "--ready-file", spec.ready_file};
    if (!options.log_level.empty()) {
      spec.argv.push_back("--log-level");
      spec.argv.push_back(options.log_level);
    }
    return spec;
  };
  ASSIGN_OR_RETURN(ChildSpec loader, child("loader", plan.loader_address));
  // The loader serves <home>/models and converts into <home>/cache.
  for (const char* leaf : {"models", "cache"}) {
    loader.argv.push_back(StrCat("--", leaf, "-dir"));
    loader.argv.push_back((fs::path(options.home) / leaf).string());
  }
  loader.argv.insert(loader.argv.end(), {"--model", options.model_dir});
  ASSIGN_OR_RETURN(ChildSpec decode, child("decode", plan.decode_address));
  decode.argv.insert(decode.argv.end(), {"--model", options.model_dir, "--model-id", model_id, "--kv-budget-mb",
                                         std::to_string(options.kv_budget_mb), "--kv-cache-dtype",
                                         options.kv_cache_dtype, "--experts", options.experts,
                                         "--cache-dir", (fs::path(options.home) / "cache").string()});
  ASSIGN_OR_RETURN(ChildSpec prefill, child("prefill", plan.prefill_address));
  prefill.argv.insert(prefill.argv.end(), {"--model", options.model_dir, "--model-id", model_id,
                                           "--kv-cache-dtype", options.kv_cache_dtype, "--experts",
                                           options.prefill_experts, "--cache-dir",
                                           (fs::path(options.home) / "cache").string()});
  if (!options.vram_budget.empty()) prefill.argv.insert(prefill.argv.end(), {"--vram-budget", options.vram_budget});
  if (!options.prefill_cuda_devices.empty()) {
    prefill.argv.insert(prefill.argv.end(), {"--cuda-devices", options.prefill_cuda_devices});
  }
  ASSIGN_OR_RETURN(ChildSpec gateway, child("gateway", plan.gateway_grpc_address));
  gateway.argv.insert(gateway.argv.end(), {"--model", options.model_dir, "--model-id", model_id, "--http-listen",
                                           plan.http_address, "--decode", plan.decode_address, "--prefill",
                                           plan.prefill_address, "--prefill-threshold",
                                           std::to_string(options.prefill_threshold)});
  for (const std::string& key : options.api_keys) gateway.argv.insert(gateway.argv.end(), {"--api-key", key});
  plan.children = {loader, decode, prefill, gateway};
  return plan;
}

absl::Status WriteServerFile(const LaunchPlan& plan) {
  nlohmann::json j = {
      {"pid", plan.pid},
      {"http_address", plan.http_address},
      {"base_url", StrCat("http://", plan.http_address, "/v1")},
      {"model", plan.options.model_dir},
      {"grpc_address", plan.gateway_grpc_address},
      {"services",
       {{"loader", plan.loader_address},
        {"decode", plan.decode_address},
        {"prefill", plan.prefill_address},
        {"gateway", plan.gateway_grpc_address}}}};
  fs::path path(plan.server_file);
  std::error_code ec;
  fs::create_directories(path.parent_path(), ec);
  std::string tmp = plan.server_file + ".tmp";
  {
    std::ofstream out(tmp, std::ios::trunc);
    out << j.dump(2) << "\n";
    if (!out) return InternalError("cannot write ", tmp);
  }
  fs::rename(tmp, path, ec);
  if (ec) return InternalError("cannot write ", plan.server_file, ": ", ec.message());
  return absl::OkStatus();
}

std::string DescribePlan(const LaunchPlan& plan) {
  return StrCat("krasis is running (pid ", plan.pid, ")\n",
                "  model              ", plan.options.model_dir, "\n",
                "  OpenAI API         http://", plan.http_address, "/v1\n",
                "  gRPC Inference API  ", plan.gateway_grpc_address, "\n",
                "  loader             ", plan.loader_address, "\n",
                "  decode worker      ", plan.decode_address, "\n",
                "  prefill worker     ", plan.prefill_address, "\n",
                "  server file        ", plan.server_file, "\n",
                "Press Ctrl-C to stop.\n");
}

}  // namespace krasis
