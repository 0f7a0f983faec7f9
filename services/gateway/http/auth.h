// API-key check for the gateway's HTTP routes.
//
// When keys are configured, requests must carry "Authorization: Bearer <key>".
// Keys are stored as SHA-256 digests and a presented key is hashed and compared
// with CRYPTO_memcmp against every configured digest (no early exit), so neither
// the comparison time nor the loop reveals how much of a key matched.
#pragma once

#include <array>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace krasis::http {

class ApiKeyAuth {
 public:
  enum class Result { kOk, kMissing, kInvalid };

  // Empty strings in `keys` are ignored; no keys at all disables the check.
  explicit ApiKeyAuth(const std::vector<std::string>& keys = {});

  bool enabled() const { return !digests_.empty(); }

  // Checks an Authorization header value ("Bearer <key>"; the scheme is matched
  // ignoring case). Always kOk when disabled.
  Result Check(std::optional<std::string_view> authorization) const;

 private:
  using Digest = std::array<unsigned char, 32>;
  static Digest Hash(std::string_view text);

  std::vector<Digest> digests_;
};

// Constant-time equality of two strings (compares SHA-256 digests, so the time
// does not depend on where they differ, nor on their lengths beyond hashing).
bool ConstantTimeEquals(std::string_view a, std::string_view b);

}  // namespace krasis::http
