// Block-wide building blocks of the one-block kernels that do a ranking's P-sized work
// (rank_positives_cuda.cu, positive_stage_cuda.cu): scans, reductions and a sort in shared
// memory, written with warp shuffles and barriers only, so that the emulated device of
// the tests runs them exactly as written (CUB's block primitives use inline PTX, which it
// cannot). Every helper is called by all threads of the block, blockDim.x a multiple of
// 32; each ends with a barrier, so its results and its scratch may be used at once.
#pragma once

#include <algorithm>

#include "cuda_common.cuh"

#if defined(__CUDACC__) || defined(APLOSS_SIMT)

namespace aploss {
namespace gpu {

// Shared scratch of the scans: one value per warp and one more. A kernel declares one per
// value type it scans (APLOSS_SHARED_ARRAY(T, name, kScanScratch)).
constexpr int kScanScratch = 33;

// Exclusive scan of one value per thread in thread order, with `op` (associative) and its
// identity; the block's total goes to *total. The order of the operations depends on the
// block size only, so a float sum is the same in every run.
template <typename T, typename Op>
__device__ T block_exclusive_scan(T value, Op op, T identity, T* scratch, T* total) {
  const int lane = static_cast<int>(threadIdx.x & 31);
  const int warp = static_cast<int>(threadIdx.x >> 5);
  const int warps = static_cast<int>((blockDim.x + 31) >> 5);
  T inclusive = value;
#pragma unroll
  for (int d = 1; d < 32; d <<= 1) {
    const T before = __shfl_up_sync(kFullMask, inclusive, d);
    if (lane >= d) inclusive = op(before, inclusive);
  }
  if (lane == 31) scratch[warp] = inclusive;
  __syncthreads();
  if (warp == 0) {
    T w = lane < warps ? scratch[lane] : identity;
#pragma unroll
    for (int d = 1; d < 32; d <<= 1) {
      const T before = __shfl_up_sync(kFullMask, w, d);
      if (lane >= d) w = op(before, w);
    }
    scratch[lane] = w;  // the inclusive scan of the warps' totals
  }
  __syncthreads();
  T within = __shfl_up_sync(kFullMask, inclusive, 1);
  if (lane == 0) within = identity;
  const T result = warp > 0 ? op(scratch[warp - 1], within) : within;
  *total = scratch[warps - 1];
  __syncthreads();
  return result;
}

template <typename T>
struct Plus {
  __device__ T operator()(T a, T b) const { return a + b; }
};
template <typename T>
struct Max {
  __device__ T operator()(T a, T b) const { return b > a ? b : a; }
};

template <typename T>
__device__ T block_sum(T value, T* scratch) {
  T total;
  block_exclusive_scan(value, Plus<T>(), T(0), scratch, &total);
  return total;
}

// The range of [0, n) that this thread scans: contiguous chunks in thread order.
struct ThreadChunk {
  int64_t begin, end;
};
__device__ __forceinline__ ThreadChunk thread_chunk(int64_t n) {
  const int64_t per = (n + blockDim.x - 1) / blockDim.x;
  const int64_t begin = std::min<int64_t>(n, per * threadIdx.x);
  return {begin, std::min<int64_t>(n, begin + per)};
}

// Scan of n values produced by `value(i)`, each result handed to `store(i, result)`:
// inclusive (result includes value(i)) or exclusive. Returns the total. `value` is called
// twice per index (a sum per chunk, then the chunk's scan), so it must be pure.
template <typename T, typename Op, typename Value, typename Store>
__device__ T block_scan(int64_t n, Op op, T identity, bool inclusive, T* scratch, Value value,
                        Store store) {
  const ThreadChunk c = thread_chunk(n);
  T local = identity;
  for (int64_t i = c.begin; i < c.end; ++i) local = op(local, value(i));
  T total;
  T running = block_exclusive_scan(local, op, identity, scratch, &total);
  for (int64_t i = c.begin; i < c.end; ++i) {
    const T v = value(i);
    if (inclusive) {
      running = op(running, v);
      store(i, running);
    } else {
      store(i, running);
      running = op(running, v);
    }
  }
  __syncthreads();
  return total;
}

// Sorts keys[0, n) ascending in place (n a power of two, in shared memory), carrying
// items[] along; `less(a, i, b, j)` orders key a (item i) before key b (item j) and must
// be a strict total order. Bitonic: log2(n) (log2(n) + 1) / 2 rounds of n / 2
// compare-exchanges, each followed by a barrier.
template <typename Key, typename Item, typename Less>
__device__ void block_bitonic_sort(Key* keys, Item* items, int64_t n, Less less) {
  for (int64_t k = 2; k <= n; k <<= 1) {
    for (int64_t j = k >> 1; j > 0; j >>= 1) {
      for (int64_t t = threadIdx.x; t < n / 2; t += blockDim.x) {
        // The t-th pair of this round: i has bit j clear, partner i + j.
        const int64_t i = 2 * t - (t & (j - 1));
        const int64_t partner = i + j;
        const bool ascending = (i & k) == 0;
        const Key a = keys[i], b = keys[partner];
        const Item x = items[i], y = items[partner];
        if (less(b, y, a, x) == ascending) {
          keys[i] = b;
          keys[partner] = a;
          items[i] = y;
          items[partner] = x;
        }
      }
      __syncthreads();
    }
  }
}

}  // namespace gpu
}  // namespace aploss

#endif  // __CUDACC__ || APLOSS_SIMT
