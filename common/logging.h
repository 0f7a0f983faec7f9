// Logging for every Krasis process, on spdlog.
//
// Each service calls InitLogging("gateway") once at startup; afterwards the
// spdlog default logger carries that name, so `spdlog::info(...)` (or the KLOG_*
// shorthands) prints "[time] [gateway] [info] ...". The level comes from the
// argument, or from KRASIS_LOG_LEVEL when the argument is empty.
#pragma once

#include <string_view>

#include "absl/status/statusor.h"
#include "spdlog/spdlog.h"

namespace krasis {

// Parses "trace", "debug", "info", "warn"/"warning", "error", "critical", "off".
absl::StatusOr<spdlog::level::level_enum> ParseLogLevel(std::string_view name);

// Installs a stderr logger named `service` as spdlog's default logger. An empty
// `level` reads KRASIS_LOG_LEVEL, defaulting to "info". Returns an error for an
// unknown level name (the logger is still installed, at "info").
absl::Status InitLogging(std::string_view service, std::string_view level = "");

}  // namespace krasis

#define KLOG_TRACE(...) ::spdlog::trace(__VA_ARGS__)
#define KLOG_DEBUG(...) ::spdlog::debug(__VA_ARGS__)
#define KLOG_INFO(...) ::spdlog::info(__VA_ARGS__)
#define KLOG_WARN(...) ::spdlog::warn(__VA_ARGS__)
#define KLOG_ERROR(...) ::spdlog::error(__VA_ARGS__)
