// Sums among the positives on the GPU (../aploss/kernels.h, positive_window_sums): one
// thread per positive x, summing H over every positive m of its segment directly. That is
// O(P^2 / threads) pairs, P is small next to N, and the direct step needs no shifts or
// prefix sums; threads of a warp read the same m, so the loads are broadcasts.
#include <ATen/ATen.h>

#include "../aploss/kernels.h"
#include "../aploss/math.h"
#include "cuda_common.cuh"

namespace aploss {
namespace gpu {
namespace {

constexpr int kBlock = 256;
constexpr int kMaxRows = 4;  // value rows summed in registers

// The segment of column x: the last u with offsets[u] <= x (empty segments skipped).
__device__ __forceinline__ int64_t segment_of(const int64_t* offsets, int64_t num_segments,
                                              int64_t x) {
  int64_t lo = 0, hi = num_segments;  // offsets[lo] <= x < offsets[hi]
  while (hi - lo > 1) {
    const int64_t mid = lo + (hi - lo) / 2;
    if (offsets[mid] <= x) {
      lo = mid;
    } else {
      hi = mid;
    }
  }
  return lo;
}

__global__ void __launch_bounds__(kBlock)
    positive_window_sums_kernel(const double* __restrict__ positives, int64_t num_pos,
                                const int64_t* __restrict__ offsets, int64_t num_segments,
                                const double* __restrict__ keys,
                                const double* __restrict__ values, int rows, double delta,
                                bool below, bool transpose, double* __restrict__ out) {
  const double* const q = positives;
  const StepParams params = make_step_params(delta, q[0], positives + num_pos, num_pos);
  for (int64_t x = global_thread_index(); x < num_pos; x += grid_threads()) {
    const int64_t u = segment_of(offsets, num_segments, x);
    const double q_x = q[x];
    const double key_x = keys != nullptr ? keys[x] : 0.0;
    double sums[kMaxRows] = {0.0, 0.0, 0.0, 0.0};
    for (int64_t m = offsets[u]; m < offsets[u + 1]; ++m) {
      if (keys != nullptr && (below ? !(keys[m] < key_x) : !(keys[m] >= key_x))) continue;
      const double h = step(transpose ? q_x - q[m] : q[m] - q_x, params);
      if (h == 0.0) continue;
#pragma unroll
      for (int r = 0; r < kMaxRows; ++r) {
        if (r < rows) sums[r] += h * values[r * num_pos + m];
      }
    }
#pragma unroll
    for (int r = 0; r < kMaxRows; ++r) {
      if (r < rows) out[r * num_pos + x] = sums[r];
    }
  }
}

}  // namespace

at::Tensor positive_window_sums(const at::Tensor& positives, const at::Tensor& offsets,
                                const at::Tensor& keys, const at::Tensor& values, double delta,
                                bool below, bool transpose) {
  TORCH_CHECK(on_kernel_device(positives) && positives.dim() == 2 && positives.size(0) == 2 &&
                  positives.is_contiguous() && positives.scalar_type() == at::kDouble,
              "aploss positive_window_sums: positives must be contiguous (2, P) float64");
  const int64_t num_pos = positives.size(1);
  check_f64_on(values, positives, "aploss positive_window_sums: values");
  TORCH_CHECK(values.dim() == 2 && values.size(1) == num_pos && values.size(0) <= kMaxRows,
              "aploss positive_window_sums: values must be (V, P), V <= ", kMaxRows);
  TORCH_CHECK(offsets.scalar_type() == at::kLong && offsets.is_contiguous() &&
                  offsets.numel() >= 2 && offsets.device() == positives.device(),
              "aploss positive_window_sums: offsets must be contiguous int64 on the device");
  if (keys.defined()) check_f64_on(keys, positives, "aploss positive_window_sums: keys");
  TORCH_CHECK(!keys.defined() || keys.numel() == num_pos,
              "aploss positive_window_sums: keys must be (P,)");
  at::Tensor out = at::empty_like(values);
  if (num_pos == 0 || values.size(0) == 0) return out;

  const c10::cuda::CUDAGuard guard(positives.device());
  const int device = kernel_device_index(positives);
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream(device).stream();
  const auto kernel = positive_window_sums_kernel;
  const int per_sm = blocks_per_sm(reinterpret_cast<const void*>(kernel), kBlock, 0);
  const int64_t grid = grid_size(device, per_sm, num_pos, kBlock);
  APLOSS_LAUNCH(kernel, static_cast<unsigned>(grid), kBlock, 0, stream)(
      positives.const_data_ptr<double>(), num_pos, offsets.const_data_ptr<int64_t>(),
      offsets.numel() - 1, keys.defined() ? keys.const_data_ptr<double>() : nullptr,
      values.const_data_ptr<double>(), static_cast<int>(values.size(0)), delta, below,
      transpose, out.data_ptr<double>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return out;
}

}  // namespace gpu
}  // namespace aploss
