# CUDA is optional: KRASIS_CUDA=AUTO builds the CUDA code when nvcc is found (it is in
# CI, so GPU code always compiles there even though no GPU runs it), ON requires it,
# OFF skips it. Sets KRASIS_WITH_CUDA.
set(KRASIS_WITH_CUDA OFF)
if(NOT KRASIS_CUDA STREQUAL "OFF")
  if(NOT CMAKE_CUDA_COMPILER AND EXISTS /usr/local/cuda/bin/nvcc)
    set(CMAKE_CUDA_COMPILER /usr/local/cuda/bin/nvcc)
  endif()
  include(CheckLanguage)
  check_language(CUDA)
  if(CMAKE_CUDA_COMPILER)
    if(NOT DEFINED CMAKE_CUDA_ARCHITECTURES)
      # Hopper (H100/H200) first; 80/89 so the same build runs on A100 and Ada cards.
      set(CMAKE_CUDA_ARCHITECTURES 80 89 90)
    endif()
    enable_language(CUDA)
    # CMake 3.25 cannot ask nvcc for C++20, so CUDA sources are C++17 (headers they
    # include from common/ must stay C++17-clean).
    set(CMAKE_CUDA_STANDARD 17)
    set(CMAKE_CUDA_STANDARD_REQUIRED ON)
    find_package(CUDAToolkit REQUIRED)
    set(KRASIS_WITH_CUDA ON)
    message(STATUS "Krasis: building CUDA code with ${CMAKE_CUDA_COMPILER}")
    # NCCL (several cards of one host): with the toolkit here and in CI; without
    # it the backend runs one card and refuses --devices with more.
    find_library(KRASIS_NCCL_LIBRARY nccl HINTS ${CUDAToolkit_LIBRARY_DIR} /usr/lib/x86_64-linux-gnu)
    find_path(KRASIS_NCCL_INCLUDE nccl.h HINTS ${CUDAToolkit_INCLUDE_DIRS} /usr/include)
    if(KRASIS_NCCL_LIBRARY AND KRASIS_NCCL_INCLUDE)
      set(KRASIS_WITH_NCCL ON)
      message(STATUS "Krasis: NCCL ${KRASIS_NCCL_LIBRARY}")
    else()
      set(KRASIS_WITH_NCCL OFF)
      message(STATUS "Krasis: NCCL not found, multi-GPU prefill disabled")
    endif()
  elseif(KRASIS_CUDA STREQUAL "ON")
    message(FATAL_ERROR "KRASIS_CUDA=ON but no CUDA compiler (nvcc) was found")
  else()
    message(STATUS "Krasis: nvcc not found, building without CUDA")
  endif()
endif()
