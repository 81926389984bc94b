// Sorted pass 2 on the GPU: a map from (score, label) to the gradient, one write per
// entry. A negative's gradient is the affine piece of its interval evaluated in the key
// type (../aploss/intervals.h: interval_of, gradient_in_interval; float32 for float32,
// float16 and bfloat16 scores); every other entry gets 0 (the driver writes the
// positives' gradients by position).
//
// A first kernel computes every interval's piece from the state, with grad_output read
// on the device (no .item()). Shared-memory variant (P small enough): the pieces, 16
// bytes per interval for float keys (up to P ~ 7,200 on an H100 with the opt-in limit),
// are staged in dynamic shared memory; the bucket records are read from global memory.
// Global-memory fallback otherwise. Grid-stride loop over one wave of resident blocks, so
// the staging is amortised.
#include <ATen/ATen.h>

#include <algorithm>

#include "../aploss/dispatch.h"
#include "../aploss/intervals.h"
#include "../aploss/kernels.h"
#include "../aploss/math.h"
#include "cuda_common.cuh"
#include "interval_index_cuda.cuh"

namespace aploss {
namespace gpu {
namespace {

constexpr int kPass2Block = 256;

template <typename K>
__global__ void __launch_bounds__(kPass2Block)
    interval_gradients_kernel(IntervalIndex<K> ix, const int32_t* __restrict__ bounds,
                              const double* __restrict__ state, int64_t num_pos, double delta,
                              const double* __restrict__ grad_output,
                              IntervalGradient<K>* __restrict__ pieces) {
  const int64_t width = num_pos + 1;
  const double* const cluster_shift = state + kRowShift * width;
  const double* const prefix_w = state + kRowPrefixW * width;
  const double* const prefix_q = state + kRowPrefixQ * width;
  const int32_t* const lo_of = bounds;
  const int32_t* const hi_of = bounds + ix.count + 1;
  const double scale = *grad_output;
  const int64_t stride = grid_threads();
  for (int64_t m = global_thread_index(); m <= ix.count; m += stride) {
    const int64_t lo = lo_of[m], hi = hi_of[m];
    const double shift = cluster_shift[lo < num_pos ? lo : num_pos - 1];
    const K left = ix.thresholds[m > 0 ? m - 1 : 0];
    pieces[m] = interval_gradient(lo, hi, shift, left, ix.thresholds[m], prefix_w, prefix_q,
                                  0.5 / delta, scale);
  }
}

template <typename scalar_t, typename label_t, bool kShared,
          typename K = typename ScoreKey<scalar_t>::type>
__global__ void __launch_bounds__(kPass2Block)
    sorted_pass2_kernel(const scalar_t* __restrict__ scores, const label_t* __restrict__ labels,
                        int64_t n, IntervalIndex<K> ix, const K* __restrict__ frame,
                        const IntervalGradient<K>* __restrict__ pieces,
                        scalar_t* __restrict__ grad) {
  APLOSS_EXTERN_SHARED(double, smem);  // kShared: the pieces of intervals 0 .. 2P
  const IntervalGradient<K>* piece = pieces;
  if constexpr (kShared) {
    IntervalGradient<K>* staged = reinterpret_cast<IntervalGradient<K>*>(smem);
    for (int64_t m = threadIdx.x; m <= ix.count; m += blockDim.x) staged[m] = pieces[m];
    __syncthreads();
    piece = staged;
  }
  ix = with_frame(ix, frame);

  const int64_t stride = grid_threads();
  for (int64_t i = global_thread_index(); i < n; i += stride) {
    scalar_t value = scalar_t(0);
    if (classify_label(labels[i]) == kNegative) {
      const K key = static_cast<K>(scores[i]);
      const double v = static_cast<double>(key);
      // Not finite: never after a forward (it rejects such scores); -inf is below every
      // window, anything else has no gradient.
      value = is_finite_score(v)
                  ? static_cast<scalar_t>(gradient_in_interval(piece[interval_of(ix, key)], key))
                  : static_cast<scalar_t>(v < 0 ? 0.0 : v - v);
    }
    grad[i] = value;
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
  // The positives (q and its cluster shifts) are the state's first two rows.
  const at::Tensor positives = state.narrow(0, kRowQ, 2).narrow(1, 0, num_pos).contiguous();
  const at::ScalarType key_dtype = scores.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  const DeviceIntervalIndex index = device_interval_index(positives, delta, key_dtype, stream);

  APLOSS_DISPATCH_SCORES_AND_LABELS(scores.scalar_type(), labels.scalar_type(),
                                    "aploss_sorted_pass2_cuda", [&] {
    using K = typename ScoreKey<scalar_t>::type;
    const scalar_t* s = scores.const_data_ptr<scalar_t>();
    const label_t* y = labels.const_data_ptr<label_t>();
    const double* st = state.const_data_ptr<double>();
    const double* go = scale.const_data_ptr<double>();
    scalar_t* g = grad.data_ptr<scalar_t>();

    const int64_t intervals = index.count + 1;
    at::Tensor pieces = at::empty({intervals, static_cast<int64_t>(sizeof(IntervalGradient<K>))},
                                  state.options().dtype(at::kByte));
    IntervalGradient<K>* piece = reinterpret_cast<IntervalGradient<K>*>(pieces.data_ptr());
    const auto prepare = interval_gradients_kernel<K>;
    const int prepare_per_sm =
        blocks_per_sm(reinterpret_cast<const void*>(prepare), kPass2Block, 0);
    const int64_t prepare_grid = grid_size(device, prepare_per_sm, intervals, kPass2Block);
    APLOSS_LAUNCH(prepare, static_cast<unsigned>(prepare_grid), kPass2Block, 0, stream)(
        index.view<K>(), index.bounds.const_data_ptr<int32_t>(), st, num_pos, delta, go, piece);
    C10_CUDA_KERNEL_LAUNCH_CHECK();

    const auto shared_kernel = sorted_pass2_kernel<scalar_t, label_t, true>;
    const size_t smem = static_cast<size_t>(intervals) * sizeof(IntervalGradient<K>);
    int per_sm = 0;
    if (smem <= max_dynamic_smem(reinterpret_cast<const void*>(shared_kernel), device)) {
      per_sm = blocks_per_sm(reinterpret_cast<const void*>(shared_kernel), kPass2Block, smem);
    }
    if (per_sm > 0) {
      const int64_t grid = grid_size(device, per_sm, n, std::max<int64_t>(kPass2Block, intervals));
      APLOSS_LAUNCH(shared_kernel, static_cast<unsigned>(grid), kPass2Block, smem, stream)(
          s, y, n, index.view<K>(), index.frame_on_device<K>(), piece, g);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    } else {
      const auto global_kernel = sorted_pass2_kernel<scalar_t, label_t, false>;
      const int global_per_sm =
          blocks_per_sm(reinterpret_cast<const void*>(global_kernel), kPass2Block, 0);
      const int64_t grid = grid_size(device, global_per_sm, n, kPass2Block);
      APLOSS_LAUNCH(global_kernel, static_cast<unsigned>(grid), kPass2Block, 0, stream)(
          s, y, n, index.view<K>(), index.frame_on_device<K>(), piece, g);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    }
  });
}

}  // namespace gpu
}  // namespace aploss
