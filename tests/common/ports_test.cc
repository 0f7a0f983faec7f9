// ProbeBind and AddressInUse: a port another socket listens on is "in use"
// (ALREADY_EXISTS), a free one binds, bad input is an error and never "in use".
#include "common/ports.h"

#include <gtest/gtest.h>

#include <string>

#include "tests/common/listening_socket.h"

namespace krasis {
namespace {

TEST(PortsTest, AListenedPortIsInUseAndFreeOnceClosed) {
  int port = 0;
  {
    ListeningSocket listener;
    port = listener.port();
    ASSERT_GT(port, 0);
    auto probe = ProbeBind("127.0.0.1", port);
    ASSERT_FALSE(probe.ok());
    EXPECT_TRUE(absl::IsAlreadyExists(probe.status())) << probe.status();
    EXPECT_NE(probe.status().message().find(std::to_string(port)), std::string::npos) << probe.status();
    EXPECT_TRUE(AddressInUse("127.0.0.1:" + std::to_string(port)));
  }
  EXPECT_FALSE(AddressInUse("127.0.0.1:" + std::to_string(port)));
  auto again = ProbeBind("127.0.0.1", port);
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(*again, port);
}

TEST(PortsTest, PortZeroBindsAKernelChoice) {
  auto port = ProbeBind("127.0.0.1", 0);
  ASSERT_TRUE(port.ok()) << port.status();
  EXPECT_GT(*port, 0);
}

TEST(PortsTest, BadInputIsAnErrorNotInUse) {
  EXPECT_TRUE(absl::IsInvalidArgument(ProbeBind("not-an-address", 80).status()));
  EXPECT_TRUE(absl::IsInvalidArgument(ProbeBind("127.0.0.1", 70000).status()));
  for (const char* bad : {"", "127.0.0.1", "127.0.0.1:", "127.0.0.1:x", "127.0.0.1:0", "nohost:80", ":80"}) {
    EXPECT_FALSE(AddressInUse(bad)) << bad;
  }
}

}  // namespace
}  // namespace krasis
