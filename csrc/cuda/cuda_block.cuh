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

// Rows of key_window_sums' scratch: prefix sums of two terms per value row, and two
// orders of the columns.
constexpr int kMaxKeyRows = 2;
constexpr int kKeyScratchRows = 2 * kMaxKeyRows + 1;

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

  // Sums under a second key (../aploss/key_window_sums.h) from a merge sort of the columns
  // by key, one level at a time: at level l every run of 2^l columns is sorted (ties in
  // column order), the prefix sums of the terms along that order give each run's sums
  // over a prefix of its keys, and every column bound c of a query adds, from the run of
  // this level that [0, c) holds, the sums over the keys below its own (a binary search).
  // The next level's runs are merges of pairs: each column's place is its place in its
  // run plus the number of keys before it in the other run (a binary search). O(P log^2 P)
  // in all, no float64 work per pair of positives; in key_scratch (kKeyScratchRows rows).
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
    for_each(n, [=](int64_t i) {
      order[i] = static_cast<int32_t>(i);
      for (int r = 0; r < rows; ++r) out[r * stride + i] = 0.0;
    });
    for (int level = 0; (int64_t(1) << level) <= n; ++level) {
      const int64_t width = int64_t(1) << level;
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
        // One bound at a time: three searches unrolled side by side spill at 64 registers.
#pragma unroll 1
        for (const KeyQuery& c : queries.at) {
          const int64_t first = run_below(c.column, level);
          if (first < 0) continue;
          const RunRange run = passing_columns(order, first, width, keys, keys[x], true);
          for (int r = 0; r < rows; ++r) {
            const double* const prefix = sums + 2 * r * row;
            add[r] += c.v * (prefix[run.to] - prefix[run.from]) +
                      c.qv * (prefix[row + run.to] - prefix[row + run.from]);
          }
        }
        for (int r = 0; r < rows; ++r) out[r * stride + x] += add[r];
      });
      if (2 * width > n) break;
      for_each(n, [=](int64_t i) { next[merged_position(order, n, i, level, keys)] = order[i]; });
      int32_t* const sorted = next;
      next = order;
      order = sorted;
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
