// Grouped rankings on the GPU: pass 1 and pass 2 with each entry searched against its
// own group's segment of the positives (../aploss/segments.h).
//
// The segments differ from entry to entry, so q is not staged in shared memory: the
// binary searches read q from global memory (P doubles, L2-resident for any realistic
// P), and pass 1 adds into the (3, P+1) output with global float64 atomics. The hot
// addresses are the first index of each segment: every non-pruned negative adds its
// "+1" to d1 there, and every negative below the segment's q_0 + delta adds to da and db
// there. Those three sums are kept in registers while a thread's entries stay in one
// segment (one group, or per-image groups at any N), and reduced per warp when all
// lanes share the segment, as the ungrouped pass 1 does; the other contributions are
// spread over the segment and go straight to global atomics. As in
// sorted_pass1_cuda.cu, a non-finite negative (already rejected by the gather) adds NaN
// to d1[0] as a second line of defence, and the float64 atomics make da's last bits
// order-dependent: alertNotDeterministic.
#include <ATen/ATen.h>
#include <ATen/Context.h>

#include <math_constants.h>

#include "../aploss/dispatch.h"
#include "../aploss/kernels.h"
#include "../aploss/segments.h"
#include "cuda_common.cuh"

namespace aploss {
namespace gpu {
namespace {

constexpr int kGroupedBlock = 256;

template <typename scalar_t, typename label_t>
__global__ void __launch_bounds__(kGroupedBlock)
    grouped_pass1_kernel(const scalar_t* __restrict__ scores, const label_t* __restrict__ labels,
                         const int32_t* __restrict__ codes, int64_t n,
                         const double* __restrict__ positives, int64_t num_pos,
                         const int64_t* __restrict__ offsets, int64_t num_groups, double delta,
                         double* __restrict__ out) {
  const int64_t width = num_pos + 1;
  const double* const q = positives;
  const double* const shift = positives + num_pos;
  // Register sums of the contributions at `first`, the current segment's first index.
  int64_t first = -1;
  double hot[3] = {0.0, 0.0, 0.0};  // d1, da, db at `first`
  const auto flush = [&] {
#pragma unroll
    for (int array = 0; array < 3; ++array) {
      if (hot[array] != 0.0) atomicAdd(out + array * width + first, hot[array]);
      hot[array] = 0.0;
    }
  };
  const auto add = [&](int array, int64_t index, double value) {
    if (index == first) {
      hot[array] += value;
    } else {
      atomicAdd(out + array * width + index, value);
    }
  };
  bool non_finite = false;
  const int64_t stride = grid_threads();
  for (int64_t i = global_thread_index(); i < n; i += stride) {
    if (classify_label(labels[i]) != kNegative) continue;
    const double v = static_cast<double>(scores[i]);
    if (!is_finite_score(v)) {
      non_finite = true;
      continue;
    }
    const Segment seg = segment_of(offsets, num_groups, codes[i]);
    if (seg.empty()) continue;
    const StepParams params = segment_params(delta, q, shift, seg);
    if (is_pruned(v, params)) continue;
    if (seg.begin != first) {
      flush();
      first = seg.begin;
    }
    accumulate_segment_window(find_segment_window(q, seg, v, params), seg, add);
  }

  // Every thread of the block reaches this point (no early return above): full warps.
  // One atomic per array and warp when the lanes' segments agree, else one per lane.
  const int64_t warp_first = warp_max(first);
  if (__all_sync(kFullMask, first < 0 || first == warp_first)) {
#pragma unroll
    for (int array = 0; array < 3; ++array) hot[array] = warp_sum(hot[array]);
    if ((threadIdx.x & 31) == 0 && warp_first >= 0) {
      first = warp_first;
      flush();
    }
  } else if (first >= 0) {
    flush();
  }
  if (non_finite) atomicAdd(out, CUDART_NAN);
}

template <typename scalar_t, typename label_t>
__global__ void __launch_bounds__(kGroupedBlock)
    grouped_pass2_kernel(const scalar_t* __restrict__ scores, const label_t* __restrict__ labels,
                         const int32_t* __restrict__ codes, int64_t n,
                         const double* __restrict__ state, int64_t num_pos,
                         const int64_t* __restrict__ offsets, int64_t num_groups, double delta,
                         const double* __restrict__ grad_output, scalar_t* __restrict__ grad) {
  const int64_t width = num_pos + 1;
  const double* const q = state + kRowQ * width;
  const double* const shift = state + kRowShift * width;
  const double* const prefix_w = state + kRowPrefixW * width;
  const double* const prefix_q = state + kRowPrefixQ * width;
  const double scale = *grad_output;
  const int64_t stride = grid_threads();
  for (int64_t i = global_thread_index(); i < n; i += stride) {
    double value = 0.0;
    if (classify_label(labels[i]) == kNegative) {
      const Segment seg = segment_of(offsets, num_groups, codes[i]);
      const double v = static_cast<double>(scores[i]);
      if (!seg.empty()) {
        const StepParams params = segment_params(delta, q, shift, seg);
        if (!is_pruned(v, params)) {
          value = segment_window_gradient(find_segment_window(q, seg, v, params), seg, prefix_w,
                                          prefix_q, params);
        }
      }
    }
    grad[i] = static_cast<scalar_t>(scale * value);
  }
}

void check_groups(const at::Tensor& codes, int64_t code_repeat, const at::Tensor& offsets,
                  const at::Tensor& scores, const char* what) {
  TORCH_CHECK(codes.scalar_type() == at::kInt && codes.device() == scores.device() &&
                  codes.is_contiguous() && codes.numel() == scores.numel() && code_repeat == 1,
              what, ": codes must be contiguous int32 like scores, one per entry");
  TORCH_CHECK(offsets.scalar_type() == at::kLong && offsets.device() == scores.device() &&
                  offsets.is_contiguous() && offsets.dim() == 1 && offsets.numel() >= 1,
              what, ": offsets must be a contiguous 1-D int64 tensor on ", scores.device());
}

}  // namespace

at::Tensor grouped_pass1(const at::Tensor& scores, const at::Tensor& labels,
                         const at::Tensor& codes, int64_t code_repeat, const at::Tensor& positives,
                         const at::Tensor& offsets, double delta) {
  check_flat_inputs(scores, labels, "aploss grouped_pass1");
  check_positives(positives, scores, "aploss grouped_pass1");
  check_groups(codes, code_repeat, offsets, scores, "aploss grouped_pass1");
  at::globalContext().alertNotDeterministic("ap_loss (CUDA, group_ids): pass 1");
  const c10::cuda::CUDAGuard guard(scores.device());
  const int device = kernel_device_index(scores);
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream(device).stream();

  const int64_t n = scores.numel();
  const int64_t num_pos = positives.size(1);
  at::Tensor out = at::zeros({3, num_pos + 1}, positives.options());
  if (n == 0) return out;
  APLOSS_DISPATCH_SCORES_AND_LABELS(scores.scalar_type(), labels.scalar_type(),
                                    "aploss_grouped_pass1_cuda", [&] {
    const auto kernel = grouped_pass1_kernel<scalar_t, label_t>;
    const int per_sm = blocks_per_sm(reinterpret_cast<const void*>(kernel), kGroupedBlock, 0);
    const int64_t grid = grid_size(device, per_sm, n, kGroupedBlock);
    APLOSS_LAUNCH(kernel, static_cast<unsigned>(grid), kGroupedBlock, 0, stream)(
        scores.const_data_ptr<scalar_t>(), labels.const_data_ptr<label_t>(),
        codes.const_data_ptr<int32_t>(), n, positives.const_data_ptr<double>(), num_pos,
        offsets.const_data_ptr<int64_t>(), offsets.numel() - 1, delta, out.data_ptr<double>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return out;
}

void grouped_pass2(const at::Tensor& scores, const at::Tensor& labels, const at::Tensor& codes,
                   int64_t code_repeat, const at::Tensor& state, const at::Tensor& offsets,
                   double delta, const at::Tensor& grad_output, at::Tensor& grad) {
  const at::Tensor scale =
      check_pass2_and_scale(scores, labels, state, grad_output, grad, "aploss grouped_pass2");
  check_groups(codes, code_repeat, offsets, scores, "aploss grouped_pass2");
  const c10::cuda::CUDAGuard guard(scores.device());
  const int device = kernel_device_index(scores);
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream(device).stream();

  const int64_t n = scores.numel();
  if (n == 0) return;
  APLOSS_DISPATCH_SCORES_AND_LABELS(scores.scalar_type(), labels.scalar_type(),
                                    "aploss_grouped_pass2_cuda", [&] {
    const auto kernel = grouped_pass2_kernel<scalar_t, label_t>;
    const int per_sm = blocks_per_sm(reinterpret_cast<const void*>(kernel), kGroupedBlock, 0);
    const int64_t grid = grid_size(device, per_sm, n, kGroupedBlock);
    APLOSS_LAUNCH(kernel, static_cast<unsigned>(grid), kGroupedBlock, 0, stream)(
        scores.const_data_ptr<scalar_t>(), labels.const_data_ptr<label_t>(),
        codes.const_data_ptr<int32_t>(), n, state.const_data_ptr<double>(), state.size(1) - 1,
        offsets.const_data_ptr<int64_t>(), offsets.numel() - 1, delta,
        scale.const_data_ptr<double>(), grad.data_ptr<scalar_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

}  // namespace gpu
}  // namespace aploss
