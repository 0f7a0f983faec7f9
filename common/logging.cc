// Logging setup (see logging.h).
#include "common/logging.h"

#include <cstdlib>
#include <string>

#include "absl/strings/ascii.h"
#include "common/status.h"
#include "spdlog/sinks/stdout_color_sinks.h"

namespace krasis {

absl::StatusOr<spdlog::level::level_enum> ParseLogLevel(std::string_view name) {
  std::string n = absl::AsciiStrToLower(std::string(name));
  if (n == "trace") return spdlog::level::trace;
  if (n == "debug") return spdlog::level::debug;
  if (n == "info") return spdlog::level::info;
  if (n == "warn" || n == "warning") return spdlog::level::warn;
  if (n == "error") return spdlog::level::err;
  if (n == "critical") return spdlog::level::critical;
  if (n == "off") return spdlog::level::off;
  return InvalidArgumentError("unknown log level '", name,
                              "' (expected trace, debug, info, warn, error, critical or off)");
}

absl::Status InitLogging(std::string_view service, std::string_view level) {
  std::string name(service);
  spdlog::drop(name);
  auto logger = spdlog::stderr_color_mt(name);
  spdlog::set_default_logger(logger);
  spdlog::set_pattern("[%Y-%m-%d %H:%M:%S.%e] [%n] [%^%l%$] %v");
  std::string wanted(level);
  if (wanted.empty()) {
    const char* env = std::getenv("KRASIS_LOG_LEVEL");
    wanted = env != nullptr ? env : "info";
  }
  auto parsed = ParseLogLevel(wanted);
  logger->set_level(parsed.ok() ? *parsed : spdlog::level::info);
  return parsed.status();
}

}  // namespace krasis
