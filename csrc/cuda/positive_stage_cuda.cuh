// What the GPU adds around the losses' positive stages (../aploss/positive_stages.h), in
// the same block: fp(i) from pass 1's interval sums before the stage, and pass 2's
// per-interval pieces from the positives' weights after it.
#pragma once

#include "../aploss/intervals.h"
#include "../aploss/positive_stages.h"
#include "../aploss/window_sums.h"
#include "cuda_block.cuh"
#include "ranking_cuda.cuh"

#if defined(__CUDACC__) || defined(APLOSS_SIMT)

namespace aploss {
namespace gpu {

constexpr int kStageBlock = 1024;

// The workspace's scratch as kStageRows rows of P + 1 words.
template <typename K>
__device__ __forceinline__ double* stage_row(const RankingBuffers<K>& r, int row) {
  return r.scratch + row * (r.capacity + 1);
}

__device__ __forceinline__ double fixed_sum(const IntervalSums& sums, int bits) {
  const double whole = static_cast<double>(sums.hi) * 18446744073709551616.0 +
                       static_cast<double>(sums.lo);
  return ldexp(whole, -bits);
}

// fp(i) = sum over the negatives of H(s_j - q_i) for every positive, from pass 1's
// interval sums: the intervals as the sources of window_sums.h. Rows 0 and 1 are its
// work rows.
template <typename K>
__device__ void false_positives(const CudaBlock& b, const RankingBuffers<K>& r,
                                int64_t num_pos, double delta, double* fp) {
  const double inv_2delta = 0.5 / delta;
  const int64_t count = 2 * num_pos;
  const int32_t* const lo_of = r.lo_of;
  const int32_t* const hi_of = r.hi_of;
  long long* const full = reinterpret_cast<long long*>(stage_row(r, 0));
  long long* const linear = reinterpret_cast<long long*>(stage_row(r, 1));
  b.difference_sums<long long>(
      num_pos, count + 1, [lo_of](int64_t m) { return static_cast<int64_t>(lo_of[m]); },
      [hi_of](int64_t m) { return static_cast<int64_t>(hi_of[m]); },
      [&r, inv_2delta](int64_t m) {
        const IntervalSums& sums = r.sums[m];
        const int64_t lo = r.lo_of[m], hi = r.hi_of[m];
        double sum_a = 0.0;
        if (sums.count != 0 && hi > lo) {
          // Each offset is (s - left) / (2 delta) from the left end; a = (s - shift) /
          // (2 delta) + 1/2 (math.h, window_offset).
          const double left = static_cast<double>(interval_anchor(r.thresholds[m - 1]));
          sum_a = static_cast<double>(sums.count) *
                      (scaled_difference(left, r.shift[lo], inv_2delta) + 0.5) +
                  fixed_sum(sums, FixedPoint<K>::kBits);
        }
        return SourceTerm<long long>{static_cast<long long>(sums.count), lo, hi, sum_a};
      },
      full, linear, fp);
  // The total count: every interval's (the first has none).
  long long mine = 0;
  for (int64_t m = 1 + threadIdx.x; m <= count; m += blockDim.x) {
    mine += static_cast<long long>(r.sums[m].count);
  }
  const long long total = b.sum(mine);
  b.for_each(num_pos, [&r, full, linear, fp, total, inv_2delta](int64_t i) {
    fp[i] = window_sum(total, full[i], linear[i], fp[i], r.q[i], r.shift[i], inv_2delta);
  });
}

// Pass 2's pieces: the affine gradient of every interval (intervals.h, interval_gradient)
// from the positives' weights r.w, with grad_output 1 (pass 2 applies it). Their prefix
// sums W and Q take rows 0 and 1.
template <typename K>
__device__ void interval_pieces(const CudaBlock& b, const RankingBuffers<K>& r, int64_t num_pos,
                                double delta) {
  double* const W = stage_row(r, 0);
  double* const Q = stage_row(r, 1);
  const double* const w = r.w;
  const double* const q = r.q;
  const double* const shift = r.shift;
  const auto add = [](double x, double y) { return x + y; };
  b.scan<double>(
      num_pos + 1, add, 0.0, false, [w, num_pos](int64_t i) { return i < num_pos ? w[i] : 0.0; },
      [W](int64_t i, double v) { W[i] = v; });
  b.scan<double>(
      num_pos + 1, add, 0.0, false,
      [w, q, shift, num_pos](int64_t i) { return i < num_pos ? (q[i] - shift[i]) * w[i] : 0.0; },
      [Q](int64_t i, double v) { Q[i] = v; });
  const double inv_2delta = 0.5 / delta;
  b.for_each(2 * num_pos + 1, [&r, W, Q, shift, num_pos, inv_2delta](int64_t m) {
    const int64_t lo = r.lo_of[m], hi = r.hi_of[m];
    const double cluster_shift = shift[lo < num_pos ? lo : num_pos - 1];
    const K left = r.thresholds[m > 0 ? m - 1 : 0];
    r.pieces[m] =
        interval_gradient(lo, hi, cluster_shift, left, r.thresholds[m], W, Q, inv_2delta, 1.0);
  });
}

}  // namespace gpu
}  // namespace aploss

#endif  // __CUDACC__ || APLOSS_SIMT
