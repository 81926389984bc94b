// Pass 1's per-interval integer sums (ranking_cuda.cuh, IntervalSums) as one block adds
// them: in its shared memory when the intervals fit (flushed to the global sums once, at
// the end), else straight into the global sums. Integer additions commute, so the result
// is the same in every run. Shared by one ranking's and the grouped pass 1.
#pragma once

#if defined(__CUDACC__) || defined(APLOSS_SIMT)

#include <cstdint>

#include "ranking_cuda.cuh"

namespace aploss {
namespace gpu {

// Shared bytes per interval: 64-bit sum, 32-bit count, 32-bit carry.
constexpr int64_t kSharedIntervalBytes = 16;

// An offset in [0, 1] in fixed point; anything else (never for a key in its interval)
// counts as 0.
template <typename K>
__device__ __forceinline__ unsigned long long fixed_offset(K offset) {
  constexpr K one = K(1ull << FixedPoint<K>::kBits);
  if (offset >= K(1)) return 1ull << FixedPoint<K>::kBits;
  return offset > K(0) ? static_cast<unsigned long long>(offset * one) : 0ull;
}

class BlockIntervalSums {
 public:
  // `in_shared` must be uniform over the block (the barriers below); when it holds,
  // `smem` has kSharedIntervalBytes per interval, zeroed here.
  __device__ BlockIntervalSums(unsigned long long* smem, int64_t intervals, bool in_shared,
                               IntervalSums* global)
      : sum_lo_(smem), count_(reinterpret_cast<unsigned int*>(smem + intervals)),
        sum_hi_(count_ + intervals), intervals_(intervals), in_shared_(in_shared),
        global_(global) {
    if (!in_shared_) return;
    for (int64_t m = threadIdx.x; m < intervals_; m += blockDim.x) {
      sum_lo_[m] = 0;
      count_[m] = 0;
      sum_hi_[m] = 0;
    }
    __syncthreads();
  }

  // One negative of interval m with its offset in fixed point.
  __device__ void add(int64_t m, unsigned long long fixed) const {
    if (in_shared_) {
      atomicAdd(count_ + m, 1u);
      const unsigned long long old = atomicAdd(sum_lo_ + m, fixed);
      if (old + fixed < old) atomicAdd(sum_hi_ + m, 1u);
    } else {
      IntervalSums& s = global_[m];
      atomicAdd(&s.count, 1ull);
      const unsigned long long old = atomicAdd(&s.lo, fixed);
      if (old + fixed < old) atomicAdd(&s.hi, 1ull);
    }
  }

  // After the block's last add: its shared sums into the global ones.
  __device__ void flush() const {
    if (!in_shared_) return;
    __syncthreads();
    for (int64_t m = threadIdx.x; m < intervals_; m += blockDim.x) {
      if (count_[m] == 0) continue;
      IntervalSums& s = global_[m];
      atomicAdd(&s.count, static_cast<unsigned long long>(count_[m]));
      const unsigned long long lo = sum_lo_[m];
      const unsigned long long old = atomicAdd(&s.lo, lo);
      const unsigned long long carry = old + lo < old ? 1ull : 0ull;
      if (sum_hi_[m] + carry != 0) atomicAdd(&s.hi, sum_hi_[m] + carry);
    }
  }

 private:
  unsigned long long* sum_lo_;
  unsigned int* count_;
  unsigned int* sum_hi_;
  int64_t intervals_;
  bool in_shared_;
  IntervalSums* global_;
};

}  // namespace gpu
}  // namespace aploss

#endif  // __CUDACC__ || APLOSS_SIMT
