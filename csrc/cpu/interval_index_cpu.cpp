// The interval index of the sorted passes (interval_index_cpu.h).
#include "interval_index_cpu.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <mutex>

namespace aploss {
namespace cpu {

template <typename K>
IntervalTable<K>::IntervalTable(const std::vector<K>& first, const std::vector<K>* second) {
  static const std::vector<K> none;
  const std::vector<K>& other = second != nullptr ? *second : none;
  const int64_t n1 = static_cast<int64_t>(first.size()), n2 = static_cast<int64_t>(other.size());
  // Interval m + 1 starts at thresholds_[m], with as many thresholds of each family at or
  // below it as counts_ say.
  const int families = second != nullptr ? 2 : 1;
  thresholds_.reserve(n1 + n2 + kThresholdPadding);
  for (int f = 0; f < families; ++f) {
    counts_[f].reserve(n1 + n2 + 1);
    counts_[f].push_back(0);
  }
  int64_t i = 0, j = 0;
  while (i < n1 || j < n2) {
    const K next = j == n2 || (i < n1 && first[i] < other[j]) ? first[i] : other[j];
    while (i < n1 && first[i] == next) ++i;
    while (j < n2 && other[j] == next) ++j;
    thresholds_.push_back(next);
    counts_[0].push_back(static_cast<uint32_t>(i));
    if (families == 2) counts_[1].push_back(static_cast<uint32_t>(j));
  }
  const int64_t count = static_cast<int64_t>(thresholds_.size());
  thresholds_.insert(thresholds_.end(), kThresholdPadding, std::numeric_limits<K>::infinity());

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
  index_ = {thresholds_.data(), count, nullptr, buckets, origin, scale};
  // Each bucket's first threshold, #{m : key_bucket(U_m) < b}: the thresholds per bucket
  // counted, then summed (no data-dependent branch).
  std::vector<uint32_t> starts(buckets + 1, 0);
  for (int64_t m = 0; m < count; ++m) ++starts[key_bucket(index_, thresholds_[m]) + 1];
  for (int64_t b = 1; b <= buckets; ++b) starts[b] += starts[b - 1];
  records_.resize(buckets + 1);
  using First = typename KeyBits<K>::unsigned_type;
  at::parallel_for(0, buckets + 1, 8192, [&](int64_t begin, int64_t end) {
    for (int64_t b = begin; b < end; ++b) {
      BucketRecord<K>& r = records_[b];
      r.first = static_cast<First>(starts[b]);
      for (int c = 0; c <= kIntervalCandidates; ++c) r.next[c] = thresholds_[starts[b] + c];
    }
  });
  index_.records = records_.data();
}

template <typename K>
OwnedIntervalIndex<K>::OwnedIntervalIndex(const double* q, const double* cluster_shift,
                                          int64_t num_pos, double delta)
    : q_(q, q + num_pos), cluster_shift_(cluster_shift, cluster_shift + num_pos), delta_(delta) {
  // Every threshold sequence is non-decreasing, since q is.
  std::vector<K> full(num_pos), nonzero(num_pos);
  at::parallel_for(0, num_pos, 2048, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      full[i] = full_threshold<K>(q[i], delta);
      nonzero[i] = nonzero_threshold<K>(q[i], delta);
    }
  });
  windows_ = IntervalTable<K>(full, &nonzero);

  one_cluster_ = cluster_shift[num_pos - 1] == q[0];
  const int64_t intervals = windows_.intervals();
  shift_.resize(intervals);
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
  static std::mutex mutex;
  static std::shared_ptr<const OwnedIntervalIndex<K>> last;
  {
    const std::lock_guard<std::mutex> lock(mutex);
    if (last != nullptr && last->indexes(q, cluster_shift, num_pos, delta)) return last;
  }
  auto built = std::make_shared<const OwnedIntervalIndex<K>>(q, cluster_shift, num_pos, delta);
  const std::lock_guard<std::mutex> lock(mutex);
  last = built;
  return built;
}

template class OwnedIntervalIndex<float>;
template class OwnedIntervalIndex<double>;
template std::shared_ptr<const OwnedIntervalIndex<float>> interval_index<float>(
    const double*, const double*, int64_t, double);
template std::shared_ptr<const OwnedIntervalIndex<double>> interval_index<double>(
    const double*, const double*, int64_t, double);

}  // namespace cpu
}  // namespace aploss
