// Builds the grouped interval index on the device (grouped_index_cuda.cuh).
#include <ATen/ATen.h>

#include <algorithm>
#include <limits>

#include "block_primitives.cuh"
#include "cuda_common.cuh"
#include "grouped_index_cuda.cuh"

namespace aploss {
namespace gpu {
namespace {

constexpr int kIndexBlock = 256;
constexpr int64_t kAlign = 16;

int64_t aligned(int64_t bytes) { return (bytes + kAlign - 1) / kAlign * kAlign; }

// Byte offsets of the workspace's parts.
struct GroupedLayout {
  int64_t meta, thresholds, records, frames, threshold_base, record_base, lo, hi, begin, shift,
      family, sums, bytes;
};

GroupedLayout grouped_layout(const GroupedSizes& s, int64_t key_bytes) {
  GroupedLayout l;
  int64_t at = 0;
  const auto take = [&](int64_t& field, int64_t bytes) {
    field = at;
    at += aligned(bytes);
  };
  const int64_t t = s.intervals;
  take(l.meta, kGroupedMetaWords * 8);
  take(l.thresholds, t * key_bytes);
  take(l.records, s.records * 4 * key_bytes);
  take(l.frames, s.num_groups * (2 * key_bytes + 8));
  take(l.threshold_base, s.num_groups * 8);
  take(l.record_base, s.num_groups * 8);
  take(l.lo, t * 4);
  take(l.hi, t * 4);
  take(l.begin, t * 4);
  take(l.shift, t * 8);
  take(l.family, 2 * s.num_pos * key_bytes);
  // Pass 1's sums (24 bytes) or pass 2's pieces (4 keys).
  take(l.sums, t * std::max<int64_t>(sizeof(IntervalSums), 4 * key_bytes));
  l.bytes = at;
  return l;
}

// The group of positive i: offsets[u] <= i < offsets[u + 1].
__device__ __forceinline__ int64_t group_of(const int64_t* offsets, int64_t num_groups,
                                            int64_t i) {
  return partition_point(offsets + 1, num_groups, [i](int64_t end) { return end <= i; });
}

template <typename K>
__device__ __forceinline__ K infinity_key() {
  return std::numeric_limits<K>::infinity();
}

template <typename K>
__global__ void __launch_bounds__(kIndexBlock)
    bases_kernel(GroupedBuffers<K> g, GroupedPositives pos, double delta, GroupedExtras extras) {
  APLOSS_SHARED_ARRAY(long long, scratch, kScanScratch);
  const int64_t num_groups = g.size.num_groups;
  const int64_t num_pos = g.size.num_pos;
  const int64_t* const offsets = pos.offsets;
  if (blockIdx.x == 0) {  // uniform over the block: its barriers are reached by all
    const auto size = [offsets](int64_t u) { return offsets[u + 1] - offsets[u]; };
    // A group's blocks: none without positives.
    const auto thresholds_of = [size](int64_t u) {
      return size(u) > 0 ? static_cast<long long>(threshold_block(size(u))) : 0ll;
    };
    const auto records_of = [size](int64_t u) {
      return size(u) > 0 ? static_cast<long long>(record_block(size(u))) : 0ll;
    };
    const auto add = [](long long x, long long y) { return x + y; };
    const long long thresholds = block_scan<long long>(
        num_groups, add, 0ll, false, scratch, thresholds_of,
        [&g](int64_t u, long long v) { g.threshold_base[u] = kNoGroupThresholds + v; });
    const long long records = block_scan<long long>(
        num_groups, add, 0ll, false, scratch, records_of,
        [&g, size](int64_t u, long long v) {
          g.record_base[u] = kNoGroupRecords + v;
          if (size(u) == 0) g.frames[u] = no_group_frame<K>();
        });
    if (threadIdx.x == 0) {
      g.meta[kGroupedIntervals] = kNoGroupThresholds + thresholds;
      g.meta[kGroupedRecords] = kNoGroupRecords + records;
      g.meta[kGroupedNonFinite] = 0;
      const K inf = infinity_key<K>();
      for (int64_t m = 0; m < kNoGroupThresholds; ++m) {
        g.thresholds[m] = inf;
        g.lo[m] = g.hi[m] = g.begin[m] = 0;
        g.shift[m] = 0.0;
      }
      for (int64_t r = 0; r < kNoGroupRecords; ++r) g.records[r] = {{inf, inf, inf}, 0};
    }
  }
  const int64_t stride = grid_threads();
  for (int64_t i = global_thread_index(); i < num_pos; i += stride) {
    g.family[i] = full_threshold<K>(pos.q[i], delta);
    g.family[num_pos + i] = nonzero_threshold<K>(pos.q[i], delta);
  }
  if (extras.pass1_sums) {
    for (int64_t m = global_thread_index(); m < g.size.intervals; m += stride) {
      g.sums[m] = IntervalSums{0, 0, 0};
    }
  }
}

template <typename K>
__device__ __forceinline__ void set_interval(const GroupedBuffers<K>& g, int64_t m, int64_t lo,
                                             int64_t hi, int64_t begin, const double* shift,
                                             int64_t last) {
  g.lo[m] = static_cast<int32_t>(lo);
  g.hi[m] = static_cast<int32_t>(hi);
  g.begin[m] = static_cast<int32_t>(begin);
  g.shift[m] = shift[lo < last ? lo : last];
}

template <typename K>
__global__ void __launch_bounds__(kIndexBlock)
    merge_kernel(GroupedBuffers<K> g, GroupedPositives pos) {
  const int64_t num_pos = g.size.num_pos;
  const int64_t stride = grid_threads();
  for (int64_t j = global_thread_index(); j < 2 * num_pos; j += stride) {
    const bool full = j < num_pos;
    const int64_t i = full ? j : j - num_pos;
    const int64_t u = group_of(pos.offsets, g.size.num_groups, i);
    const int64_t b = pos.offsets[u], e = pos.offsets[u + 1], n = e - b;
    const int64_t base = g.threshold_base[u];
    const K key = g.family[j];
    const K* other = g.family + (full ? num_pos : 0) + b;
    // Equal keys: the full thresholds first (any order of ties gives the same windows).
    const int64_t below = full ? partition_point(other, n, [key](K x) { return x < key; })
                               : partition_point(other, n, [key](K x) { return x <= key; });
    const int64_t k = (i - b) + below;
    g.thresholds[base + k] = key;
    set_interval(g, base + k + 1, full ? i + 1 : b + below, full ? b + below : i + 1, b,
                 pos.shift, e - 1);
    if (full && i == b) {  // the group's first interval and its padding
      set_interval(g, base, b, b, b, pos.shift, e - 1);
      for (int64_t m = 2 * n; m < threshold_block(n); ++m) {
        g.thresholds[base + m] = infinity_key<K>();
        // Empty windows at the segment's end: lo, hi and begin stay monotone over all
        // intervals (pass 1 gathers by them, grouped_cuda.cu).
        if (m > 2 * n) set_interval(g, base + m, e, e, b, pos.shift, e - 1);
      }
    }
  }
}

template <typename K>
__global__ void __launch_bounds__(kIndexBlock)
    records_kernel(GroupedBuffers<K> g, GroupedPositives pos, double delta, GroupedExtras extras) {
  using First = typename KeyBits<K>::unsigned_type;
  const int64_t num_groups = g.size.num_groups;
  const int64_t records = g.meta[kGroupedRecords];
  const int64_t stride = grid_threads();
  for (int64_t r = kNoGroupRecords + global_thread_index(); r < records; r += stride) {
    // The last group whose records start at or before r: it has positives (the blocks of
    // the groups without any are empty).
    const int64_t u =
        partition_point(g.record_base, num_groups, [r](long long at) { return at <= r; }) - 1;
    const int64_t n = pos.offsets[u + 1] - pos.offsets[u];
    const int64_t count = 2 * n;
    const K* const t = g.thresholds + g.threshold_base[u];
    // Buckets over the group's finite thresholds (one when they span no range).
    const int64_t finite = partition_point(t, count, [](K x) { return x < infinity_key<K>(); });
    const K origin = t[0], range = t[finite > 0 ? finite - 1 : 0] - origin;
    int64_t buckets = record_block(n) - 1;
    K scale = static_cast<K>(buckets) / range;
    if (!(range > K(0)) || !(range - range == K(0)) || !(scale - scale == K(0))) {
      buckets = 1;
      scale = K(0);
    }
    const int64_t b = r - g.record_base[u];
    if (b > buckets) continue;  // past the buckets this group uses
    if (b == 0) {
      g.frames[u] = GroupFrame<K>{origin, scale, static_cast<int32_t>(buckets),
                                  static_cast<uint32_t>(g.record_base[u])};
    }
    const IntervalIndex<K> local{t, count, nullptr, buckets, origin, scale};
    const int64_t first =
        partition_point(t, count, [&local, b](K x) { return key_bucket(local, x) < b; });
    BucketRecord<K> record;
    record.first = static_cast<First>(g.threshold_base[u] + first);
    for (int c = 0; c <= kIntervalCandidates; ++c) record.next[c] = t[first + c];
    g.records[r] = record;
  }
  if (extras.prefix_w == nullptr) return;
  const int64_t intervals = g.meta[kGroupedIntervals];
  const double inv_2delta = 0.5 / delta;
  const double scale = *extras.grad_output;
  for (int64_t m = global_thread_index(); m < intervals; m += stride) {
    const K left = g.thresholds[m > 0 ? m - 1 : 0];
    g.pieces[m] = interval_gradient(g.lo[m], g.hi[m], g.shift[m], left, g.thresholds[m],
                                    extras.prefix_w, extras.prefix_q, inv_2delta, scale,
                                    extras.prefix_w[g.begin[m]]);
  }
}

template <typename Kernel>
int64_t index_grid(Kernel kernel, int device, int64_t items) {
  return grid_size(device, blocks_per_sm(reinterpret_cast<const void*>(kernel), kIndexBlock, 0),
                   std::max<int64_t>(items, 1), kIndexBlock);
}

}  // namespace

at::Tensor grouped_workspace(const at::TensorOptions& options, int64_t num_pos,
                             int64_t num_groups, int64_t key_bytes) {
  const GroupedLayout l = grouped_layout(grouped_sizes(num_pos, num_groups), key_bytes);
  return at::empty({l.bytes}, options.dtype(at::kByte));
}

template <typename K>
GroupedBuffers<K> grouped_buffers(const at::Tensor& workspace, int64_t num_pos,
                                  int64_t num_groups) {
  const GroupedSizes s = grouped_sizes(num_pos, num_groups);
  const GroupedLayout l = grouped_layout(s, sizeof(K));
  TORCH_INTERNAL_ASSERT(workspace.numel() == l.bytes, "aploss: grouped workspace size");
  uint8_t* base = workspace.data_ptr<uint8_t>();
  const auto at = [base](int64_t offset) { return static_cast<void*>(base + offset); };
  GroupedBuffers<K> g;
  g.size = s;
  g.meta = static_cast<long long*>(at(l.meta));
  g.thresholds = static_cast<K*>(at(l.thresholds));
  g.records = static_cast<BucketRecord<K>*>(at(l.records));
  g.frames = static_cast<GroupFrame<K>*>(at(l.frames));
  g.threshold_base = static_cast<long long*>(at(l.threshold_base));
  g.record_base = static_cast<long long*>(at(l.record_base));
  g.lo = static_cast<int32_t*>(at(l.lo));
  g.hi = static_cast<int32_t*>(at(l.hi));
  g.begin = static_cast<int32_t*>(at(l.begin));
  g.shift = static_cast<double*>(at(l.shift));
  g.family = static_cast<K*>(at(l.family));
  g.sums = static_cast<IntervalSums*>(at(l.sums));
  g.pieces = static_cast<IntervalGradient<K>*>(at(l.sums));
  return g;
}

template <typename K>
void build_grouped_index(const GroupedBuffers<K>& g, const GroupedPositives& pos, double delta,
                         const GroupedExtras& extras, int device, cudaStream_t stream) {
  static_assert(sizeof(GroupFrame<K>) == 2 * sizeof(K) + 8, "a frame is two keys and two words");
  const GroupedSizes& s = g.size;
  const auto bases = bases_kernel<K>;
  const int64_t zeroed = std::max(s.num_pos, extras.pass1_sums ? s.intervals : int64_t(0));
  APLOSS_LAUNCH(bases, static_cast<unsigned>(index_grid(bases, device, zeroed)), kIndexBlock, 0,
                stream)(g, pos, delta, extras);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  const auto merge = merge_kernel<K>;
  APLOSS_LAUNCH(merge, static_cast<unsigned>(index_grid(merge, device, 2 * s.num_pos)),
                kIndexBlock, 0, stream)(g, pos);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  const auto fill = records_kernel<K>;
  const int64_t filled = std::max(s.records, extras.prefix_w != nullptr ? s.intervals : 0);
  APLOSS_LAUNCH(fill, static_cast<unsigned>(index_grid(fill, device, filled)), kIndexBlock, 0,
                stream)(g, pos, delta, extras);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

template GroupedBuffers<float> grouped_buffers<float>(const at::Tensor&, int64_t, int64_t);
template GroupedBuffers<double> grouped_buffers<double>(const at::Tensor&, int64_t, int64_t);
template void build_grouped_index<float>(const GroupedBuffers<float>&, const GroupedPositives&,
                                         double, const GroupedExtras&, int, cudaStream_t);
template void build_grouped_index<double>(const GroupedBuffers<double>&, const GroupedPositives&,
                                          double, const GroupedExtras&, int, cudaStream_t);

}  // namespace gpu
}  // namespace aploss
