// The GPU's Block for the positive stages (../aploss/positive_stages.h): every phase runs
// on the threads of one block (blockDim.x a multiple of 32), a barrier after each.
#pragma once

#include "../aploss/math.h"
#include "../aploss/positive_stages.h"
#include "../aploss/window_sums.h"
#include "block_primitives.cuh"

#if defined(__CUDACC__) || defined(APLOSS_SIMT)

namespace aploss {
namespace gpu {

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

  // Sums under a second key, one thread per positive x, directly over the positives m where
  // H is not 0: O(P) each, O(P^2 / threads) in all.
  __device__ void key_window_sums(const StageArrays& s, const double* keys, const double* values,
                                  int rows, int64_t stride, bool transpose, double* out) const {
    const double* const q = s.q;
    const int64_t num_pos = s.num_pos;
    const double delta = s.delta, inv_2delta = 0.5 / s.delta;
    for_each(num_pos, [=](int64_t x) {
      const double q_x = q[x], key_x = keys[x];
      int64_t begin = 0, end = num_pos;
      if (transpose) {  // H(q_x - q_m) > 0: q_x - q_m > -delta
        end = partition_point(q, num_pos, NonzeroStep{q_x, delta});
      } else {  // H(q_m - q_x) > 0: q_m - q_x > -delta
        begin = partition_point(q, num_pos, [q_x, delta](double v) { return !(v - q_x > -delta); });
      }
      double sums[2] = {0.0, 0.0};
      for (int64_t m = begin; m < end; ++m) {
        if (!(keys[m] < key_x)) continue;
        const double d = transpose ? q_x - q[m] : q[m] - q_x;
        const double h0 = d * inv_2delta + 0.5;
        const double h = h0 < 0.0 ? 0.0 : (h0 > 1.0 ? 1.0 : h0);
        for (int r = 0; r < rows; ++r) sums[r] += h * values[r * stride + m];
      }
      for (int r = 0; r < rows; ++r) out[r * stride + x] = sums[r];
    });
  }

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
