// Stand-in for c10's CUDA error checks on the emulated device: the same macros, raising
// the emulator's message (kernel, block, thread, sites) as a RuntimeError.
#pragma once

#include <c10/util/Exception.h>

#include "../../cuda_runtime.h"

#define C10_CUDA_CHECK(EXPR)                                                            \
  do {                                                                                  \
    const cudaError_t simt_error = (EXPR);                                              \
    TORCH_CHECK(simt_error == cudaSuccess, "CUDA error on the emulated device: ",       \
                cudaGetErrorString(simt_error), ": ", ::simt::error_detail());          \
  } while (0)

#define C10_CUDA_KERNEL_LAUNCH_CHECK() C10_CUDA_CHECK(cudaGetLastError())
