// Pass 2 on the GPU (ranking_cuda.cuh): one write per entry. A negative's gradient is the
// affine piece of its interval (../aploss/intervals.h: interval_of, gradient_in_interval,
// in the key type: float32 for float32, float16 and bfloat16 scores) times grad_output,
// an ignored entry's 0; the positives' gradients, from the positive stage, are written by
// the same launch at their positions (a positive is skipped by the entries' loop, so no
// entry is written twice). grad_output is read on the device (no host sync).
//
// Shared-memory variant (the 2P+1 pieces fit, 16 bytes each for float keys: P up to about
// 7,200 on an H100): the pieces are staged per block; global-memory variant otherwise.
// Grid-stride loop over one wave of resident blocks, so the staging is amortised.
#include <ATen/ATen.h>

#include <algorithm>

#include "../aploss/dispatch.h"
#include "../aploss/intervals.h"
#include "ranking_cuda.cuh"

namespace aploss {
namespace gpu {
namespace {

constexpr int kPass2Block = 256;

template <typename scalar_t, bool kShared, typename K = typename ScoreKey<scalar_t>::type>
__global__ void __launch_bounds__(kPass2Block)
    sorted_pass2_kernel(const scalar_t* __restrict__ scores,
                        const unsigned long long* __restrict__ classes, int64_t n,
                        RankingBuffers<K> r, int64_t num_pos,
                        const double* __restrict__ positive_grads,
                        const scalar_t* __restrict__ grad_output, scalar_t* __restrict__ grad) {
  APLOSS_EXTERN_SHARED(double, smem);  // kShared: the pieces of intervals 0 .. 2P
  const IntervalIndex<K> ix = device_index(r, num_pos);
  const IntervalGradient<K>* piece = r.pieces;
  if constexpr (kShared) {
    IntervalGradient<K>* staged = reinterpret_cast<IntervalGradient<K>*>(smem);
    for (int64_t m = threadIdx.x; m <= ix.count; m += blockDim.x) staged[m] = r.pieces[m];
    __syncthreads();
    piece = staged;
  }
  const K key_scale = static_cast<K>(*grad_output);  // in the key type: no float64 per entry

  const int64_t stride = grid_threads();
  for (int64_t i = global_thread_index(); i < n; i += stride) {
    const unsigned long long word = classes[i >> 5];
    const int bit = static_cast<int>(i & 31);
    if ((word >> (32 + bit)) & 1ull) continue;  // a positive: written below
    scalar_t value = scalar_t(0);
    if ((word >> bit) & 1ull) {
      const K key = static_cast<K>(scores[i]);
      // Not finite: never after a forward (it rejects such scores); -inf is below every
      // window, anything else has no gradient.
      value = key == key && key - key == K(0)
                  ? static_cast<scalar_t>(
                        gradient_in_interval(piece[interval_of(ix, key)], key) * key_scale)
                  : static_cast<scalar_t>(key < K(0) ? K(0) : key - key);
    }
    grad[i] = value;
  }
  for (int64_t j = global_thread_index(); j < num_pos; j += stride) {  // float64: P values
    grad[static_cast<int64_t>(positive_grads[2 * j])] =
        static_cast<scalar_t>(positive_grads[2 * j + 1] * static_cast<double>(*grad_output));
  }
}

}  // namespace

void launch_pass2(const at::Tensor& scores, const at::Tensor& classes,
                  const at::Tensor& workspace, const at::Tensor& positive_grads,
                  const at::Tensor& grad_output, const at::Tensor& grad) {
  const c10::cuda::CUDAGuard guard(scores.device());
  const int device = kernel_device_index(scores);
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream(device).stream();
  const int64_t n = scores.numel();
  const int64_t num_pos = positive_grads.size(0);
  if (n == 0) return;
  APLOSS_DISPATCH_SCORES(scores.scalar_type(), "aploss_sorted_pass2_cuda", [&] {
    using K = typename ScoreKey<scalar_t>::type;
    const RankingBuffers<K> r = ranking_buffers<K>(workspace);
    const int64_t min_per_block = std::max<int64_t>(kPass2Block, 2 * num_pos + 1);
    const auto shared_pass2 = sorted_pass2_kernel<scalar_t, true>;
    const auto global_pass2 = sorted_pass2_kernel<scalar_t, false>;
    const size_t smem = static_cast<size_t>(2 * num_pos + 1) * sizeof(IntervalGradient<K>);
    int per_sm = 0;
    if (smem <= max_dynamic_smem(reinterpret_cast<const void*>(shared_pass2), device)) {
      per_sm = blocks_per_sm(reinterpret_cast<const void*>(shared_pass2), kPass2Block, smem);
    }
    const auto* s = scores.const_data_ptr<scalar_t>();
    const auto* c = reinterpret_cast<const unsigned long long*>(classes.const_data_ptr());
    const double* pg = positive_grads.const_data_ptr<double>();
    const scalar_t* go = grad_output.const_data_ptr<scalar_t>();
    scalar_t* g = grad.data_ptr<scalar_t>();
    if (per_sm > 0) {
      const int64_t grid = grid_size(device, per_sm, n, min_per_block);
      APLOSS_LAUNCH(shared_pass2, static_cast<unsigned>(grid), kPass2Block, smem, stream)(
          s, c, n, r, num_pos, pg, go, g);
    } else {
      const int64_t grid = grid_size(
          device, blocks_per_sm(reinterpret_cast<const void*>(global_pass2), kPass2Block, 0), n,
          min_per_block);
      APLOSS_LAUNCH(global_pass2, static_cast<unsigned>(grid), kPass2Block, 0, stream)(
          s, c, n, r, num_pos, pg, go, g);
    }
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

}  // namespace gpu
}  // namespace aploss
