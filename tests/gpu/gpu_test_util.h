// Shared by the GPU tests (ctest label gpu): skip, saying why, on a host without
// a CUDA GPU -- never silently, and a failure to list the GPUs is a failure.
#pragma once

#include <gtest/gtest.h>

#include <string>

#include "common/cuda/device.h"

#define KRASIS_SKIP_WITHOUT_GPU()                                                                      \
  do {                                                                                                 \
    std::string why_none;                                                                              \
    auto gpus = ::krasis::ListGpus(&why_none);                                                         \
    ASSERT_TRUE(gpus.ok()) << gpus.status();                                                           \
    if (gpus->empty()) GTEST_SKIP() << "no CUDA GPU on this host (" << why_none << "): gpu test not run"; \
  } while (0)
