// Sums among the positives on the GPU (../aploss/kernels.h, positive_window_sums) as sums
// of range sums (../aploss/key_window_sums.h) over the columns of every segment at once: a
// positive's segment [begin, end) and its window [lo, hi) in it are global columns, and
// G counts from column 0. Without keys, G is one prefix sum of the terms; with keys, a
// tree over the columns walked top down (key_window_sums.h): ATen's stable sort of the
// keys for the root, then per level ATen's cumsum of the level's terms and left-half flags
// (in its order) and one kernel that moves every query one level down and splits every
// node into its halves for the next level. O(P log P) work in log2(P) + 2 levels of two
// launches, no float64 work per pair of positives.
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

// Without keys: adds to every positive's sums G(c) = prefix[c] at its column bounds.
// prefix: (2V, P + 1), rows v then (q - shift) v of each value row, prefix[i] over [0, i).
__global__ void __launch_bounds__(kBlock)
    add_prefix_sums_kernel(const int64_t* __restrict__ bounds, const double* __restrict__ a,
                           int64_t num_pos, const double* __restrict__ prefix, int rows,
                           double inv_2delta, bool transpose, double* __restrict__ out) {
  const int64_t row = num_pos + 1;
  for (int64_t x = global_thread_index(); x < num_pos; x += grid_threads()) {
    const KeyQueries queries =
        key_queries(bounds[x], bounds[num_pos + x], bounds[2 * num_pos + x],
                    bounds[3 * num_pos + x], a[x], inv_2delta, transpose);
    for (int r = 0; r < rows; ++r) {
      const double* const v = prefix + r * row;
      const double* const qv = prefix + (rows + r) * row;
      double add = 0.0;
      for (const KeyQuery& c : queries.at) add += c.v * v[c.column] + c.qv * qv[c.column];
      out[r * num_pos + x] = add;
    }
  }
}

// The level's terms in its order, then its left-half flags, as rows of `gathered`
// ((2V + 1, P)): one cumsum gives both the terms' prefix sums and the left-half counts
// (exact in float64).
__device__ __forceinline__ void gather_level(int64_t to, int32_t column, int level,
                                             const double* __restrict__ terms, int term_rows,
                                             int64_t num_pos, double* __restrict__ gathered) {
  for (int t = 0; t < term_rows; ++t) gathered[t * num_pos + to] = terms[t * num_pos + column];
  gathered[term_rows * num_pos + to] = level >= 1 && in_left_half(column, level) ? 1.0 : 0.0;
}

// The root of the tree (key_window_sums.h): its order gathered, and every query's count
// of keys below its own (a search in the sorted keys; a positive's three bounds start
// with the same).
__global__ void __launch_bounds__(kBlock)
    tree_root_kernel(const int32_t* __restrict__ order, int64_t num_pos, int levels,
                     const double* __restrict__ keys, const double* __restrict__ terms,
                     int term_rows, double* __restrict__ gathered, int32_t* __restrict__ counts) {
  for (int64_t x = global_thread_index(); x < num_pos; x += grid_threads()) {
    const int32_t below = static_cast<int32_t>(keys_before(order, num_pos, keys, keys[x]));
    for (int k = 0; k < 3; ++k) counts[k * num_pos + x] = below;
    gather_level(x, order[x], levels, terms, term_rows, num_pos, gathered);
  }
}

// Every query from level + 1 down to `level` (key_window_sums.h, descend; with
// level_sums, the prefix sums of this level's order, and left_above, the left-half counts
// of the level above), adding the left half it takes; then (level >= 1) this level's
// nodes split into their halves: the next order, gathered. Sums: (2V + 1, P + 1), row t
// over [0, i) of the order, rows v then (q - shift) v of each value row, then the flags.
__global__ void __launch_bounds__(kBlock)
    tree_level_kernel(const int64_t* __restrict__ bounds, const double* __restrict__ a,
                      int64_t num_pos, int level, int levels,
                      const double* __restrict__ level_sums,
                      const double* __restrict__ above_sums, int rows, double inv_2delta,
                      bool below, bool transpose, int32_t* __restrict__ counts,
                      double* __restrict__ out, const int32_t* __restrict__ order,
                      const double* __restrict__ terms, int32_t* __restrict__ next,
                      double* __restrict__ gathered) {
  const int64_t row = num_pos + 1;
  const int term_rows = 2 * rows;
  for (int64_t x = global_thread_index(); x < num_pos; x += grid_threads()) {
    if (level < levels) {
      const double* const left_above = above_sums + term_rows * row;
      const KeyQueries queries =
          key_queries(bounds[x], bounds[num_pos + x], bounds[2 * num_pos + x],
                      bounds[3 * num_pos + x], a[x], inv_2delta, transpose);
      double add[kMaxRows] = {0.0, 0.0, 0.0, 0.0};
      for (int k = 0; k < 3; ++k) {
        const KeyQuery& c = queries.at[k];
        int64_t count = counts[k * num_pos + x];
        const RunRange run = descend(c.column, level + 1, left_above, below, count);
        counts[k * num_pos + x] = static_cast<int32_t>(count);
        if (run.from == run.to) continue;
#pragma unroll
        for (int r = 0; r < kMaxRows; ++r) {
          if (r >= rows) continue;
          const double* const v = level_sums + r * row;
          const double* const qv = level_sums + (rows + r) * row;
          add[r] += c.v * (v[run.to] - v[run.from]) + c.qv * (qv[run.to] - qv[run.from]);
        }
      }
#pragma unroll
      for (int r = 0; r < kMaxRows; ++r) {
        if (r < rows) out[r * num_pos + x] += add[r];
      }
    }
    if (level >= 1) {
      const int32_t column = order[x];
      const int64_t to = split_position(x, column, level, level_sums + term_rows * row);
      next[to] = column;
      gather_level(to, column, level - 1, terms, term_rows, num_pos, gathered);
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
  const int64_t term_rows = 2 * rows;
  const at::Tensor terms = at::cat({values, values * (positives[0] - positives[1])}, 0);
  const double inv_2delta = 0.5 / delta;
  if (!keys.defined()) {
    const at::Tensor prefix = at::zeros({term_rows, num_pos + 1}, positives.options());
    at::Tensor prefix_tail = prefix.narrow(1, 1, num_pos);
    at::cumsum_out(prefix_tail, terms, 1);
    APLOSS_LAUNCH(add_prefix_sums_kernel,
                  grid_of(reinterpret_cast<const void*>(add_prefix_sums_kernel)), kBlock, 0,
                  stream)(bounds.const_data_ptr<int64_t>(), a.const_data_ptr<double>(), num_pos,
                          prefix.const_data_ptr<double>(), rows, inv_2delta, transpose,
                          out.data_ptr<double>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    return out;
  }

  // The tree, top down (key_window_sums.h): the root's order is the columns sorted by key
  // (ties in column order). Per level, one cumsum of the level's gathered terms and flags,
  // and one kernel: every query one level down, and the level's split for the next.
  const int levels = key_levels(num_pos);
  at::Tensor order = at::argsort(keys, /*stable=*/true).to(at::kInt);
  const at::Tensor next_and_counts = at::empty({4, num_pos}, order.options());
  at::Tensor next = next_and_counts[0];
  const at::Tensor counts = next_and_counts.narrow(0, 1, 3);
  const at::Tensor gathered = at::empty({term_rows + 1, num_pos}, positives.options());
  const at::Tensor both_sums = at::zeros({2, term_rows + 1, num_pos + 1}, positives.options());
  at::Tensor sums = both_sums[0];
  at::Tensor above = both_sums[1];
  APLOSS_LAUNCH(tree_root_kernel, grid_of(reinterpret_cast<const void*>(tree_root_kernel)),
                kBlock, 0, stream)(order.const_data_ptr<int32_t>(), num_pos, levels,
                                   keys.const_data_ptr<double>(), terms.const_data_ptr<double>(),
                                   static_cast<int>(term_rows), gathered.data_ptr<double>(),
                                   counts.data_ptr<int32_t>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  out.zero_();
  const unsigned level_grid = grid_of(reinterpret_cast<const void*>(tree_level_kernel));
  for (int level = levels; level >= 0; --level) {
    at::Tensor sums_tail = sums.narrow(1, 1, num_pos);
    at::cumsum_out(sums_tail, gathered, 1);
    APLOSS_LAUNCH(tree_level_kernel, level_grid, kBlock, 0, stream)(
        bounds.const_data_ptr<int64_t>(), a.const_data_ptr<double>(), num_pos, level, levels,
        sums.const_data_ptr<double>(), above.const_data_ptr<double>(), rows, inv_2delta, below,
        transpose, counts.data_ptr<int32_t>(), out.data_ptr<double>(),
        order.const_data_ptr<int32_t>(), terms.const_data_ptr<double>(),
        next.data_ptr<int32_t>(), gathered.data_ptr<double>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    std::swap(order, next);
    std::swap(sums, above);
  }
  return out;
}

}  // namespace gpu
}  // namespace aploss
