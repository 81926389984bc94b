// The grouped interval index (grouped_interval_index_cpu.h).
#include "grouped_interval_index_cpu.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

#include "last_built.h"

namespace aploss {
namespace cpu {

template <typename K>
OwnedGroupedIndex<K>::OwnedGroupedIndex(const double* q, const double* cluster_shift,
                                        int64_t num_pos, const int64_t* offsets,
                                        int64_t num_groups, double delta)
    : q_(q, q + num_pos), cluster_shift_(cluster_shift, cluster_shift + num_pos),
      offsets_(offsets, offsets + num_groups + 1), delta_(delta) {
  // Each group's blocks, from the sizes of the earlier groups' (grouped_intervals.h).
  std::vector<int64_t> threshold_base(num_groups), record_base(num_groups);
  int64_t thresholds = kNoGroupThresholds, records = kNoGroupRecords;
  for (int64_t u = 0; u < num_groups; ++u) {
    const int64_t size = offsets[u + 1] - offsets[u];
    threshold_base[u] = thresholds;
    record_base[u] = records;
    if (size > 0) {
      thresholds += threshold_block(size);
      records += record_block(size);
    }
  }
  const K inf = std::numeric_limits<K>::infinity();
  thresholds_.assign(thresholds, inf);
  records_.resize(records);
  frames_.assign(num_groups + 1, no_group_frame<K>());  // the last: out-of-range codes
  lo_.assign(thresholds, 0);
  hi_.assign(thresholds, 0);
  begin_.assign(thresholds, 0);
  shift_.assign(thresholds, 0.0);
  for (int64_t r = 0; r < kNoGroupRecords; ++r) records_[r] = {{inf, inf, inf}, 0};
  group_shift_.assign(num_groups + 1, 0.0);
  for (int64_t u = 0; u < num_groups; ++u) {
    const int64_t b = offsets[u], e = offsets[u + 1];
    if (e == b) continue;
    group_shift_[u] = q[b];
    one_cluster_ = one_cluster_ && cluster_shift[e - 1] == q[b];
  }

  // Every positive's two thresholds (non-decreasing within a group, since q is).
  std::vector<K> full(num_pos), nonzero(num_pos);
  at::parallel_for(0, num_pos, 2048, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      full[i] = full_threshold<K>(q[i], delta);
      nonzero[i] = nonzero_threshold<K>(q[i], delta);
    }
  });

  using First = typename KeyBits<K>::unsigned_type;
  at::parallel_for(0, num_groups, 64, [&](int64_t group_begin, int64_t group_end) {
    std::vector<uint32_t> starts;
    for (int64_t u = group_begin; u < group_end; ++u) {
      const int64_t b = offsets[u], n = offsets[u + 1] - b;
      if (n == 0) continue;
      const int64_t base = threshold_base[u];
      K* t = thresholds_.data() + base;
      // Merge the two families, equal keys once (as IntervalTable): interval m + 1 of the
      // group starts at t[m], with the counts of each family at or below it.
      int64_t i = 0, j = 0, kept = -1;
      K previous = -inf;
      lo_[base] = hi_[base] = begin_[base] = static_cast<uint32_t>(b);
      for (int64_t k = 0; k < 2 * n; ++k) {
        const K x = full[b + (i < n ? i : n - 1)], y = nonzero[b + (j < n ? j : n - 1)];
        const bool from_full = i < n && (j == n || x <= y);
        const K key = from_full ? x : y;
        i += from_full ? 1 : 0;
        j += from_full ? 0 : 1;
        kept += key != previous ? 1 : 0;
        previous = key;
        t[kept] = key;
        lo_[base + kept + 1] = static_cast<uint32_t>(b + i);
        hi_[base + kept + 1] = static_cast<uint32_t>(b + j);
      }
      const int64_t count = kept + 1;
      for (int64_t m = 0; m < threshold_block(n); ++m) {
        if (m > count) lo_[base + m] = hi_[base + m] = static_cast<uint32_t>(b);
        begin_[base + m] = static_cast<uint32_t>(b);
        shift_[base + m] = cluster_shift[std::min<int64_t>(lo_[base + m], b + n - 1)];
      }

      // Buckets over the group's finite thresholds (one when they span no range).
      int64_t last = count - 1;
      while (last > 0 && !std::isfinite(static_cast<double>(t[last]))) --last;
      const K origin = t[0], range = t[last] - origin;
      int64_t buckets = record_block(n) - 1;
      buckets = std::min<int64_t>(buckets, std::max<int64_t>(1, kBucketsPerThreshold * count));
      K scale = static_cast<K>(buckets) / range;
      if (!(range > K(0)) || !std::isfinite(static_cast<double>(range)) ||
          !std::isfinite(static_cast<double>(scale))) {
        buckets = 1;
        scale = K(0);
      }
      const GroupFrame<K> frame{origin, scale, static_cast<int32_t>(buckets),
                                static_cast<uint32_t>(record_base[u])};
      frames_[u] = frame;
      const IntervalIndex<K> local{t, count, nullptr, buckets, origin, scale};
      starts.assign(buckets + 1, 0);
      for (int64_t m = 0; m < count; ++m) ++starts[key_bucket(local, t[m]) + 1];
      for (int64_t k = 1; k <= buckets; ++k) starts[k] += starts[k - 1];
      BucketRecord<K>* r = records_.data() + record_base[u];
      for (int64_t k = 0; k <= buckets; ++k) {
        r[k].first = static_cast<First>(base + starts[k]);
        for (int c = 0; c <= kIntervalCandidates; ++c) r[k].next[c] = t[starts[k] + c];
      }
    }
  });
  index_ = {thresholds_.data(), records_.data(), frames_.data(), num_groups};
}

template <typename K>
bool OwnedGroupedIndex<K>::indexes(const double* q, const double* cluster_shift,
                                   int64_t num_pos, const int64_t* offsets, int64_t num_groups,
                                   double delta) const {
  const size_t bytes = sizeof(double) * num_pos;
  return delta == delta_ && num_pos == static_cast<int64_t>(q_.size()) &&
         num_groups + 1 == static_cast<int64_t>(offsets_.size()) &&
         std::memcmp(q, q_.data(), bytes) == 0 &&
         std::memcmp(cluster_shift, cluster_shift_.data(), bytes) == 0 &&
         std::memcmp(offsets, offsets_.data(), sizeof(int64_t) * (num_groups + 1)) == 0;
}

template <typename K>
std::shared_ptr<const OwnedGroupedIndex<K>> grouped_index(const double* q,
                                                          const double* cluster_shift,
                                                          int64_t num_pos, const int64_t* offsets,
                                                          int64_t num_groups, double delta) {
  return LastBuilt<OwnedGroupedIndex<K>>::get(
      [&](const OwnedGroupedIndex<K>& kept) {
        return kept.indexes(q, cluster_shift, num_pos, offsets, num_groups, delta);
      },
      [&] {
        return std::make_shared<const OwnedGroupedIndex<K>>(q, cluster_shift, num_pos, offsets,
                                                            num_groups, delta);
      });
}

template class OwnedGroupedIndex<float>;
template class OwnedGroupedIndex<double>;
template std::shared_ptr<const OwnedGroupedIndex<float>> grouped_index<float>(
    const double*, const double*, int64_t, const int64_t*, int64_t, double);
template std::shared_ptr<const OwnedGroupedIndex<double>> grouped_index<double>(
    const double*, const double*, int64_t, const int64_t*, int64_t, double);

}  // namespace cpu
}  // namespace aploss
