// TCP port probing (see ports.h).
#include "common/ports.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <cstring>

#include "common/status.h"

namespace krasis {

absl::StatusOr<int> ProbeBind(const std::string& host, int port) {
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  if (inet_pton(AF_INET, host.c_str(), &addr.sin_addr) != 1) {
    return InvalidArgumentError("'", host, "' is not an IPv4 address");
  }
  if (port < 0 || port > 65535) return InvalidArgumentError("port ", port, " is out of range");
  addr.sin_port = htons(static_cast<uint16_t>(port));
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return absl::UnavailableError(StrCat("cannot open a socket: ", std::strerror(errno)));
  if (bind(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof(addr)) != 0) {
    const int err = errno;
    close(fd);
    std::string what = StrCat("cannot bind ", host, ":", port, ": ", std::strerror(err));
    return err == EADDRINUSE ? absl::AlreadyExistsError(what) : absl::UnavailableError(what);
  }
  socklen_t len = sizeof(addr);
  getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  close(fd);
  return static_cast<int>(ntohs(addr.sin_port));
}

bool AddressInUse(std::string_view host_port) {
  const size_t colon = host_port.rfind(':');
  if (colon == std::string_view::npos) return false;
  int port = 0;
  const char* first = host_port.data() + colon + 1;
  const char* last = host_port.data() + host_port.size();
  auto [end, ec] = std::from_chars(first, last, port);
  if (ec != std::errc() || end != last || port <= 0) return false;
  auto probe = ProbeBind(std::string(host_port.substr(0, colon)), port);
  return !probe.ok() && absl::IsAlreadyExists(probe.status());
}

}  // namespace krasis
