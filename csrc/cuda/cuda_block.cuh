// The GPU's Block for the positive stages (../aploss/positive_stages.h): every phase runs
// on the threads of one block (blockDim.x a multiple of 32), a barrier after each.
#pragma once

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

  // window_sums.h's difference arrays at k in [0, n), one warp per k (a run can be long:
  // every interval below the first positive's threshold starts at k = 0), then summed in
  // place over k.
  template <typename C, typename LoRange, typename HiRange, typename Term>
  __device__ void difference_runs(int64_t n, LoRange lo_range, HiRange hi_range, Term term,
                                  C* full, C* linear, double* a) const {
    const int lane = static_cast<int>(threadIdx.x & 31);
    const int64_t warps = blockDim.x >> 5;
    for (int64_t k = threadIdx.x >> 5; k < n; k += warps) {
      DifferenceAt<C> d{C(0), C(0), 0.0};
      const auto [lo_begin, lo_end] = lo_range(k);
      for (int64_t j = lo_begin + lane; j < lo_end; j += 32) add_source(d, term(j), k, true);
      const auto [hi_begin, hi_end] = hi_range(k);
      for (int64_t j = hi_begin + lane; j < hi_end; j += 32) add_source(d, term(j), k, false);
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
