// The CUDA backend's kernel table (../aploss/kernels.h), registered for the CUDA
// dispatch key by register_cuda.cpp (and, on the tests' emulated device, used for CPU
// tensors).
#include <ATen/ATen.h>

#include "../aploss/kernels.h"
#include "cuda_common.cuh"

namespace aploss {
namespace gpu {
namespace {

// Large ids are rare (retrieval-style groups): ATen's unique is fast enough on a GPU.
std::tuple<at::Tensor, int64_t> dense_codes(const at::Tensor& ids) {
  const auto unique = at::_unique(ids, /*sorted=*/true, /*return_inverse=*/true);
  const at::Tensor codes =
      at::empty(ids.sizes(), ids.options().dtype(at::kInt)).copy_(std::get<1>(unique));
  return {codes, std::get<0>(unique).numel()};
}

}  // namespace
}  // namespace gpu

const Kernels& cuda_kernels() {
  static const Kernels table{gpu::gather, gpu::sorted_pass1, gpu::pairwise_pass1,
                             gpu::sorted_pass2, gpu::pairwise_pass2,
                             gpu::grouped_pass1, gpu::grouped_pass2,
                             gpu::positive_window_sums, gpu::pass1_records, gpu::dense_codes,
                             gpu::ranking_forward, gpu::ranking_backward, gpu::check_ranking_state,
                             /*pass1_float_atomics=*/true, /*broadcast_codes=*/true,
                             /*host_memory=*/false};
  return table;
}

}  // namespace aploss
