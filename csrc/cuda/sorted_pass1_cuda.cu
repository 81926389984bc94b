// Pass 1 on the GPU (ranking_cuda.cuh): every negative's key counts in the interval of the
// index it falls in (../aploss/intervals.h, interval_of, in the key type: float32 for
// float32, float16 and bfloat16 scores), with its offset from the interval's left end in
// units of 2 delta, in fixed point: (s - U_{m-1}) / (2 delta) (intervals.h,
// offset_in_interval from interval_anchor) is in [0, 1) for an interval whose window is
// not empty (clamped to 1 otherwise: those offsets are never used). The positive stage
// turns the sums into fp(i) (../aploss/window_sums.h).
//
// Integer sums commute: the result is the same bit for bit in every run, whatever the
// order of the atomics. Shared-memory variant (2P+1 intervals fit the block's dynamic
// shared memory, 16 bytes each): per-block counts (32 bits) and offset sums (64 bits plus
// a 32-bit carry word), flushed once per block for the intervals it saw; global variant
// otherwise: atomics straight into the workspace's sums (64-bit count, 128-bit sum).
//
// Reads per entry: its class bits (one word per 32 entries) and, for a negative, its
// score; a non-finite negative score is flagged for the host (first in memory order).
#include <ATen/ATen.h>

#include <algorithm>
#include <climits>

#include "../aploss/dispatch.h"
#include "../aploss/intervals.h"
#include "../aploss/math.h"
#include "interval_sums_cuda.cuh"
#include "ranking_cuda.cuh"

namespace aploss {
namespace gpu {
namespace {

constexpr int kPass1Block = 1024;

template <typename scalar_t, typename K = typename ScoreKey<scalar_t>::type>
__global__ void __launch_bounds__(kPass1Block)
    sorted_pass1_kernel(const scalar_t* __restrict__ scores,
                        const unsigned long long* __restrict__ classes, int64_t n,
                        RankingBuffers<K> r, K inv_delta, int64_t shared_intervals) {
  APLOSS_EXTERN_SHARED(unsigned long long, smem);
  const bool ranked = r.meta[kMetaRanked] != 0;
  const int64_t num_pos = ranked ? r.meta[kMetaCount] : 0;
  const int64_t intervals = 2 * num_pos + 1;
  // Uniform over the block, as the barriers below need.
  const bool in_shared = ranked && intervals <= shared_intervals;
  const BlockIntervalSums sums(smem, intervals, in_shared, r.sums);
  const IntervalIndex<K> ix = ranked ? device_index(r, num_pos) : IntervalIndex<K>{};

  long long bad = LLONG_MAX;
  const int64_t stride = grid_threads();
  for (int64_t i = global_thread_index(); i < n; i += stride) {
    if (((classes[i >> 5] >> (i & 31)) & 1ull) == 0) continue;  // not a negative
    const K key = static_cast<K>(scores[i]);
    if (!(key == key && key - key == K(0))) {
      if (bad == LLONG_MAX) bad = i;
      continue;
    }
    if (!ranked) continue;
    const int64_t m = interval_of(ix, key);
    if (m == 0) continue;  // below every window: adds nothing
    sums.add(m, fixed_offset(
                    offset_in_interval(key, interval_anchor(ix.thresholds[m - 1]), inv_delta)));
  }
  if (bad != LLONG_MAX) atomicMin(r.meta + kMetaBadNegative, bad);
  sums.flush();
}

}  // namespace

void launch_pass1(const at::Tensor& scores, const at::Tensor& classes,
                  const at::Tensor& workspace, double delta) {
  const c10::cuda::CUDAGuard guard(scores.device());
  const int device = kernel_device_index(scores);
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream(device).stream();
  const int64_t n = scores.numel();
  if (n == 0) return;
  APLOSS_DISPATCH_SCORES(scores.scalar_type(), "aploss_sorted_pass1_cuda", [&] {
    using K = typename ScoreKey<scalar_t>::type;
    const RankingBuffers<K> r = ranking_buffers<K>(workspace);
    const auto pass1 = sorted_pass1_kernel<scalar_t>;
    // P is not known here: shared memory for the capacity's intervals, as much as fits.
    const int64_t wanted = (2 * r.capacity + 1) * kSharedIntervalBytes;
    const int64_t allowed =
        static_cast<int64_t>(max_dynamic_smem(reinterpret_cast<const void*>(pass1), device));
    size_t smem = static_cast<size_t>(std::min(wanted, allowed));
    int per_sm = blocks_per_sm(reinterpret_cast<const void*>(pass1), kPass1Block, smem);
    if (per_sm == 0) {  // cannot launch with it: the global variant
      smem = 0;
      per_sm = blocks_per_sm(reinterpret_cast<const void*>(pass1), kPass1Block, 0);
    }
    // Enough entries per block that its flush (one per interval it saw) stays small.
    const int64_t grid = grid_size(device, per_sm, n, int64_t(1) << 15);
    APLOSS_LAUNCH(pass1, static_cast<unsigned>(grid), kPass1Block, smem, stream)(
        scores.const_data_ptr<scalar_t>(),
        reinterpret_cast<const unsigned long long*>(classes.const_data_ptr()), n, r,
        static_cast<K>(1.0 / delta), static_cast<int64_t>(smem) / kSharedIntervalBytes);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

}  // namespace gpu
}  // namespace aploss
