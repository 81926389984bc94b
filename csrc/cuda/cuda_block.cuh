// The GPU's Block for the positive stages (../aploss/positive_stages.h): every phase runs
// on the threads of one block (blockDim.x a multiple of 32), a barrier after each.
#pragma once

#include "../aploss/key_window_sums.h"
#include "../aploss/math.h"
#include "../aploss/positive_stages.h"
#include "../aploss/window_sums.h"
#include "block_primitives.cuh"

#if defined(__CUDACC__) || defined(APLOSS_SIMT)

namespace aploss {
namespace gpu {

// Rows of key_window_sums' scratch: prefix sums of two terms per value row, two orders of
// the columns (int32, one row), the left-half counts of a level and three counts per
// query (int32, two rows).
constexpr int kMaxKeyRows = 2;
constexpr int kKeyScratchRows = 2 * kMaxKeyRows + 3;

// Outputs of a merge (of the root's sort) that one thread writes after one search.
constexpr int32_t kMergeChunk = 16;

// Outputs [d, d + kMergeChunk) of the merge of order's runs of `width` (sorted by key) in
// pairs into runs of 2 width, written to next: where each pair's part of the chunk starts
// by a merge-path search (ties: the left run's columns first, so the sort is stable), then
// a sequential merge.
__device__ __forceinline__ void merge_chunk(const int32_t* order, int32_t n, int32_t width,
                                            int32_t d, const double* keys, int32_t* next) {
  // int32 (P < 2^31): the stage's block runs at 64 registers a thread.
  const int32_t stop = n - d > kMergeChunk ? d + kMergeChunk : n;
  while (d < stop) {
    const int32_t first = d - d % (2 * width);
    const int32_t left_len = n - first < width ? n - first : width;
    const int32_t right_len = n - first - left_len < width ? n - first - left_len : width;
    const int32_t* const left = order + first;
    const int32_t* const right = left + left_len;
    const int32_t at = d - first;
    int32_t lo = at > right_len ? at - right_len : 0;
    int32_t hi = at < left_len ? at : left_len;
    while (lo < hi) {
      const int32_t mid = (lo + hi) / 2;
      if (keys[left[mid]] <= keys[right[at - 1 - mid]]) {
        lo = mid + 1;
      } else {
        hi = mid;
      }
    }
    int32_t i = lo, j = at - lo;
    const int32_t end =
        stop - first < left_len + right_len ? stop - first : left_len + right_len;
    for (int32_t k = at; k < end; ++k) {
      const bool take_left = j >= right_len || (i < left_len && keys[left[i]] <= keys[right[j]]);
      next[first + k] = take_left ? left[i++] : right[j++];
    }
    d = first + end;
  }
}

struct CudaBlock {
  long long* ints;  // shared scan scratch (kScanScratch each)
  double* reals;

  template <typename F>
  __device__ void for_each(int64_t n, F&& f) const {
    for (int64_t i = threadIdx.x; i < n; i += blockDim.x) f(i);
    __syncthreads();
  }

  __device__ long long sum(long long local) const { return block_sum(local, ints); }
  __device__ double sum(double local) const { return block_sum(local, reals); }

  template <typename T, typename Op, typename Value, typename Store>
  __device__ T scan(int64_t n, Op op, T identity, bool inclusive, Value value,
                    Store store) const {
    return block_scan<T>(n, op, identity, inclusive, scratch<T>(), value, store);
  }

  // window_sums.h's difference arrays at k in [0, n), one warp per k: the runs of sources
  // whose window starts (or ends) at k, found by a search over the monotone lo_of (hi_of)
  // and summed by the warp's lanes in a fixed order (a run can be long: every interval
  // below the first positive's threshold starts at k = 0); then their prefix sums.
  template <typename C, typename LoOf, typename HiOf, typename Term>
  __device__ void difference_sums(int64_t n, int64_t sources, LoOf lo_of, HiOf hi_of, Term term,
                                  C* full, C* linear, double* a) const {
    const int lane = static_cast<int>(threadIdx.x & 31);
    const int64_t warps = blockDim.x >> 5;
    const auto first = [sources](auto of, int64_t k) {  // the first source with of(j) >= k
      int64_t lo = 0, count = sources;
      while (count > 0) {
        const int64_t half = count / 2;
        if (of(lo + half) < k) {
          lo += half + 1;
          count -= half + 1;
        } else {
          count = half;
        }
      }
      return lo;
    };
    for (int64_t k = threadIdx.x >> 5; k < n; k += warps) {
      DifferenceAt<C> d{C(0), C(0), 0.0};
      const int64_t lo_end = first(lo_of, k + 1);
      for (int64_t j = first(lo_of, k) + lane; j < lo_end; j += 32) add_source(d, term(j), k, true);
      const int64_t hi_end = first(hi_of, k + 1);
      for (int64_t j = first(hi_of, k) + lane; j < hi_end; j += 32) add_source(d, term(j), k, false);
      d.full = warp_sum(d.full);
      d.linear = warp_sum(d.linear);
      d.a = warp_sum(d.a);
      if (lane == 0) {
        full[k] = d.full;
        linear[k] = d.linear;
        a[k] = d.a;
      }
    }
    __syncthreads();
    const auto add = [](auto x, auto y) { return x + y; };
    scan<C>(n, add, C(0), true, [full](int64_t k) { return full[k]; },
            [full](int64_t k, C v) { full[k] = v; });
    scan<C>(n, add, C(0), true, [linear](int64_t k) { return linear[k]; },
            [linear](int64_t k, C v) { linear[k] = v; });
    scan<double>(n, add, 0.0, true, [a](int64_t k) { return a[k]; },
                 [a](int64_t k, double v) { a[k] = v; });
  }

  // Sums under a second key (../aploss/key_window_sums.h) from the tree over the columns,
  // walked top down. Its root, the columns sorted by key (ties in column order), comes from
  // a merge sort whose every merge is split into chunks of kMergeChunk outputs by one
  // merge-path search each; then per level the left-half counts (a scan), the split of
  // every node, the prefix sums of the terms in the new order, and one step down for
  // every query. O(P log P) in all, no float64 work per pair of positives; in key_scratch
  // (kKeyScratchRows rows).
  __device__ void key_window_sums(const StageArrays& s, const double* keys, const double* values,
                                  int rows, int64_t stride, bool transpose, double* out) const {
    const int64_t n = s.num_pos;
    const double* const q = s.q;
    const double* const shift = s.shift;
    const int32_t* const window_lo = s.window_lo;
    const int32_t* const window_hi = s.window_hi;
    const double inv_2delta = 0.5 / s.delta;
    const StepParams params = make_step_params(s.delta, q[0], shift, n);
    const int64_t row = key_stride;
    double* const sums = key_scratch;  // per value row: the prefix sums of v, then of (q - shift) v
    int32_t* order = reinterpret_cast<int32_t*>(key_scratch + 2 * kMaxKeyRows * row);
    int32_t* next = order + row;  // a row of doubles holds two of int32
    int32_t* const left_before =
        reinterpret_cast<int32_t*>(key_scratch + (2 * kMaxKeyRows + 1) * row);
    int32_t* const counts = left_before + row;  // three per positive, in 1.5 rows
    for_each(n, [=](int64_t i) {
      order[i] = static_cast<int32_t>(i);
      for (int r = 0; r < rows; ++r) out[r * stride + i] = 0.0;
    });
    const int levels = key_levels(n);
    for (int32_t width = 1; width < n; width *= 2) {
      const int64_t chunks = (n + kMergeChunk - 1) / kMergeChunk;
      for_each(chunks, [=](int64_t chunk) {
        merge_chunk(order, static_cast<int32_t>(n), width,
                    static_cast<int32_t>(chunk) * kMergeChunk, keys, next);
      });
      int32_t* const sorted = next;
      next = order;
      order = sorted;
    }
    for_each(n, [=](int64_t x) {
      const int32_t below = static_cast<int32_t>(keys_before(order, n, keys, keys[x]));
      for (int k = 0; k < 3; ++k) counts[k * n + x] = below;
    });
    for (int level = levels; level >= 1; --level) {
      if (threadIdx.x == 0) left_before[0] = 0;
      scan<long long>(
          n, [](long long x, long long y) { return x + y; }, 0LL, true,
          [=](int64_t i) { return in_left_half(order[i], level) ? 1LL : 0LL; },
          [=](int64_t i, long long sum) { left_before[i + 1] = static_cast<int32_t>(sum); });
      for_each(n, [=](int64_t i) {
        next[split_position(i, order[i], level, left_before)] = order[i];
      });
      int32_t* const split = next;
      next = order;
      order = split;
      for (int t = 0; t < 2 * rows; ++t) {
        double* const prefix = sums + t * row;  // prefix[i]: over order[0, i)
        const double* const v = values + (t / 2) * stride;
        const bool weighted = (t & 1) != 0;
        if (threadIdx.x == 0) prefix[0] = 0.0;
        scan<double>(
            n, [](double x, double y) { return x + y; }, 0.0, true,
            [=](int64_t i) {
              const int32_t m = order[i];
              return weighted ? (q[m] - shift[m]) * v[m] : v[m];
            },
            [=](int64_t i, double sum) { prefix[i + 1] = sum; });
      }
      for_each(n, [=](int64_t x) {
        const int64_t lo = window_lo[x], hi = window_hi[x];
        const KeyQueries queries = key_queries(0, lo, hi, n, window_offset(q[x], lo, hi, params),
                                               inv_2delta, transpose);
        double add[kMaxKeyRows] = {0.0, 0.0};
#pragma unroll 1
        for (int k = 0; k < 3; ++k) {
          const KeyQuery& c = queries.at[k];
          int64_t count = counts[k * n + x];
          const RunRange run = descend(c.column, level, left_before, true, count);
          counts[k * n + x] = static_cast<int32_t>(count);
          if (run.from == run.to) continue;
          for (int r = 0; r < rows; ++r) {
            const double* const prefix = sums + 2 * r * row;
            add[r] += c.v * (prefix[run.to] - prefix[run.from]) +
                      c.qv * (prefix[row + run.to] - prefix[row + run.from]);
          }
        }
        for (int r = 0; r < rows; ++r) out[r * stride + x] += add[r];
      });
    }
  }

  double* key_scratch;  // kKeyScratchRows rows of key_stride >= P + 1 doubles
  int64_t key_stride;

 private:
  template <typename T>
  __device__ T* scratch() const;
};

template <>
__device__ __forceinline__ long long* CudaBlock::scratch<long long>() const {
  return ints;
}
template <>
__device__ __forceinline__ double* CudaBlock::scratch<double>() const {
  return reals;
}

}  // namespace gpu
}  // namespace aploss

#endif  // __CUDACC__ || APLOSS_SIMT
