// Helpers of the CUDA kernel benchmarks (attention_bench, expert_gemm_bench):
// CHECK_CUDA, which ends the program with the call and CUDA's message when a
// call fails, and ParseList for comma-separated number arguments.
#pragma once

#include <cuda_runtime.h>

#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"

#define CHECK_CUDA(x)                                               \
  do {                                                              \
    cudaError_t e_ = (x);                                           \
    if (e_ != cudaSuccess) {                                        \
      std::fprintf(stderr, "%s: %s\n", #x, cudaGetErrorString(e_)); \
      std::exit(1);                                                 \
    }                                                               \
  } while (0)

namespace krasis::bench {

// "4096,16384" -> {4096, 16384}; exits with status 2 on anything else.
inline std::vector<int> ParseList(const char* arg) {
  std::vector<int> out;
  for (absl::string_view part : absl::StrSplit(arg, ',', absl::SkipEmpty())) {
    int x = 0;
    if (!absl::SimpleAtoi(part, &x)) {
      std::fprintf(stderr, "not a number: %s\n", std::string(part).c_str());
      std::exit(2);
    }
    out.push_back(x);
  }
  return out;
}

}  // namespace krasis::bench
