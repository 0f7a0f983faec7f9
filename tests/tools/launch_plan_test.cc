// PickFreePort: a port that is free to bind right away, below the kernel's
// ephemeral range (where nothing binding port 0 or connecting out can take it
// before the launcher's child listens), different from call to call.
#include "tools/krasis/launch_plan.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <fstream>
#include <set>

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

TEST(PickFreePortTest, BadHostIsAnError) {
  auto port = PickFreePort("not-an-address");
  ASSERT_FALSE(port.ok());
  EXPECT_NE(std::string(port.status().message()).find("not-an-address"), std::string::npos);
}

}  // namespace
}  // namespace krasis
