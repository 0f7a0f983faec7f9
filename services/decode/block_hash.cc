// Chained block hashes (see block_hash.h), on OpenSSL's SHA-256.
#include "services/decode/block_hash.h"

#include <openssl/evp.h>

namespace krasis {

BlockHash HashBlock(const BlockHash& parent, std::span<const int32_t> tokens) {
  std::string bytes = parent.empty() ? std::string(32, '\0') : parent;
  for (int32_t t : tokens) {
    uint32_t u = static_cast<uint32_t>(t);
    for (int shift = 0; shift < 32; shift += 8) bytes.push_back(static_cast<char>((u >> shift) & 0xff));
  }
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int length = 0;
  EVP_Digest(bytes.data(), bytes.size(), digest, &length, EVP_sha256(), nullptr);
  return BlockHash(reinterpret_cast<const char*>(digest), length);
}

std::vector<BlockHash> ChainedBlockHashes(std::span<const int32_t> tokens, int64_t block_size) {
  std::vector<BlockHash> out;
  BlockHash parent;
  for (size_t start = 0; start + block_size <= tokens.size(); start += block_size) {
    parent = HashBlock(parent, tokens.subspan(start, static_cast<size_t>(block_size)));
    out.push_back(parent);
  }
  return out;
}

}  // namespace krasis
