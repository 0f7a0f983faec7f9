// Per-thread scratch buffers for a forward pass: a decode step reuses the
// previous step's memory (no allocation, no zero-fill, no page faults), while
// buffers grown to a long prompt's size are handed back after the call.
#pragma once

#include <cstddef>
#include <initializer_list>
#include <vector>

namespace krasis {

// Buffers above this many floats (16 MB) are not kept between calls.
inline constexpr size_t kKeepScratchFloats = size_t{4} << 20;

inline void ReleaseLargeScratch(std::initializer_list<std::vector<float>*> buffers) {
  for (std::vector<float>* v : buffers) {
    if (v->capacity() > kKeepScratchFloats) std::vector<float>().swap(*v);
  }
}

}  // namespace krasis
