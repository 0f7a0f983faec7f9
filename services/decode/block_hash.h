// Chained token-block hashes that name KV blocks (proto/krasis/v1/decode.proto):
//   hash(block 0) = SHA-256(32 zero bytes || tokens[0 .. B))
//   hash(block i) = SHA-256(hash(block i-1) || tokens[i*B .. (i+1)*B))
// tokens as little-endian int32. Equal prefixes get equal hashes on every worker,
// so the gateway can route to the worker holding the longest prefix.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

namespace krasis {

using BlockHash = std::string;  // 32 raw digest bytes

// The hash of one full block after `parent` (empty parent = the first block).
BlockHash HashBlock(const BlockHash& parent, std::span<const int32_t> tokens);

// Hashes of every full block of `tokens` (a trailing partial block has none).
std::vector<BlockHash> ChainedBlockHashes(std::span<const int32_t> tokens, int64_t block_size);

}  // namespace krasis
