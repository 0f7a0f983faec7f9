// krasis prepare (see prepare_command.h).
#include "tools/krasis/prepare_command.h"

#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <set>

#include <boost/program_options.hpp>

#include "common/logging.h"
#include "common/models/model.h"

namespace krasis {

namespace {

namespace po = boost::program_options;
using Clock = std::chrono::steady_clock;

std::string Bytes(double b) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  int u = 0;
  while (b >= 1024 && u < 4) {
    b /= 1024;
    ++u;
  }
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.1f %s", b, units[u]);
  return buf;
}

// One line, redrawn: [#####.....] layer 3/26  1.2 GiB  410 MiB/s  ETA 12s
void DrawProgress(int done, int total, double bytes, double seconds, bool tty) {
  const int width = 30;
  const int filled = total > 0 ? done * width / total : width;
  const double rate = seconds > 0 ? bytes / seconds : 0;
  const double eta = done > 0 ? seconds * (total - done) / done : 0;
  std::string bar(static_cast<size_t>(filled), '#');
  bar.resize(width, '.');
  std::fprintf(stderr, "%s[%s] layer %d/%d  %s  %s/s  ETA %.0fs%s", tty ? "\r" : "", bar.c_str(), done, total,
               Bytes(bytes).c_str(), Bytes(rate).c_str(), eta, tty ? "" : "\n");
  std::fflush(stderr);
}

}  // namespace

int PrepareCommand(int argc, char** argv, const char* default_model_dir, const char* default_home) {
  std::string model_dir = default_model_dir, cpu = "int4", gpu = "bf16", gguf;
  std::string cache_dir = (std::filesystem::path(default_home) / "cache").string();
  int64_t group_size = 128;
  po::options_description desc("krasis prepare options");
  desc.add_options()("help,h", "print this help and exit")(
      "model", po::value(&model_dir)->default_value(model_dir), "model directory (config.json + safetensors)")(
      "cpu-experts", po::value(&cpu)->default_value(cpu), "decode (CPU) expert format: int4 or int8")(
      "gpu-experts", po::value(&gpu)->default_value(gpu), "prefill (GPU) expert format: bf16, int8 or int4")(
      "group-size", po::value(&group_size)->default_value(group_size), "quantization group size")(
      "gguf-experts", po::value(&gguf), "take the routed experts from this GGUF file (Q4_0 ... Q6_K, BF16, F16, F32)")(
      "cache-dir", po::value(&cache_dir)->default_value(cache_dir), "conversion cache root");
  po::variables_map vm;
  try {
    po::store(po::command_line_parser(argc, argv).options(desc).run(), vm);
    if (vm.count("help")) {
      std::cout << "usage: krasis prepare [options]\n\n" << desc << "\n";
      return 0;
    }
    po::notify(vm);
  } catch (const po::error& e) {
    std::cerr << "krasis prepare: " << e.what() << " (see krasis prepare --help)\n";
    return 2;
  }
  auto cpu_format = ParseExpertFormat(cpu);
  auto gpu_format = ParseExpertFormat(gpu);
  if (!cpu_format || *cpu_format == ExpertFormat::kBf16) {
    std::cerr << "krasis prepare: --cpu-experts must be int4 or int8, not '" << cpu << "'\n";
    return 2;
  }
  if (!gpu_format) {
    std::cerr << "krasis prepare: --gpu-experts must be bf16, int8 or int4, not '" << gpu << "'\n";
    return 2;
  }
  if (group_size < 32 || (group_size & (group_size - 1)) != 0) {
    std::cerr << "krasis prepare: --group-size must be a power of two >= 32\n";
    return 2;
  }
  std::set<ExpertFormat> formats = {*cpu_format};
  if (*gpu_format != ExpertFormat::kBf16) formats.insert(*gpu_format);
  auto model = LoadModel(model_dir);
  if (!model.ok()) {
    std::cerr << "krasis prepare: " << model.status().message() << "\n";
    return 1;
  }
  const bool tty = isatty(STDERR_FILENO) != 0;
  for (ExpertFormat format : formats) {
    auto options = CachedExpertOptions(model_dir, cache_dir, format, group_size, gguf);
    if (!options.ok()) {
      std::cerr << "krasis prepare: " << options.status().message() << "\n";
      return 1;
    }
    std::cerr << "experts " << ExpertFormatName(format) << " (group " << group_size << ") -> " << options->cache_dir
              << "\n";
    const auto start = Clock::now();
    double bytes = 0;
    options->progress = [&](int done, int total, uint64_t layer_bytes) {
      bytes += static_cast<double>(layer_bytes);
      DrawProgress(done, total, bytes, std::chrono::duration<double>(Clock::now() - start).count(), tty);
    };
    absl::Status s = SetExpertFormat(**model, *options);
    if (tty) std::fprintf(stderr, "\n");
    if (!s.ok()) {
      std::cerr << "krasis prepare: " << s.message() << "\n";
      return 1;
    }
    std::cerr << "done: " << Bytes(bytes) << " in "
              << std::chrono::duration<double>(Clock::now() - start).count() << " s\n";
  }
  return 0;
}

}  // namespace krasis
