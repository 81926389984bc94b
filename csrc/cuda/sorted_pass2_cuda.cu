// Sorted pass 2 on the GPU: a map from (score, label) to the gradient, one write per
// entry (math.h: find_window, negative_gradient, positive_gradient).
//
// Shared-memory variant (P small enough): the rows q, W and Q of the state are staged
// in dynamic shared memory, 3 (P+1) doubles (up to P ~ 9,600 on an H100 with the
// opt-in limit); the cluster-shift row (one load per non-empty window) and the
// positives' gradient row (positives are few) are read from global memory. Global-memory fallback otherwise. Grid-stride loop over one wave of
// resident blocks, so the staging is amortised.
//
// grad_output is a 0-dim float64 tensor on the device: read by the kernel, no .item().
#include <ATen/ATen.h>

#include <algorithm>

#include "../aploss/dispatch.h"
#include "../aploss/kernels.h"
#include "../aploss/math.h"
#include "cuda_common.cuh"

namespace aploss {
namespace gpu {
namespace {

constexpr int kPass2Block = 256;

template <typename scalar_t, typename label_t, bool kShared>
__global__ void __launch_bounds__(kPass2Block)
    sorted_pass2_kernel(const scalar_t* __restrict__ scores, const label_t* __restrict__ labels,
                        int64_t n, const double* __restrict__ state, int64_t num_pos,
                        double delta, const double* __restrict__ grad_output,
                        scalar_t* __restrict__ grad) {
  APLOSS_EXTERN_SHARED(double, smem);  // kShared: [q | W | Q], P+1 each
  const int64_t width = num_pos + 1;
  const double* q = state + kRowQ * width;
  const double* prefix_w = state + kRowPrefixW * width;
  const double* prefix_q = state + kRowPrefixQ * width;
  const double* const pos_grad = state + kRowPosGrad * width;
  const double* const cluster_shift = state + kRowShift * width;
  if constexpr (kShared) {
    for (int64_t k = threadIdx.x; k < width; k += blockDim.x) {
      smem[k] = q[k];
      smem[width + k] = prefix_w[k];
      smem[2 * width + k] = prefix_q[k];
    }
    __syncthreads();
    q = smem;
    prefix_w = smem + width;
    prefix_q = smem + 2 * width;
  }
  const StepParams params = make_step_params(delta, q[0], cluster_shift, num_pos);
  const double scale = *grad_output;

  const int64_t stride = grid_threads();
  for (int64_t i = global_thread_index(); i < n; i += stride) {
    const int cls = classify_label(labels[i]);
    double value = 0.0;
    if (cls == kNegative) {
      const double v = static_cast<double>(scores[i]);
      if (!is_pruned(v, params)) {
        value = negative_gradient(find_window(q, num_pos, v, params), prefix_w, prefix_q, params);
      }
    } else if (cls == kPositive) {
      value = positive_gradient(q, num_pos, pos_grad, static_cast<double>(scores[i]));
    }
    grad[i] = static_cast<scalar_t>(scale * value);
  }
}

}  // namespace

void sorted_pass2(const at::Tensor& scores, const at::Tensor& labels, const at::Tensor& state,
                  double delta, const at::Tensor& grad_output, at::Tensor& grad) {
  const at::Tensor scale =
      check_pass2_and_scale(scores, labels, state, grad_output, grad, "aploss sorted_pass2");
  const c10::cuda::CUDAGuard guard(scores.device());
  const int device = kernel_device_index(scores);
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream(device).stream();

  const int64_t n = scores.numel();
  if (n == 0) return;
  const int64_t num_pos = state.size(1) - 1;
  const int64_t width = num_pos + 1;

  APLOSS_DISPATCH_SCORES_AND_LABELS(scores.scalar_type(), labels.scalar_type(),
                                    "aploss_sorted_pass2_cuda", [&] {
    const scalar_t* s = scores.const_data_ptr<scalar_t>();
    const label_t* y = labels.const_data_ptr<label_t>();
    const double* st = state.const_data_ptr<double>();
    const double* go = scale.const_data_ptr<double>();
    scalar_t* g = grad.data_ptr<scalar_t>();

    const auto shared_kernel = sorted_pass2_kernel<scalar_t, label_t, true>;
    const size_t smem = static_cast<size_t>(3 * width) * sizeof(double);
    int per_sm = 0;
    if (smem <= max_dynamic_smem(reinterpret_cast<const void*>(shared_kernel), device)) {
      per_sm = blocks_per_sm(reinterpret_cast<const void*>(shared_kernel), kPass2Block, smem);
    }
    if (per_sm > 0) {
      const int64_t grid = grid_size(device, per_sm, n, std::max<int64_t>(kPass2Block, width));
      APLOSS_LAUNCH(shared_kernel, static_cast<unsigned>(grid), kPass2Block, smem, stream)(
          s, y, n, st, num_pos, delta, go, g);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    } else {
      const auto global_kernel = sorted_pass2_kernel<scalar_t, label_t, false>;
      const int global_per_sm =
          blocks_per_sm(reinterpret_cast<const void*>(global_kernel), kPass2Block, 0);
      const int64_t grid = grid_size(device, global_per_sm, n, kPass2Block);
      APLOSS_LAUNCH(global_kernel, static_cast<unsigned>(grid), kPass2Block, 0, stream)(
          s, y, n, st, num_pos, delta, go, g);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    }
  });
}

}  // namespace gpu
}  // namespace aploss
