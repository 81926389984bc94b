// Builds ../aploss/intervals.h's IntervalIndex over the sorted positives on the CPU: the
// intervals of the window thresholds, with each one's window bounds and cluster shift.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "../aploss/intervals.h"

namespace aploss {
namespace cpu {

// The intervals between the merged thresholds of two sorted families of n keys each
// (equal keys once), with how many thresholds of each family lie at or below the keys of
// each interval, and the bucket records over them. (Its arrays, megabytes at large P and
// built anew for every ranking, are allocated without value-initialisation: every
// element read is written first.)
template <typename K>
class IntervalTable {
 public:
  IntervalTable() = default;
  IntervalTable(const K* first, const K* second, int64_t n);
  IntervalTable(IntervalTable&&) = default;
  IntervalTable& operator=(IntervalTable&&) = default;

  const IntervalIndex<K>& get() const { return index_; }
  int64_t intervals() const { return index_.count + 1; }
  // Thresholds of family 0 (`first`) or 1 (`second`) at or below interval m.
  int64_t at_or_below(int family, int64_t m) const { return counts_[family][m]; }

 private:
  std::unique_ptr<K[]> thresholds_;
  std::unique_ptr<BucketRecord<K>[]> records_;
  std::unique_ptr<uint32_t[]> counts_[2];
  IntervalIndex<K> index_{};
};

template <typename K>
class OwnedIntervalIndex {
 public:
  // q: P sorted positive scores, cluster_shift: their cluster shifts (math.h, StepParams).
  // Keeps copies of both, so that it stays valid after the caller's are freed.
  OwnedIntervalIndex(const double* q, const double* cluster_shift, int64_t num_pos, double delta);

  // The windows: interval m in [0, count] has bounds lo(m), hi(m) and cluster shift
  // shifts()[m] (for an empty window the shift of the nearest positive, which no result
  // depends on).
  const IntervalIndex<K>& get() const { return windows_.get(); }
  int64_t count() const { return windows_.get().count; }
  int64_t lo(int64_t m) const { return windows_.at_or_below(0, m); }
  int64_t hi(int64_t m) const { return windows_.at_or_below(1, m); }
  const double* shifts() const { return shift_.get(); }
  // Every shift is q_0 (one cluster: the passes need not look them up).
  bool one_cluster() const { return one_cluster_; }

  // Whether this is the index of these positives and delta, bit for bit.
  bool indexes(const double* q, const double* cluster_shift, int64_t num_pos, double delta) const;

 private:
  std::vector<double> q_, cluster_shift_;
  double delta_;
  IntervalTable<K> windows_;
  std::unique_ptr<double[]> shift_;
  bool one_cluster_;
};

// The interval index of these positives and delta. A ranking's pass 1, its positive stage
// and its pass 2 index the same positives (the positive stage with float64 keys), so the
// last index built per key type is kept and returned again while its inputs are the
// same, bit for bit.
template <typename K>
std::shared_ptr<const OwnedIntervalIndex<K>> interval_index(const double* q,
                                                            const double* cluster_shift,
                                                            int64_t num_pos, double delta);

}  // namespace cpu
}  // namespace aploss
