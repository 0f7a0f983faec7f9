// `krasis`: the one command that runs the whole cluster on one machine.
//
//   krasis serve [--model DIR] [--port 8012] [--grpc-port 8013] [--host 127.0.0.1]
//
// starts the loader, decode, prefill and gateway services as child processes on
// loopback, supervises them (restart with backoff; clean shutdown of all on SIGINT
// or SIGTERM), prints where it listens, and writes <home>/servers/<pid>.json so
// clients can find it. Later issues add the HTTP port, models, chat and bench.
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <optional>

#include <boost/program_options.hpp>
#include <nlohmann/json.hpp>

#include "common/logging.h"
#include "tools/krasis/launch_plan.h"
#include "tools/krasis/prepare_command.h"
#include "tools/krasis/supervisor.h"

namespace fs = std::filesystem;
namespace po = boost::program_options;

namespace {

std::atomic<bool> g_stop{false};
void OnSignal(int) { g_stop = true; }

std::string DefaultHome() {
  const char* home = std::getenv("HOME");
  return (fs::path(home != nullptr ? home : "/tmp") / ".krasis").string();
}

int Serve(int argc, char** argv) {
  krasis::LaunchOptions opts;
  opts.home = DefaultHome();
  opts.model_dir = KRASIS_DEMO_MODEL_DIR;
  std::string log_level;
  int64_t ready_timeout_s = 1800;
  po::options_description desc("krasis serve options");
  desc.add_options()
      ("help,h", "print this help and exit")
      ("host", po::value(&opts.host)->default_value(opts.host),
       "address the gateway listens on (internal services always use loopback)")
      ("model", po::value(&opts.model_dir)->default_value(opts.model_dir),
       "model directory to serve (default: the built-in demo model)")
      ("model-id", po::value(&opts.model_id), "the model's name in the API (default: folder name)")
      ("port", po::value(&opts.port)->default_value(opts.port), "OpenAI REST port (0 picks a free port)")
      ("kv-budget-mb", po::value(&opts.kv_budget_mb)->default_value(opts.kv_budget_mb),
       "RAM for the decode worker's KV cache, MiB")
      ("kv-cache-dtype", po::value(&opts.kv_cache_dtype)->default_value(opts.kv_cache_dtype),
       "what the KV caches store (both workers, and the KV sent between them): bf16, f16 or f32")
      ("grpc-port", po::value(&opts.grpc_port)->default_value(opts.grpc_port),
       "port of the public gRPC Inference API (0 picks a free port)")
      ("prefill-threshold", po::value(&opts.prefill_threshold)->default_value(opts.prefill_threshold),
       "uncached prompt tokens from which the prefill worker is used (shorter ones prefill on the decode worker)")
      ("experts", po::value(&opts.experts)->default_value(opts.experts),
       "routed experts on the decode worker: bf16 (as stored), int8 or int4 (quantized CPU kernels)")
      ("prefill-experts", po::value(&opts.prefill_experts)->default_value(opts.prefill_experts),
       "routed experts on the prefill worker: bf16 (as stored), int8 or int4 (the conversion cache's files; the "
       "same as --experts means one copy in RAM for both workers)")
      ("vram-budget", po::value(&opts.vram_budget),
       "GPU memory the prefill worker may use, e.g. 16G (default: what is free minus 1 GiB); routed experts that "
       "do not fit stream from host RAM")
      ("prefill-cuda-devices", po::value(&opts.prefill_cuda_devices),
       "several GPUs for the prefill worker, e.g. 0,1: its layers split between them as a pipeline (NCCL; "
       "krasis-prefill --cuda-split), each with --vram-budget")
      ("api-key", po::value(&opts.api_keys)->multitoken(),
       "API key clients must send (repeatable; default: $KRASIS_API_KEY if set, else no auth)")
      ("home", po::value(&opts.home)->default_value(opts.home),
       "Krasis state folder (servers/, run/, models/, cache/)")
      ("ready-timeout-s", po::value(&ready_timeout_s)->default_value(ready_timeout_s),
       "how long a service may take to start (loading and quantizing a large model takes minutes)")
      ("log-level", po::value(&log_level), "trace, debug, info, warn, error");
  po::variables_map vm;
  try {
    po::store(po::command_line_parser(argc, argv).options(desc).run(), vm);
    if (vm.count("help")) {
      std::cout << "usage: krasis serve [options]\n\n" << desc << "\n";
      return 0;
    }
    po::notify(vm);
  } catch (const po::error& e) {
    std::cerr << "krasis serve: " << e.what() << " (see krasis serve --help)\n";
    return 2;
  }
  if (auto s = krasis::InitLogging("krasis", log_level); !s.ok()) {
    std::cerr << "krasis serve: " << s.message() << "\n";
    return 2;
  }
  opts.log_level = log_level;
  if (const char* key = std::getenv("KRASIS_API_KEY"); opts.api_keys.empty() && key != nullptr && *key != '\0') {
    opts.api_keys.push_back(key);
  }
  opts.bin_dir = fs::read_symlink("/proc/self/exe").parent_path().string();

  struct sigaction sa {};
  sa.sa_handler = OnSignal;
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);

  krasis::SupervisorOptions supervisor_options;
  supervisor_options.ready_timeout = std::chrono::seconds(ready_timeout_s);
  // The internal ports are picked free but only bound when each child starts,
  // so another program can take one in between; a child whose address is taken
  // exits with kExitAddressInUse and the cluster starts again on new ports.
  constexpr int kStartAttempts = 3;
  absl::StatusOr<krasis::LaunchPlan> plan;
  std::optional<krasis::Supervisor> supervisor;
  for (int attempt = 1;; ++attempt) {
    plan = krasis::MakeLaunchPlan(opts, getpid());
    if (!plan.ok()) {
      KLOG_ERROR("{}", plan.status().ToString());
      return 1;
    }
    supervisor.emplace(supervisor_options);
    absl::Status s = supervisor->StartAll(plan->children);
    if (s.ok()) break;
    if (absl::IsAlreadyExists(s) && attempt < kStartAttempts && !g_stop) {
      KLOG_WARN("{}; starting again on other ports (attempt {} of {})", s.ToString(), attempt + 1, kStartAttempts);
      continue;
    }
    KLOG_ERROR("the cluster did not start: {}", s.ToString());
    return 1;
  }
  if (auto s = krasis::WriteServerFile(*plan); !s.ok()) {
    KLOG_ERROR("{}", s.ToString());
    supervisor->StopAll();
    return 1;
  }
  if (opts.model_dir == KRASIS_DEMO_MODEL_DIR) {
    std::cout << "Serving the built-in demo model: a tiny Qwen3-MoE (4.3M parameters) trained for four\n"
                 "minutes on Python sources. It writes code-flavoured English, not answers; point\n"
                 "--model at a real model directory for real use.\n";
  }
  std::cout << krasis::DescribePlan(*plan) << std::flush;
  supervisor->Run(g_stop);
  KLOG_INFO("shutting down");
  supervisor->StopAll();
  std::error_code ec;
  fs::remove(plan->server_file, ec);
  fs::remove_all(plan->run_dir, ec);
  return 0;
}

void Usage(std::ostream& out) {
  out << "usage: krasis <command> [options]\n\n"
         "commands:\n"
         "  serve     start the whole cluster on this machine (krasis serve --help)\n"
         "  prepare   build a model's conversion cache (quantized experts; krasis prepare --help)\n"
         "  version   print the version\n";
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    Usage(std::cerr);
    return 2;
  }
  std::string command = argv[1];
  if (command == "serve") return Serve(argc - 1, argv + 1);
  if (command == "prepare") {
    (void)krasis::InitLogging("krasis", "");
    return krasis::PrepareCommand(argc - 1, argv + 1, KRASIS_DEMO_MODEL_DIR, DefaultHome().c_str());
  }
  if (command == "version" || command == "--version") {
    std::cout << "krasis " << KRASIS_VERSION << "\n";
    return 0;
  }
  if (command == "help" || command == "--help" || command == "-h") {
    Usage(std::cout);
    return 0;
  }
  std::cerr << "krasis: unknown command '" << command << "'\n";
  Usage(std::cerr);
  return 2;
}
