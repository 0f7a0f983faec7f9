// CRC-32C (Castagnoli), the checksum of every byte the loader serves.
//
// Parameters as loader.proto fixes them: reflected polynomial 0x82F63B78,
// initial value and final xor 0xFFFFFFFF; Crc32c("123456789") == 0xE3069283.
// x86-64 CPUs with SSE4.2 compute it with the crc32 instruction (several GB/s per
// core, so both ends of a weight transfer can check every byte); elsewhere a
// slicing-by-8 table does it in software. The hardware path is chosen once at
// run time; both are exposed so tests can compare them.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>

namespace krasis {

// CRC-32C of `data`, continuing from `crc`, the CRC-32C of the bytes before it
// (0 for none): Crc32c(ab) == Crc32cExtend(Crc32c(a), b).
uint32_t Crc32cExtend(uint32_t crc, const void* data, size_t size);

inline uint32_t Crc32c(std::span<const std::byte> data) {
  return Crc32cExtend(0, data.data(), data.size());
}
inline uint32_t Crc32c(std::string_view data) { return Crc32cExtend(0, data.data(), data.size()); }

// The table-driven implementation (any CPU).
uint32_t Crc32cExtendSoftware(uint32_t crc, const void* data, size_t size);

// True when this CPU has the SSE4.2 crc32 instruction.
bool Crc32cHardwareAvailable();

// The SSE4.2 implementation. Only call when Crc32cHardwareAvailable(); on other
// CPUs (and non-x86 builds) it falls back to the software version.
uint32_t Crc32cExtendHardware(uint32_t crc, const void* data, size_t size);

}  // namespace krasis
