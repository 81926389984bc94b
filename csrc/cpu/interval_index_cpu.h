// Builds ../aploss/intervals.h's IntervalIndex over the sorted positives on the CPU, with
// each interval's window bounds and cluster shift.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "../aploss/intervals.h"

namespace aploss {
namespace cpu {

template <typename K>
class OwnedIntervalIndex {
 public:
  // q: P sorted positive scores, cluster_shift: their cluster shifts (math.h, StepParams).
  // Keeps copies of both, so that it stays valid after the caller's are freed.
  OwnedIntervalIndex(const double* q, const double* cluster_shift, int64_t num_pos, double delta);

  const IntervalIndex<K>& get() const { return index_; }
  int64_t count() const { return index_.count; }
  // Window bounds and cluster shift of interval m in [0, count]; for an empty window
  // (lo = hi) the shift of the nearest positive, which no result depends on.
  int64_t lo(int64_t m) const { return lo_[m]; }
  int64_t hi(int64_t m) const { return hi_[m]; }
  const double* shifts() const { return shift_.data(); }
  // Every shift is q_0 (one cluster: the passes need not look them up).
  bool one_cluster() const { return one_cluster_; }
  double smallest() const { return q_[0]; }
  // Whether this is the index of these positives and delta, bit for bit.
  bool indexes(const double* q, const double* cluster_shift, int64_t num_pos, double delta) const;

 private:
  std::vector<double> q_, cluster_shift_;
  double delta_;
  std::vector<K> thresholds_;
  std::vector<BucketRecord<K>> records_;
  std::vector<uint32_t> lo_, hi_;
  std::vector<double> shift_;
  bool one_cluster_;
  IntervalIndex<K> index_;
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
