// Sorted pass 1 on the GPU: the (3, P+1) float64 difference arrays d1, da, db summed
// over the negatives (math.h: find_window, negative_contributions).
//
// Shared-memory variant (P small enough): each block keeps private float64 copies of
// the three arrays in dynamic shared memory, accumulated with shared-memory atomicAdd,
// plus the sorted q staged there for the binary searches: (3 (P+1) + P) doubles. (The
// cluster shifts are read from global memory: one cached load per non-pruned negative.) The
// kernel is opted in to the device's sharedMemPerBlockOptin (227 KiB on an H100, so up
// to P ~ 7,250). Every block flushes its arrays once with global atomicAdd, so the
// grid is one wave of resident blocks (grid-stride loop), not N / block.
//
// Global-memory fallback (larger P): the same kernel reading q from global memory and
// adding straight into the output with global atomics (the arrays are spread over
// P+1 addresses, so contention is low exactly when this variant is used).
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
#include "../aploss/math.h"
#include "cuda_common.cuh"

namespace aploss {
namespace gpu {
namespace {

constexpr int kPass1Block = 1024;  // ~40 registers per thread: a full block fits the register file

template <typename scalar_t, typename label_t, bool kShared>
__global__ void __launch_bounds__(kPass1Block)
    sorted_pass1_kernel(const scalar_t* __restrict__ scores, const label_t* __restrict__ labels,
                        int64_t n, const double* __restrict__ positives, int64_t num_pos,
                        double delta, double* __restrict__ out) {
  APLOSS_EXTERN_SHARED(double, smem);  // kShared: [d1 | da | db] (P+1 each), then q (P)
  const int64_t width = num_pos + 1;
  double* hist = out;
  const double* const q_global = positives;             // row 0: sorted q
  const double* const cluster_shift = positives + num_pos;  // row 1
  const double* q = q_global;
  if constexpr (kShared) {
    hist = smem;
    double* q_shared = smem + 3 * width;
    for (int64_t k = threadIdx.x; k < 3 * width; k += blockDim.x) hist[k] = 0.0;
    for (int64_t k = threadIdx.x; k < num_pos; k += blockDim.x) q_shared[k] = q_global[k];
    __syncthreads();
    q = q_shared;
  }
  double* const d1 = hist;
  double* const da = hist + width;
  double* const db = hist + 2 * width;
  const StepParams params = make_step_params(delta, q[0], cluster_shift, num_pos);

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
    const double v = static_cast<double>(scores[i]);
    if (is_pruned(v, params)) {  // one comparison (-inf lands here and is flagged)
      if (!is_finite_score(v)) non_finite = true;
      continue;
    }
    if (!is_finite_score(v)) {  // NaN, +inf
      non_finite = true;
      continue;
    }
    ones += static_cast<double>(
        negative_contributions(find_window(q, num_pos, v, params), d1, da, db, add));
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

  APLOSS_DISPATCH_SCORES_AND_LABELS(scores.scalar_type(), labels.scalar_type(),
                                    "aploss_sorted_pass1_cuda", [&] {
    const scalar_t* s = scores.const_data_ptr<scalar_t>();
    const label_t* y = labels.const_data_ptr<label_t>();
    const double* qp = positives.const_data_ptr<double>();
    double* o = out.data_ptr<double>();

    const auto shared_kernel = sorted_pass1_kernel<scalar_t, label_t, true>;
    const size_t smem = static_cast<size_t>(3 * width + num_pos) * sizeof(double);
    int per_sm = 0;
    if (smem <= max_dynamic_smem(reinterpret_cast<const void*>(shared_kernel), device)) {
      per_sm = blocks_per_sm(reinterpret_cast<const void*>(shared_kernel), kPass1Block, smem);
    }
    if (per_sm > 0) {
      // At least ~4 (P+1) entries per block, so the per-block flush stays amortised.
      const int64_t grid = grid_size(device, per_sm, n, std::max<int64_t>(kPass1Block, 4 * width));
      APLOSS_LAUNCH(shared_kernel, static_cast<unsigned>(grid), kPass1Block, smem, stream)(
          s, y, n, qp, num_pos, delta, o);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    } else {
      const auto global_kernel = sorted_pass1_kernel<scalar_t, label_t, false>;
      const int global_per_sm =
          blocks_per_sm(reinterpret_cast<const void*>(global_kernel), kPass1Block, 0);
      const int64_t grid = grid_size(device, global_per_sm, n, kPass1Block);
      APLOSS_LAUNCH(global_kernel, static_cast<unsigned>(grid), kPass1Block, 0, stream)(
          s, y, n, qp, num_pos, delta, o);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    }
  });
  return out;
}

}  // namespace gpu
}  // namespace aploss
