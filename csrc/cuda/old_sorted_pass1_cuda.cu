// Sorted pass 1 on the GPU: the (3, P+1) float64 difference arrays d1, da, db summed
// over the negatives (math.h: negative_contributions). Each negative's window is the
// window of its interval (../aploss/intervals.h: interval_of, in the scores' key type),
// through the interval index built on the device (interval_index_cuda.cuh).
//
// Shared-memory variant (P small enough): each block keeps private float64 copies of
// the three arrays in dynamic shared memory, accumulated with shared-memory atomicAdd:
// 3 (P+1) doubles. (The bucket records, the window bounds and the cluster shifts are read
// from global memory: a few cached loads per negative.) The kernel is opted in to the
// device's sharedMemPerBlockOptin (227 KiB on an H100, so up to P ~ 9,600). Every block
// flushes its arrays once with global atomicAdd, so the grid is one wave of resident
// blocks (grid-stride loop), not N / block.
//
// Global-memory fallback (larger P): the same kernel adding straight into the output
// with global atomics (the arrays are spread over P+1 addresses, so contention is low
// exactly when this variant is used).
//
// In both, the two hottest addresses are kept out of the atomics: the "+1 at 0" of d1
// (returned by negative_contributions) and the contributions at index 0 of da and db
// (every negative below q_0 + delta has lo = 0) are summed in registers, reduced per
// warp and added once per warp.
//
// Non-finite NEGATIVE scores (NaN, +inf, -inf) are rejected with ValueError by
// gather, before this pass runs. As a second line of defence (a caller of the
// kernel table that skipped the gather), the block that sees one adds NaN to d1[0], so
// every fp(i), hence the loss, is NaN rather than silently wrong.
//
// Summation order of the float64 atomics is not deterministic: d1 and db are integer
// counts (exact), da may differ in the last bits between runs. Under
// torch.use_deterministic_algorithms(True) pass 1 sums per-entry records instead
// (../deterministic_pass1.cpp); a direct call of this kernel there still meets
// alertNotDeterministic, like PyTorch's own atomics-based CUDA kernels.
#include <ATen/ATen.h>
#include <ATen/Context.h>

#include <math_constants.h>

#include <algorithm>

#include "../aploss/dispatch.h"
#include "../aploss/intervals.h"
#include "../aploss/math.h"
#include "cuda_common.cuh"
#include "interval_index_cuda.cuh"

namespace aploss {
namespace gpu {
namespace {

constexpr int kPass1Block = 1024;  // ~40 registers per thread: a full block fits the register file

template <typename scalar_t, typename label_t, bool kShared,
          typename K = typename ScoreKey<scalar_t>::type>
__global__ void __launch_bounds__(kPass1Block)
    sorted_pass1_kernel(const scalar_t* __restrict__ scores, const label_t* __restrict__ labels,
                        int64_t n, IntervalIndex<K> ix, const K* __restrict__ frame,
                        const int32_t* __restrict__ bounds, const double* __restrict__ positives,
                        int64_t num_pos, double delta, double* __restrict__ out) {
  APLOSS_EXTERN_SHARED(double, smem);  // kShared: [d1 | da | db], P+1 each
  const int64_t width = num_pos + 1;
  double* hist = out;
  if constexpr (kShared) {
    hist = smem;
    for (int64_t k = threadIdx.x; k < 3 * width; k += blockDim.x) hist[k] = 0.0;
    __syncthreads();
  }
  double* const d1 = hist;
  double* const da = hist + width;
  double* const db = hist + 2 * width;
  ix = with_frame(ix, frame);
  const int32_t* const lo_of = bounds;
  const int32_t* const hi_of = bounds + ix.count + 1;
  const StepParams params = make_step_params(delta, positives[0], positives + num_pos, num_pos);

  double ones = 0.0;     // the "+1 at 0" of d1
  double a_at_0 = 0.0;   // da[0] contributions
  double b_at_0 = 0.0;   // db[0] contributions
  bool non_finite = false;
  const auto add = [&](double* at, double value) {
    if (at == da) {
      a_at_0 += value;
    } else if (at == db) {
      b_at_0 += value;
    } else {
      atomicAdd(at, value);
    }
  };

  const int64_t stride = grid_threads();
  for (int64_t i = global_thread_index(); i < n; i += stride) {
    if (classify_label(labels[i]) != kNegative) continue;
    const K key = static_cast<K>(scores[i]);
    const double v = static_cast<double>(key);
    if (!is_finite_score(v)) {
      non_finite = true;
      continue;
    }
    const int64_t m = interval_of(ix, key);
    if (m == 0) continue;  // below every window: adds nothing
    const int64_t lo = lo_of[m], hi = hi_of[m];
    ones += static_cast<double>(negative_contributions(
        Window{lo, hi, window_offset(v, lo, hi, params)}, d1, da, db, add));
  }

  // Every thread of the block reaches this point (no early return above): full warps.
  ones = warp_sum(ones);
  a_at_0 = warp_sum(a_at_0);
  b_at_0 = warp_sum(b_at_0);
  const bool warp_non_finite = __any_sync(kFullMask, non_finite);
  if ((threadIdx.x & 31) == 0) {
    if (ones != 0.0) atomicAdd(d1, ones);
    if (a_at_0 != 0.0) atomicAdd(da, a_at_0);
    if (b_at_0 != 0.0) atomicAdd(db, b_at_0);
    if (warp_non_finite) atomicAdd(d1, CUDART_NAN);
  }

  if constexpr (kShared) {
    __syncthreads();
    for (int64_t k = threadIdx.x; k < 3 * width; k += blockDim.x) {
      const double value = hist[k];
      if (value != 0.0) atomicAdd(out + k, value);  // NaN != 0: a NaN is flushed too
    }
  }
}

}  // namespace

at::Tensor sorted_pass1(const at::Tensor& scores, const at::Tensor& labels,
                        const at::Tensor& positives, double delta) {
  check_flat_inputs(scores, labels, "aploss sorted_pass1");
  check_positives(positives, scores, "aploss sorted_pass1");
  at::globalContext().alertNotDeterministic("ap_loss (CUDA, method 'sorted'): pass 1");
  const c10::cuda::CUDAGuard guard(scores.device());
  const int device = kernel_device_index(scores);
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream(device).stream();

  const int64_t n = scores.numel();
  const int64_t num_pos = positives.size(1);
  const int64_t width = num_pos + 1;
  at::Tensor out = at::zeros({3, width}, positives.options());
  if (n == 0) return out;

  const DeviceIntervalIndex index = device_interval_index(
      positives, delta, scores.scalar_type() == at::kDouble ? at::kDouble : at::kFloat, stream);
  APLOSS_DISPATCH_SCORES_AND_LABELS(scores.scalar_type(), labels.scalar_type(),
                                    "aploss_sorted_pass1_cuda", [&] {
    using K = typename ScoreKey<scalar_t>::type;
    const scalar_t* s = scores.const_data_ptr<scalar_t>();
    const label_t* y = labels.const_data_ptr<label_t>();
    const double* qp = positives.const_data_ptr<double>();
    const int32_t* bounds = index.bounds.const_data_ptr<int32_t>();
    double* o = out.data_ptr<double>();

    const auto shared_kernel = sorted_pass1_kernel<scalar_t, label_t, true>;
    const size_t smem = static_cast<size_t>(3 * width) * sizeof(double);
    int per_sm = 0;
    if (smem <= max_dynamic_smem(reinterpret_cast<const void*>(shared_kernel), device)) {
      per_sm = blocks_per_sm(reinterpret_cast<const void*>(shared_kernel), kPass1Block, smem);
    }
    if (per_sm > 0) {
      // At least ~4 (P+1) entries per block, so the per-block flush stays amortised.
      const int64_t grid = grid_size(device, per_sm, n, std::max<int64_t>(kPass1Block, 4 * width));
      APLOSS_LAUNCH(shared_kernel, static_cast<unsigned>(grid), kPass1Block, smem, stream)(
          s, y, n, index.view<K>(), index.frame_on_device<K>(), bounds, qp, num_pos, delta, o);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    } else {
      const auto global_kernel = sorted_pass1_kernel<scalar_t, label_t, false>;
      const int global_per_sm =
          blocks_per_sm(reinterpret_cast<const void*>(global_kernel), kPass1Block, 0);
      const int64_t grid = grid_size(device, global_per_sm, n, kPass1Block);
      APLOSS_LAUNCH(global_kernel, static_cast<unsigned>(grid), kPass1Block, 0, stream)(
          s, y, n, index.view<K>(), index.frame_on_device<K>(), bounds, qp, num_pos, delta, o);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    }
  });
  return out;
}

}  // namespace gpu
}  // namespace aploss
