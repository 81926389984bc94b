// The interval index of the sorted passes (interval_index_cpu.h).
#include "interval_index_cpu.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

#include "last_built.h"

namespace aploss {
namespace cpu {

template <typename K>
IntervalTable<K>::IntervalTable(const K* first, const K* second, int64_t n) {
  // Interval m + 1 starts at thresholds_[m], with counts_[f][m + 1] thresholds of family f
  // at or below it. The families interleave at random, so the merge takes the smaller head
  // without a branch, and a key equal to the last one kept updates that one's counts.
  // (No threshold is -inf: smallest_key_where's keys are finite or +inf.)
  thresholds_.reset(new K[2 * n + kThresholdPadding]);
  counts_[0].reset(new uint32_t[2 * n + 1]);
  counts_[1].reset(new uint32_t[2 * n + 1]);
  counts_[0][0] = counts_[1][0] = 0;
  int64_t i = 0, j = 0, kept = -1;
  K previous = -std::numeric_limits<K>::infinity();
  for (int64_t t = 0; t < 2 * n; ++t) {
    const K a = first[i < n ? i : n - 1], b = second[j < n ? j : n - 1];
    const bool from_first = i < n && (j == n || a <= b);
    const K key = from_first ? a : b;
    i += from_first ? 1 : 0;
    j += from_first ? 0 : 1;
    kept += key != previous ? 1 : 0;
    previous = key;
    thresholds_[kept] = key;
    counts_[0][kept + 1] = static_cast<uint32_t>(i);
    counts_[1][kept + 1] = static_cast<uint32_t>(j);
  }
  const int64_t count = kept + 1;
  std::fill(thresholds_.get() + count, thresholds_.get() + count + kThresholdPadding,
            std::numeric_limits<K>::infinity());

  // Buckets over the finite thresholds; one bucket (every score searched) when they
  // span no range or more than the key type can hold.
  int64_t last = count - 1;
  while (last > 0 && !std::isfinite(static_cast<double>(thresholds_[last]))) --last;
  const K origin = thresholds_[0];
  const K range = thresholds_[last] - origin;
  int64_t buckets =
      std::min(kMaxIntervalBuckets, std::max<int64_t>(1, kBucketsPerThreshold * count));
  K scale = static_cast<K>(buckets) / range;
  if (!(range > K(0)) || !std::isfinite(static_cast<double>(range)) ||
      !std::isfinite(static_cast<double>(scale))) {
    buckets = 1;
    scale = K(0);
  }
  index_ = {thresholds_.get(), count, nullptr, buckets, origin, scale};
  // Each bucket's first threshold, #{m : key_bucket(U_m) < b}: the thresholds per bucket
  // counted, then summed (no data-dependent branch).
  std::vector<uint32_t> starts(buckets + 1, 0);
  for (int64_t m = 0; m < count; ++m) ++starts[key_bucket(index_, thresholds_[m]) + 1];
  for (int64_t b = 1; b <= buckets; ++b) starts[b] += starts[b - 1];
  records_.reset(new BucketRecord<K>[buckets + 1]);
  using First = typename KeyBits<K>::unsigned_type;
  at::parallel_for(0, buckets + 1, 8192, [&](int64_t begin, int64_t end) {
    for (int64_t b = begin; b < end; ++b) {
      BucketRecord<K>& r = records_[b];
      r.first = static_cast<First>(starts[b]);
      for (int c = 0; c <= kIntervalCandidates; ++c) r.next[c] = thresholds_[starts[b] + c];
    }
  });
  index_.records = records_.get();
}

template <typename K>
OwnedIntervalIndex<K>::OwnedIntervalIndex(const double* q, const double* cluster_shift,
                                          int64_t num_pos, double delta)
    : q_(q, q + num_pos), cluster_shift_(cluster_shift, cluster_shift + num_pos), delta_(delta) {
  // Every threshold sequence is non-decreasing, since q is.
  const std::unique_ptr<K[]> full(new K[num_pos]), nonzero(new K[num_pos]);
  at::parallel_for(0, num_pos, 2048, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      full[i] = full_threshold<K>(q[i], delta);
      nonzero[i] = nonzero_threshold<K>(q[i], delta);
    }
  });
  windows_ = IntervalTable<K>(full.get(), nonzero.get(), num_pos);

  one_cluster_ = cluster_shift[num_pos - 1] == q[0];
  const int64_t intervals = windows_.intervals();
  shift_.reset(new double[intervals]);
  at::parallel_for(0, intervals, 8192, [&](int64_t begin, int64_t end) {
    for (int64_t m = begin; m < end; ++m) {
      shift_[m] = cluster_shift[std::min<int64_t>(lo(m), num_pos - 1)];
    }
  });
}

template <typename K>
bool OwnedIntervalIndex<K>::indexes(const double* q, const double* cluster_shift,
                                    int64_t num_pos, double delta) const {
  const size_t bytes = sizeof(double) * num_pos;
  return delta == delta_ && num_pos == static_cast<int64_t>(q_.size()) &&
         std::memcmp(q, q_.data(), bytes) == 0 &&
         std::memcmp(cluster_shift, cluster_shift_.data(), bytes) == 0;
}

template <typename K>
std::shared_ptr<const OwnedIntervalIndex<K>> interval_index(const double* q,
                                                            const double* cluster_shift,
                                                            int64_t num_pos, double delta) {
  return LastBuilt<OwnedIntervalIndex<K>>::get(
      [&](const OwnedIntervalIndex<K>& kept) {
        return kept.indexes(q, cluster_shift, num_pos, delta);
      },
      [&] {
        return std::make_shared<const OwnedIntervalIndex<K>>(q, cluster_shift, num_pos, delta);
      });
}

template class OwnedIntervalIndex<float>;
template class OwnedIntervalIndex<double>;
template std::shared_ptr<const OwnedIntervalIndex<float>> interval_index<float>(
    const double*, const double*, int64_t, double);
template std::shared_ptr<const OwnedIntervalIndex<double>> interval_index<double>(
    const double*, const double*, int64_t, double);

}  // namespace cpu
}  // namespace aploss
