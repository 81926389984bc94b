// Sums among the positives on the GPU (../aploss/kernels.h, positive_window_sums) as sums
// of range sums (../aploss/key_window_sums.h) over the columns of every segment at once: a
// positive's segment [begin, end) and its window [lo, hi) in it are global columns, and
// G counts from column 0. Without keys, G is one prefix sum of the terms; with keys, a
// merge sort of the columns by key, one level at a time: ATen's cumsum of the terms along
// the level's order, a kernel that adds each query's run of the level (its sums over the
// keys that pass, by a binary search), and a kernel that merges the runs pairwise.
// O(P log^2 P) work in log2(P) levels, no float64 work per pair of positives.
#include <ATen/ATen.h>

#include "../aploss/key_window_sums.h"
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

// Each positive's segment and window in it, as global columns (bounds: (4, P) rows begin,
// lo, hi, end), and the window's offset a (math.h, find_window).
__global__ void __launch_bounds__(kBlock)
    positive_windows_kernel(const double* __restrict__ positives, int64_t num_pos,
                            const int64_t* __restrict__ offsets, int64_t num_segments,
                            double delta, int64_t* __restrict__ bounds, double* __restrict__ a) {
  const double* const q = positives;
  const double* const shift = positives + num_pos;
  for (int64_t x = global_thread_index(); x < num_pos; x += grid_threads()) {
    const int64_t u = segment_of(offsets, num_segments, x);
    const int64_t begin = offsets[u], end = offsets[u + 1];
    const StepParams params = make_step_params(delta, q[begin], shift + begin, end - begin);
    const Window w = find_window(q + begin, end - begin, q[x], params);
    bounds[x] = begin;
    bounds[num_pos + x] = begin + w.lo;
    bounds[2 * num_pos + x] = begin + w.hi;
    bounds[3 * num_pos + x] = end;
    a[x] = w.a;
  }
}

// Adds to every positive's sums what its column bounds take from this level's runs
// (order: the columns, each run of 2^level sorted by key); without keys (order null),
// G(c) is prefix[c]. prefix: (2V, P + 1), rows v then (q - shift) v of each value row,
// prefix[i] over order[0, i).
__global__ void __launch_bounds__(kBlock)
    add_level_kernel(const int64_t* __restrict__ bounds, const double* __restrict__ a,
                     int64_t num_pos, const double* __restrict__ keys,
                     const int32_t* __restrict__ order, int level,
                     const double* __restrict__ prefix, int rows, double inv_2delta, bool below,
                     bool transpose, double* __restrict__ out) {
  const int64_t row = num_pos + 1;
  for (int64_t x = global_thread_index(); x < num_pos; x += grid_threads()) {
    const KeyQueries queries =
        key_queries(bounds[x], bounds[num_pos + x], bounds[2 * num_pos + x],
                    bounds[3 * num_pos + x], a[x], inv_2delta, transpose);
    double add[kMaxRows] = {0.0, 0.0, 0.0, 0.0};
    for (const KeyQuery& c : queries.at) {
      RunRange run{0, c.column};
      if (order != nullptr) {
        const int64_t first = run_below(c.column, level);
        if (first < 0) continue;
        run = passing_columns(order, first, int64_t(1) << level, keys, keys[x], below);
      }
#pragma unroll
      for (int r = 0; r < kMaxRows; ++r) {
        if (r >= rows) continue;
        const double* const v = prefix + r * row;
        const double* const qv = prefix + (rows + r) * row;
        add[r] += c.v * (v[run.to] - v[run.from]) + c.qv * (qv[run.to] - qv[run.from]);
      }
    }
#pragma unroll
    for (int r = 0; r < kMaxRows; ++r) {
      if (r < rows) out[r * num_pos + x] += add[r];
    }
  }
}

// The next level's order: every run merged with the other run of its pair.
__global__ void __launch_bounds__(kBlock)
    merge_runs_kernel(const int32_t* __restrict__ order, int64_t num_pos, int level,
                      const double* __restrict__ keys, int32_t* __restrict__ next) {
  for (int64_t i = global_thread_index(); i < num_pos; i += grid_threads()) {
    next[merged_position(order, num_pos, i, level, keys)] = order[i];
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
  const auto grid_of = [&](const void* kernel) {
    return static_cast<unsigned>(
        grid_size(device, blocks_per_sm(kernel, kBlock, 0), num_pos, kBlock));
  };
  const at::Tensor bounds = at::empty({4, num_pos}, offsets.options());
  const at::Tensor a = at::empty({num_pos}, positives.options());
  APLOSS_LAUNCH(positive_windows_kernel,
                grid_of(reinterpret_cast<const void*>(positive_windows_kernel)), kBlock, 0,
                stream)(positives.const_data_ptr<double>(), num_pos,
                        offsets.const_data_ptr<int64_t>(), offsets.numel() - 1, delta,
                        bounds.data_ptr<int64_t>(), a.data_ptr<double>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();

  // The terms: v, then (q - shift) v, of every value row.
  const int rows = static_cast<int>(values.size(0));
  const at::Tensor terms = at::cat({values, values * (positives[0] - positives[1])}, 0);
  at::Tensor prefix = at::zeros({2 * rows, num_pos + 1}, positives.options());
  at::Tensor prefix_tail = prefix.narrow(1, 1, num_pos);
  out.zero_();
  const unsigned add_grid = grid_of(reinterpret_cast<const void*>(add_level_kernel));
  const auto add_level = [&](const at::Tensor& order, int level) {
    APLOSS_LAUNCH(add_level_kernel, add_grid, kBlock, 0, stream)(
        bounds.const_data_ptr<int64_t>(), a.const_data_ptr<double>(), num_pos,
        keys.defined() ? keys.const_data_ptr<double>() : nullptr,
        order.defined() ? order.const_data_ptr<int32_t>() : nullptr, level,
        prefix.const_data_ptr<double>(), rows, 0.5 / delta, below, transpose,
        out.data_ptr<double>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  };
  if (!keys.defined()) {
    at::cumsum_out(prefix_tail, terms, 1);
    add_level({}, 0);
    return out;
  }
  at::Tensor order = at::arange(num_pos, offsets.options().dtype(at::kInt));
  at::Tensor next = at::empty_like(order);
  const unsigned merge_grid = grid_of(reinterpret_cast<const void*>(merge_runs_kernel));
  for (int level = 0; (int64_t(1) << level) <= num_pos; ++level) {
    at::cumsum_out(prefix_tail, terms.index_select(1, order), 1);
    add_level(order, level);
    if ((int64_t(2) << level) > num_pos) break;
    APLOSS_LAUNCH(merge_runs_kernel, merge_grid, kBlock, 0, stream)(
        order.const_data_ptr<int32_t>(), num_pos, level, keys.const_data_ptr<double>(),
        next.data_ptr<int32_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    std::swap(order, next);
  }
  return out;
}

}  // namespace gpu
}  // namespace aploss
