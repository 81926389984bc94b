// Stand-in for c10's current CUDA stream on the emulated device: launches run
// synchronously, in order, so every stream is the same.
#pragma once

#include "../../cuda_runtime.h"

namespace c10 {
namespace cuda {

struct CUDAStream {
  cudaStream_t stream() const { return nullptr; }
};

inline CUDAStream getCurrentCUDAStream(int /*device*/ = -1) { return {}; }

}  // namespace cuda
}  // namespace c10
