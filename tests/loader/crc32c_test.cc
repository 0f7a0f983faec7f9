// CRC-32C: published check values for the software and (when the CPU has
// SSE4.2) hardware implementations, and the two agreeing on random data of
// every length and alignment, including when extended piece by piece.
#include "services/loader/crc32c.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <random>
#include <string>
#include <vector>

namespace krasis {
namespace {

using Impl = uint32_t (*)(uint32_t, const void*, size_t);

struct Named {
  const char* name;
  Impl fn;
};

std::vector<Named> Implementations() {
  std::vector<Named> impls = {{"software", &Crc32cExtendSoftware}, {"dispatch", &Crc32cExtend}};
  if (Crc32cHardwareAvailable()) impls.push_back({"sse4.2", &Crc32cExtendHardware});
  return impls;
}

uint32_t Of(Impl fn, const std::string& s) { return fn(0, s.data(), s.size()); }

TEST(Crc32cTest, KnownValues) {
  // loader.proto's check value and RFC 3720 (iSCSI) appendix B.4 vectors.
  std::string zeros(32, '\0'), ones(32, '\xff'), ascending(32, '\0'), descending(32, '\0');
  for (int i = 0; i < 32; ++i) {
    ascending[i] = static_cast<char>(i);
    descending[i] = static_cast<char>(31 - i);
  }
  for (const Named& impl : Implementations()) {
    SCOPED_TRACE(impl.name);
    EXPECT_EQ(Of(impl.fn, "123456789"), 0xE3069283u);
    EXPECT_EQ(Of(impl.fn, ""), 0u);
    EXPECT_EQ(Of(impl.fn, zeros), 0x8A9136AAu);
    EXPECT_EQ(Of(impl.fn, ones), 0x62A8AB43u);
    EXPECT_EQ(Of(impl.fn, ascending), 0x46DD794Eu);
    EXPECT_EQ(Of(impl.fn, descending), 0x113FDB5Cu);
  }
  EXPECT_EQ(Crc32c(std::string_view("123456789")), 0xE3069283u);
}

TEST(Crc32cTest, ImplementationsAgreeOnRandomData) {
  std::mt19937_64 rng(20240607);
  std::vector<unsigned char> data(1 << 16);
  for (auto& b : data) b = static_cast<unsigned char>(rng());
  const auto impls = Implementations();
  std::uniform_int_distribution<size_t> offset_dist(0, 15), len_dist(0, data.size() - 16);
  for (int trial = 0; trial < 500; ++trial) {
    // Every small length, then random lengths; random (mis)alignment.
    size_t len = trial < 100 ? static_cast<size_t>(trial) : len_dist(rng);
    size_t offset = offset_dist(rng);
    uint32_t seed = trial % 3 == 0 ? 0u : static_cast<uint32_t>(rng());
    uint32_t want = Crc32cExtendSoftware(seed, data.data() + offset, len);
    for (const Named& impl : impls) {
      EXPECT_EQ(impl.fn(seed, data.data() + offset, len), want)
          << impl.name << " len " << len << " offset " << offset;
    }
  }
  if (!Crc32cHardwareAvailable()) GTEST_SKIP() << "no SSE4.2 on this CPU: only software checked";
}

TEST(Crc32cTest, ExtendEqualsWhole) {
  std::mt19937_64 rng(7);
  std::vector<unsigned char> data(100000);
  for (auto& b : data) b = static_cast<unsigned char>(rng());
  const uint32_t whole = Crc32cExtendSoftware(0, data.data(), data.size());
  for (const Named& impl : Implementations()) {
    uint32_t crc = 0;
    size_t pos = 0;
    while (pos < data.size()) {
      size_t n = std::min<size_t>(data.size() - pos, 1 + rng() % 5000);
      crc = impl.fn(crc, data.data() + pos, n);
      pos += n;
    }
    EXPECT_EQ(crc, whole) << impl.name;
  }
}

}  // namespace
}  // namespace krasis
