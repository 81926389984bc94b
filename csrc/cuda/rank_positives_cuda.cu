// The positives of one ranking sorted, and the interval index over them
// (../aploss/intervals.h), in one block (ranking_cuda.cuh). O(P log^2 P) work on P-sized
// data, no host sync:
//
//   1. sort the gathered (key, position) pairs, ties by position: bitonic, in shared
//      memory (or read in the order the host sorted them, for P beyond shared memory);
//   2. each positive's cluster shift (math.h, kClusterGap): a running maximum of the
//      index where its cluster starts;
//   3. each positive's two thresholds, in the key type (intervals.h), merged into the 2P
//      sorted thresholds by one search each in the other family (both are sorted, as q
//      is); each threshold writes the window (lo, hi) of the interval that starts at it;
//   4. the buckets' frame (origin and scale) and their records, each bucket's first
//      threshold by a search;
//   5. the interval sums of pass 1 zeroed.
#include <ATen/ATen.h>

#include <algorithm>
#include <climits>
#include <limits>
#include <map>
#include <mutex>

#include "../aploss/intervals.h"
#include "../aploss/math.h"
#include "block_primitives.cuh"
#include "ranking_cuda.cuh"

namespace aploss {
namespace gpu {
namespace {

constexpr int kRankBlock = 1024;

// Bytes of shared memory per sorted positive: its 64-bit key and its 32-bit slot.
constexpr int64_t kSortBytes = 12;

template <typename K>
__device__ __forceinline__ bool finite_key(K k) {
  return k == k && k - k == K(0);
}

template <typename K>
__global__ void __launch_bounds__(kRankBlock)
    rank_positives_kernel(RankingBuffers<K> r, double delta, const long long* __restrict__ order,
                          bool position_in_key, bool memory_ranks,
                          const long long* __restrict__ sorted_positions) {
  APLOSS_EXTERN_SHARED(unsigned long long, sort_keys);  // shared sort: keys, then slots
  APLOSS_SHARED_ARRAY(long long, scan_scratch, kScanScratch);
  const int64_t num_pos = r.meta[kMetaCount];
  // Uniform over the block: no barrier has been reached yet.
  if (r.meta[kMetaBadLabel] != LLONG_MAX || r.meta[kMetaBadPositive] != LLONG_MAX ||
      num_pos == 0 || num_pos > r.capacity) {
    return;
  }

  // 1. The slot of the i-th positive in (key, position) order.
  int64_t padded = 0;  // a power of two, as bitonic sorts need
  if (order == nullptr) {
    padded = 2;
    while (padded < num_pos) padded *= 2;
  }
  unsigned int* const sort_slots = reinterpret_cast<unsigned int*>(sort_keys + padded);
  if (order == nullptr) {
    for (int64_t i = threadIdx.x; i < padded; i += blockDim.x) {
      const bool real = i < num_pos;
      sort_keys[i] = real ? r.raw_key[i] : ~0ull;  // padding sorts last
      sort_slots[i] = real ? static_cast<unsigned int>(i) : ~0u;
    }
    __syncthreads();
    const long long* raw_position = r.raw_position;
    block_bitonic_sort(sort_keys, sort_slots, padded,
                       [raw_position, position_in_key](unsigned long long a, unsigned int x,
                                                       unsigned long long b, unsigned int y) {
                         if (a != b) return a < b;
                         // Equal float keys with the position inside differ; padding
                         // (x == y == ~0) is never before itself.
                         if (position_in_key || x == y) return false;
                         return raw_position[x] < raw_position[y];
                       });
  }
  for (int64_t i = threadIdx.x; i < num_pos; i += blockDim.x) {
    const int64_t slot = order != nullptr ? order[i] : sort_slots[i];
    const unsigned long long key = order != nullptr ? r.raw_key[slot] : sort_keys[i];
    r.q[i] = static_cast<double>(key_of_sort_bits<K>(key));
    r.position[i] = r.raw_position[slot];
    r.value[i] = r.raw_value[slot];
  }
  __syncthreads();
  if (memory_ranks) {
    // Each positive's rank by position (aLRP's regression losses are in that order): a
    // search in the sorted positions, which the host gave or the block sorts here.
    const long long* by_position = sorted_positions;
    if (by_position == nullptr) {
      for (int64_t i = threadIdx.x; i < padded; i += blockDim.x) {
        sort_keys[i] = i < num_pos ? static_cast<unsigned long long>(r.raw_position[i]) : ~0ull;
        sort_slots[i] = 0;
      }
      __syncthreads();
      block_bitonic_sort(sort_keys, sort_slots, padded,
                         [](unsigned long long a, unsigned int, unsigned long long b,
                            unsigned int) { return a < b; });
      by_position = reinterpret_cast<const long long*>(sort_keys);
    }
    for (int64_t i = threadIdx.x; i < num_pos; i += blockDim.x) {
      const long long p = r.position[i];
      r.memory_rank[i] = static_cast<int32_t>(
          partition_point(by_position, num_pos, [p](long long v) { return v < p; }));
    }
    __syncthreads();
  }

  // 2. Cluster shifts: the first score of each positive's cluster.
  const double* const q = r.q;
  const double gap = kClusterGap * delta;
  block_scan<long long>(
      num_pos, Max<long long>(), 0LL, /*inclusive=*/true, scan_scratch,
      [q, gap](int64_t i) -> long long { return i == 0 || q[i] - q[i - 1] >= gap ? i : 0; },
      [&r, q](int64_t i, long long start) { r.shift[i] = q[start]; });

  // 3. Thresholds (kept in the scratch rows), merged; the window of each interval.
  K* const full = reinterpret_cast<K*>(r.scratch);
  K* const nonzero = full + num_pos;
  for (int64_t i = threadIdx.x; i < num_pos; i += blockDim.x) {
    full[i] = full_threshold<K>(q[i], delta);
    nonzero[i] = nonzero_threshold<K>(q[i], delta);
  }
  __syncthreads();
  const int64_t count = 2 * num_pos;
  for (int64_t i = threadIdx.x; i < num_pos; i += blockDim.x) {
    // Equal thresholds: the full-step one first (an empty interval lies between them).
    const K f = full[i], z = nonzero[i];
    const int64_t at_full = i + partition_point(nonzero, num_pos, [f](K v) { return v < f; });
    const int64_t at_nonzero = i + partition_point(full, num_pos, [z](K v) { return v <= z; });
    r.thresholds[at_full] = f;
    r.thresholds[at_nonzero] = z;
    r.lo_of[at_full + 1] = static_cast<int32_t>(i + 1);
    r.hi_of[at_full + 1] = static_cast<int32_t>(at_full - i);
    r.lo_of[at_nonzero + 1] = static_cast<int32_t>(at_nonzero - i);
    r.hi_of[at_nonzero + 1] = static_cast<int32_t>(i + 1);
  }
  if (threadIdx.x < kThresholdPadding) {
    r.thresholds[count + threadIdx.x] = std::numeric_limits<K>::infinity();
  }
  if (threadIdx.x == 0) r.lo_of[0] = r.hi_of[0] = 0;
  __syncthreads();

  // 4. The frame: buckets over the finite thresholds; scale 0 (one bucket: every key
  // searched) when they span no range or more than the key type holds.
  const int64_t buckets = index_buckets(num_pos);
  if (threadIdx.x == 0) {
    const K inf = std::numeric_limits<K>::infinity();
    const int64_t finite =
        partition_point(r.thresholds, count, [inf](K u) { return u < inf; });
    const K origin = r.thresholds[0];
    const K top = finite > 0 ? r.thresholds[finite - 1] : -inf;
    const K range = top - origin;
    const K scale = static_cast<K>(buckets) / range;
    const bool usable = range > K(0) && finite_key(range) && finite_key(scale);
    r.frame[0] = origin;
    r.frame[1] = usable ? scale : K(0);
  }
  __syncthreads();
  const IntervalIndex<K> ix = device_index(r, num_pos);
  using First = typename KeyBits<K>::unsigned_type;
  for (int64_t b = threadIdx.x; b <= buckets; b += blockDim.x) {
    // The first threshold whose bucket is not below b.
    const int64_t first =
        partition_point(ix.thresholds, count, [&ix, b](K u) { return key_bucket(ix, u) < b; });
    BucketRecord<K> record;
    record.first = static_cast<First>(first);
    for (int c = 0; c <= kIntervalCandidates; ++c) record.next[c] = ix.thresholds[first + c];
    r.records[b] = record;
  }

  // 5. Pass 1's sums start at zero.
  for (int64_t m = threadIdx.x; m <= count; m += blockDim.x) r.sums[m] = IntervalSums{0, 0, 0};
  if (threadIdx.x == 0) r.meta[kMetaRanked] = 1;
}

// The most positives the shared-memory sort holds on `device`: a power of two.
int64_t shared_sort_capacity(int device) {
  const size_t bytes =
      max_dynamic_smem(reinterpret_cast<const void*>(rank_positives_kernel<float>), device);
  const size_t bytes_double =
      max_dynamic_smem(reinterpret_cast<const void*>(rank_positives_kernel<double>), device);
  const int64_t fits = static_cast<int64_t>(std::min(bytes, bytes_double)) / kSortBytes;
  int64_t capacity = 1;
  while (capacity * 2 <= fits) capacity *= 2;
  return fits >= 2 ? capacity : 0;
}

}  // namespace

int64_t ranking_sort_capacity(int device) {
  static std::mutex mutex;
  static std::map<int, int64_t> cache;
  std::lock_guard<std::mutex> lock(mutex);
  auto it = cache.find(device);
  if (it == cache.end()) it = cache.emplace(device, shared_sort_capacity(device)).first;
  return it->second;
}

void launch_rank_positives(const at::Tensor& workspace, at::ScalarType key_dtype, double delta,
                           const at::Tensor& order, bool position_in_key, bool memory_ranks,
                           const at::Tensor& sorted_positions) {
  const c10::cuda::CUDAGuard guard(workspace.device());
  const int device = kernel_device_index(workspace);
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream(device).stream();
  AT_DISPATCH_FLOATING_TYPES(key_dtype, "aploss_rank_positives", [&] {
    using K = scalar_t;
    const RankingBuffers<K> r = ranking_buffers<K>(workspace);
    const auto rank_positives = rank_positives_kernel<K>;
    size_t smem = 0;
    if (!order.defined()) {
      int64_t padded = 2;
      while (padded < r.capacity) padded *= 2;
      smem = static_cast<size_t>(padded * kSortBytes);
      TORCH_INTERNAL_ASSERT(
          smem <= max_dynamic_smem(reinterpret_cast<const void*>(rank_positives), device),
                            "aploss rank_positives: a capacity of ", r.capacity,
                            " positives does not fit the shared-memory sort");
    }
    const auto pointer = [](const at::Tensor& t) {
      return t.defined() ? reinterpret_cast<const long long*>(t.const_data_ptr<int64_t>())
                         : nullptr;
    };
    APLOSS_LAUNCH(rank_positives, 1, kRankBlock, smem, stream)(
        r, delta, pointer(order), position_in_key, memory_ranks, pointer(sorted_positions));
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

}  // namespace gpu
}  // namespace aploss
