// What `krasis serve` starts: the command line of each service, the ports, the
// ready files, and the server file that lets clients find a running cluster
// (<home>/servers/<pid>.json). Kept apart from main() so tests can check it.
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "tools/krasis/supervisor.h"

namespace krasis {

struct LaunchOptions {
  std::string host = "127.0.0.1";  // where the gateway listens
  int port = 8012;                 // OpenAI REST port (0: pick one)
  int grpc_port = 8013;            // public gRPC Inference port (0: pick one)
  std::string model_dir;           // the model every worker serves
  std::string model_id;            // its API name (default: folder name)
  int64_t kv_budget_mb = 1024;     // decode worker KV cache
  std::string kv_cache_dtype = "bf16";  // what both workers' KV caches store: bf16, f16, f32
  int64_t prefill_threshold = 512; // uncached prompt tokens sent to the prefill worker
  std::vector<std::string> api_keys;  // gateway API keys (none: no auth)
  std::string experts = "bf16";    // decode worker's routed experts: bf16, int8, int4
  std::string prefill_experts = "bf16";  // prefill worker's: bf16, int8, int4 (same files as decode's when equal)
  std::string vram_budget;         // prefill worker's GPU memory budget (empty: free minus a margin)
  std::string prefill_cuda_devices;  // e.g. "0,1": the prefill worker splits the model across these cards
  std::string home;                // ~/.krasis
  std::string bin_dir;             // folder holding the krasis-* service binaries
  std::string log_level;
};

struct LaunchPlan {
  LaunchOptions options;
  int pid = 0;
  std::string run_dir;      // <home>/run/<pid>: ready files
  std::string server_file;  // <home>/servers/<pid>.json
  std::string loader_address, decode_address, prefill_address, gateway_grpc_address, http_address;
  std::vector<ChildSpec> children;  // in start order: loader, decode, prefill, gateway
};

// Picks free loopback ports for the internal services (fixed for the life of the
// launcher, so a restarted service comes back at the same address) and builds
// the children's command lines. Fails when a binary is missing.
absl::StatusOr<LaunchPlan> MakeLaunchPlan(const LaunchOptions& options, int pid);

// Writes <home>/servers/<pid>.json: pid, gRPC address, every service's address.
absl::Status WriteServerFile(const LaunchPlan& plan);

// Human-readable lines: where each service listens.
std::string DescribePlan(const LaunchPlan& plan);

// A currently free TCP port on `host`, none of `avoid` (the ports a plan has
// already handed out, which nothing holds yet), preferably below the kernel's
// ephemeral range (random tries, bound and closed again), so that nothing that
// binds port 0 or connects out takes it before the child listens on it; else
// the kernel's choice for port 0.
absl::StatusOr<int> PickFreePort(const std::string& host, const std::vector<int>& avoid = {});

}  // namespace krasis
