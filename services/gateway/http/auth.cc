// API-key check with constant-time comparison (see auth.h).
#include "services/gateway/http/auth.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "services/gateway/http/http_types.h"

namespace krasis::http {
namespace {

std::string_view Trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

}  // namespace

ApiKeyAuth::ApiKeyAuth(const std::vector<std::string>& keys) {
  for (const std::string& key : keys) {
    if (!key.empty()) digests_.push_back(Hash(key));
  }
}

ApiKeyAuth::Digest ApiKeyAuth::Hash(std::string_view text) {
  Digest digest{};
  unsigned int size = 0;
  EVP_Digest(text.data(), text.size(), digest.data(), &size, EVP_sha256(), nullptr);
  return digest;
}

ApiKeyAuth::Result ApiKeyAuth::Check(std::optional<std::string_view> authorization) const {
  if (!enabled()) return Result::kOk;
  if (!authorization) return Result::kMissing;
  std::string_view value = Trim(*authorization);
  constexpr std::string_view kScheme = "Bearer";
  if (value.empty() || EqualsIgnoreCase(value, kScheme)) return Result::kMissing;
  if (value.size() <= kScheme.size() || !EqualsIgnoreCase(value.substr(0, kScheme.size()), kScheme) ||
      (value[kScheme.size()] != ' ' && value[kScheme.size()] != '\t')) {
    return Result::kInvalid;
  }
  std::string_view key = Trim(value.substr(kScheme.size()));
  if (key.empty()) return Result::kMissing;
  Digest presented = Hash(key);
  int matches = 0;
  for (const Digest& digest : digests_) {
    matches |= CRYPTO_memcmp(presented.data(), digest.data(), digest.size()) == 0;
  }
  return matches ? Result::kOk : Result::kInvalid;
}

bool ConstantTimeEquals(std::string_view a, std::string_view b) {
  unsigned char da[EVP_MAX_MD_SIZE], db[EVP_MAX_MD_SIZE];
  unsigned int na = 0, nb = 0;
  EVP_Digest(a.data(), a.size(), da, &na, EVP_sha256(), nullptr);
  EVP_Digest(b.data(), b.size(), db, &nb, EVP_sha256(), nullptr);
  return na == nb && CRYPTO_memcmp(da, db, na) == 0;
}

}  // namespace krasis::http
