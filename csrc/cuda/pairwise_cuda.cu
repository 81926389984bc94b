// Pairwise (direct O(P * N)) evaluation on the GPU: the simplest correct kernels, an
// independent check of the sorted ones (they share only step() from math.h).
//
// Pass 1, grid (positive tiles, negative slices): each block owns kTile positives, one
// per thread, held in a register; it walks its slice of the entries kTile at a time,
// staging them in shared memory as float64 (an entry that is not a negative is staged
// as -inf, whose H is exactly 0), and every thread adds H(s_j - q_i) over the staged
// entries in a register. Each block writes its P-slice of a (slices, P) buffer of
// partial sums (no atomics), reduced by at::sum over the slices: run-to-run
// deterministic for a given device and problem size.
//
// Pass 2, grid-stride over the entries, kTile per block and step: the positives' q and
// w are streamed through shared memory kTile at a time and each negative sums
// H(s - q_i) w_i; every other entry gets 0 (the driver writes the positives').
//
// Non-finite NEGATIVE scores are rejected with ValueError by gather before
// this pass; should one get here anyway, fp becomes NaN for every positive (so does the
// loss) rather than silently wrong.
#include <ATen/ATen.h>

#include <math_constants.h>

#include <algorithm>

#include "../aploss/dispatch.h"
#include "../aploss/kernels.h"
#include "../aploss/math.h"
#include "cuda_common.cuh"

namespace aploss {
namespace gpu {
namespace {

constexpr int kTile = 256;               // threads per block = positives (pass 1) or entries (pass 2) per tile
constexpr int64_t kMaxGridY = 65535;      // gridDim.y limit

template <typename scalar_t, typename label_t>
__global__ void __launch_bounds__(kTile)
    pairwise_pass1_kernel(const scalar_t* __restrict__ scores, const label_t* __restrict__ labels,
                          int64_t n, const double* __restrict__ positives, int64_t num_pos,
                          double delta, double* __restrict__ partials) {
  APLOSS_SHARED_ARRAY(double, staged, kTile);
  const double* const q = positives;  // row 0: sorted q (row 1, the shifts, is not needed)
  const StepParams params = make_step_params(delta, q[0], positives + num_pos, num_pos);
  const int64_t i = static_cast<int64_t>(blockIdx.x) * kTile + threadIdx.x;  // this thread's positive
  const double q_i = i < num_pos ? q[i] : q[0];
  const double minus_inf = -CUDART_INF;

  double fp = 0.0;
  int non_finite = 0;
  const int64_t chunks = (n + kTile - 1) / kTile;
  for (int64_t c = blockIdx.y; c < chunks; c += gridDim.y) {  // uniform across the block
    const int64_t j = c * kTile + threadIdx.x;
    double v = minus_inf;  // H(-inf - q_i) = 0: not a negative, contributes nothing
    if (j < n && classify_label(labels[j]) == kNegative) {
      const double s = static_cast<double>(scores[j]);
      if (is_finite_score(s)) {
        v = s;
      } else {
        non_finite = 1;
      }
    }
    staged[threadIdx.x] = v;
    // Barrier; skips chunks whose negatives are all pruned (H = 0 against every q_i).
    if (__syncthreads_or(!is_pruned(v, params))) {
#pragma unroll 8
      for (int k = 0; k < kTile; ++k) fp += step(staged[k] - q_i, params);
    }
    __syncthreads();  // before the next chunk overwrites `staged`
  }
  if (__syncthreads_or(non_finite)) fp = CUDART_NAN;
  if (i < num_pos) partials[static_cast<int64_t>(blockIdx.y) * num_pos + i] = fp;
}

template <typename scalar_t, typename label_t>
__global__ void __launch_bounds__(kTile)
    pairwise_pass2_kernel(const scalar_t* __restrict__ scores, const label_t* __restrict__ labels,
                          int64_t n, const double* __restrict__ state, int64_t num_pos,
                          double delta, const double* __restrict__ grad_output,
                          scalar_t* __restrict__ grad) {
  APLOSS_SHARED_ARRAY(double, tile_q, kTile);
  APLOSS_SHARED_ARRAY(double, tile_w, kTile);
  const int64_t width = num_pos + 1;
  const double* const q = state + kRowQ * width;
  const double* const weight = state + kRowW * width;
  const StepParams params = make_step_params(delta, q[0], state + kRowShift * width, num_pos);
  const double scale = *grad_output;

  const int64_t stride = static_cast<int64_t>(gridDim.x) * kTile;
  for (int64_t base = static_cast<int64_t>(blockIdx.x) * kTile; base < n; base += stride) {
    const int64_t j = base + threadIdx.x;
    const int cls = j < n ? classify_label(labels[j]) : static_cast<int>(kIgnored);
    double value = 0.0;
    double v = 0.0;
    bool summing = false;
    if (cls == kNegative) {
      v = static_cast<double>(scores[j]);
      // A pruned negative has H = 0 against every positive: its sum is exactly 0.
      summing = !is_pruned(v, params);
    }
    if (__syncthreads_or(summing)) {  // uniform: the whole block takes the tile loop or not
      for (int64_t t0 = 0; t0 < num_pos; t0 += kTile) {
        const int64_t k = t0 + threadIdx.x;
        tile_q[threadIdx.x] = k < num_pos ? q[k] : 0.0;
        tile_w[threadIdx.x] = k < num_pos ? weight[k] : 0.0;
        __syncthreads();
        if (summing) {
          const int count = num_pos - t0 < kTile ? static_cast<int>(num_pos - t0) : kTile;
          for (int m = 0; m < count; ++m) value += step(v - tile_q[m], params) * tile_w[m];
        }
        __syncthreads();  // before the next tile overwrites tile_q / tile_w
      }
    }
    if (j < n) grad[j] = static_cast<scalar_t>(scale * value);
  }
}

}  // namespace

at::Tensor pairwise_pass1(const at::Tensor& scores, const at::Tensor& labels,
                          const at::Tensor& positives, double delta) {
  check_flat_inputs(scores, labels, "aploss pairwise_pass1");
  check_positives(positives, scores, "aploss pairwise_pass1");
  const c10::cuda::CUDAGuard guard(scores.device());
  const int device = kernel_device_index(scores);
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream(device).stream();

  const int64_t n = scores.numel();
  const int64_t num_pos = positives.size(1);
  if (n == 0) return at::zeros({num_pos}, positives.options());

  at::Tensor partials;
  APLOSS_DISPATCH_SCORES_AND_LABELS(scores.scalar_type(), labels.scalar_type(),
                                    "aploss_pairwise_pass1_cuda", [&] {
    const auto kernel = pairwise_pass1_kernel<scalar_t, label_t>;
    const int per_sm = blocks_per_sm(reinterpret_cast<const void*>(kernel), kTile, 0);
    const int64_t tiles = ceil_div(num_pos, kTile);  // <= 2^23 (P < 2^31): fits gridDim.x
    const int64_t chunks = ceil_div(n, kTile);
    // About two waves of blocks in all (and a (slices, P) buffer of at most that many
    // P-rows' worth of doubles).
    const int64_t wanted = 2 * static_cast<int64_t>(sm_count(device)) * std::max(per_sm, 1);
    const int64_t slices =
        std::max<int64_t>(1, std::min({chunks, ceil_div(wanted, tiles), kMaxGridY}));
    // Every (slice, positive) entry is written exactly once by the kernel.
    partials = at::empty({slices, num_pos}, positives.options());
    const dim3 grid(static_cast<unsigned>(tiles), static_cast<unsigned>(slices));
    APLOSS_LAUNCH(kernel, grid, kTile, 0, stream)(
        scores.const_data_ptr<scalar_t>(), labels.const_data_ptr<label_t>(), n,
        positives.const_data_ptr<double>(), num_pos, delta, partials.data_ptr<double>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return partials.size(0) == 1 ? partials[0] : partials.sum(0);
}

void pairwise_pass2(const at::Tensor& scores, const at::Tensor& labels, const at::Tensor& state,
                    double delta, const at::Tensor& grad_output, at::Tensor& grad) {
  const at::Tensor scale =
      check_pass2_and_scale(scores, labels, state, grad_output, grad, "aploss pairwise_pass2");
  const c10::cuda::CUDAGuard guard(scores.device());
  const int device = kernel_device_index(scores);
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream(device).stream();

  const int64_t n = scores.numel();
  if (n == 0) return;
  const int64_t num_pos = state.size(1) - 1;

  APLOSS_DISPATCH_SCORES_AND_LABELS(scores.scalar_type(), labels.scalar_type(),
                                    "aploss_pairwise_pass2_cuda", [&] {
    const auto kernel = pairwise_pass2_kernel<scalar_t, label_t>;
    const int per_sm = blocks_per_sm(reinterpret_cast<const void*>(kernel), kTile, 0);
    // Every block re-reads all P positives per kTile entries: more blocks, not fewer.
    const int64_t grid = grid_size(device, 4 * std::max(per_sm, 1), n, kTile);
    APLOSS_LAUNCH(kernel, static_cast<unsigned>(grid), kTile, 0, stream)(
        scores.const_data_ptr<scalar_t>(), labels.const_data_ptr<label_t>(), n,
        state.const_data_ptr<double>(), num_pos, delta, scale.const_data_ptr<double>(),
        grad.data_ptr<scalar_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

}  // namespace gpu
}  // namespace aploss
