// The CUDA backend's kernel table (../aploss/kernels.h), used by the driver in
// ../ap_loss.cpp for CUDA tensors (and for CPU tensors on the tests' emulated device).
#include "../aploss/kernels.h"
#include "cuda_common.cuh"

namespace aploss {

const Kernels& cuda_kernels() {
  static const Kernels table{gpu::gather_positives, gpu::sorted_pass1, gpu::pairwise_pass1,
                             gpu::sorted_pass2, gpu::pairwise_pass2,
                             gpu::grouped_gather, gpu::grouped_pass1, gpu::grouped_pass2,
                             gpu::pass1_records, /*pass1_float_atomics=*/true};
  return table;
}

}  // namespace aploss
