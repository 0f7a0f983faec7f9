// TCP ports on this host: probing whether one can be bound, and the exit status
// a service uses when its listen address is taken, so that the `krasis`
// launcher can tell "someone else has that port" (pick others and start again)
// from any other failure to start.
#pragma once

#include <string>
#include <string_view>

#include "absl/status/statusor.h"

namespace krasis {

// Exit status of a service whose --listen (or --http-listen) address is in use
// (98 is EADDRINUSE on Linux).
inline constexpr int kExitAddressInUse = 98;

// Binds `port` on the IPv4 address `host` (port 0: the kernel's choice) and
// closes it again. Returns the port bound; on failure an error whose code is
// ALREADY_EXISTS when the port is in use, INVALID_ARGUMENT for a bad host,
// UNAVAILABLE otherwise.
absl::StatusOr<int> ProbeBind(const std::string& host, int port);

// True when `host_port` ("127.0.0.1:8000") names an IPv4 address and port
// that another socket holds right now.
bool AddressInUse(std::string_view host_port);

}  // namespace krasis
