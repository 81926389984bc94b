// The CUDA backend's kernel table (../aploss/kernels.h), registered for the CUDA
// dispatch key by register_cuda.cpp (and, on the tests' emulated device, used for CPU
// tensors).
#include <ATen/ATen.h>

#include "../aploss/kernels.h"
#include "cuda_common.cuh"

namespace aploss {
namespace gpu {

// Large ids are rare (retrieval-style groups): ATen's unique is fast enough on a GPU.
// The lowest id is not read back: the driver has read the ids' bounds already.
CodesAndCount dense_codes(const at::Tensor& ids) {
  const auto unique = at::_unique(ids, /*sorted=*/true, /*return_inverse=*/true);
  const at::Tensor codes =
      at::empty(ids.sizes(), ids.options().dtype(at::kInt)).copy_(std::get<1>(unique));
  return {codes, std::get<0>(unique).numel(), std::nullopt};
}

// Pass 1 adds with float atomics: a deterministic run sums pass1_records instead. No
// recorded intervals: pass 2 finds each entry's interval again rather than pass 1 writing
// N of them.
constexpr Kernels kTable{APLOSS_KERNEL_ENTRIES(APLOSS_KERNEL_POINTER)
                         APLOSS_RANKING_BACKWARD_ENTRIES(APLOSS_KERNEL_POINTER)
                         APLOSS_RECORDED_INTERVAL_ENTRIES(APLOSS_NO_KERNEL)
                         /*pass1_float_atomics=*/true, /*broadcast_codes=*/true,
                         /*host_memory=*/false};

}  // namespace gpu

const Kernels& cuda_kernels() { return gpu::kTable; }

}  // namespace aploss
