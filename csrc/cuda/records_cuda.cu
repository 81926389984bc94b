// Deterministic pass 1's records on the GPU (pass1_record.h): a map, one record per
// entry, no atomics. Used instead of the atomics of one ranking's stage-path pass 1 under
// torch.use_deterministic_algorithms(True) (../deterministic_pass1.cpp).
#include <ATen/ATen.h>

#include "../aploss/dispatch.h"
#include "../aploss/pass1_record.h"
#include "cuda_common.cuh"

namespace aploss {
namespace gpu {
namespace {

constexpr int kRecordsBlock = 256;

template <typename scalar_t, typename label_t>
__global__ void __launch_bounds__(kRecordsBlock)
    pass1_records_kernel(const scalar_t* __restrict__ scores, const label_t* __restrict__ labels,
                         int64_t n, const double* __restrict__ positives, int64_t num_pos,
                         double delta, double* __restrict__ out) {
  const int64_t stride = grid_threads();
  for (int64_t i = global_thread_index(); i < n; i += stride) {
    const PassOneRecord r = pass1_record(labels[i], static_cast<double>(scores[i]), positives,
                                         positives + num_pos, num_pos, delta);
    out[i] = r.lo;
    out[n + i] = r.hi;
    out[2 * n + i] = r.a;
  }
}

}  // namespace

at::Tensor pass1_records(const at::Tensor& scores, const at::Tensor& labels,
                         const at::Tensor& positives, double delta) {
  check_flat_inputs(scores, labels, "aploss pass1_records");
  check_positives(positives, scores, "aploss pass1_records");
  const c10::cuda::CUDAGuard guard(scores.device());
  const int device = kernel_device_index(scores);
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream(device).stream();
  const int64_t n = scores.numel();
  at::Tensor records = at::empty({3, n}, positives.options());
  if (n == 0) return records;
  APLOSS_DISPATCH_SCORES_AND_LABELS(scores.scalar_type(), labels.scalar_type(),
                                    "aploss_pass1_records_cuda", [&] {
    const auto kernel = pass1_records_kernel<scalar_t, label_t>;
    const int per_sm = blocks_per_sm(reinterpret_cast<const void*>(kernel), kRecordsBlock, 0);
    const int64_t grid = grid_size(device, per_sm, n, kRecordsBlock);
    APLOSS_LAUNCH(kernel, static_cast<unsigned>(grid), kRecordsBlock, 0, stream)(
        scores.const_data_ptr<scalar_t>(), labels.const_data_ptr<label_t>(), n,
        positives.const_data_ptr<double>(), positives.size(1), delta,
        records.data_ptr<double>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return records;
}

}  // namespace gpu
}  // namespace aploss
