// Builds ../aploss/grouped_intervals.h's index over the sorted positives of every group
// on the CPU: each group's thresholds merged in its block, its bucket records and frame,
// and each interval's window, segment and cluster shift.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "../aploss/grouped_intervals.h"

namespace aploss {
namespace cpu {

template <typename K>
class OwnedGroupedIndex {
 public:
  // q, cluster_shift: the P positives sorted by (group, score); offsets: U + 1, group u's
  // positives are [offsets[u], offsets[u + 1]). Keeps copies of the three, so that it
  // stays valid after the caller's are freed.
  OwnedGroupedIndex(const double* q, const double* cluster_shift, int64_t num_pos,
                    const int64_t* offsets, int64_t num_groups, double delta);

  const GroupedIntervalIndex<K>& get() const { return index_; }
  // Interval numbers are below intervals().
  int64_t intervals() const { return static_cast<int64_t>(lo_.size()); }
  int64_t lo(int64_t m) const { return lo_[m]; }
  int64_t hi(int64_t m) const { return hi_[m]; }
  int64_t begin(int64_t m) const { return begin_[m]; }  // its segment's first positive
  const double* shifts() const { return shift_.data(); }
  // The key at which interval m starts (its left end): the threshold before it.
  K left(int64_t m) const { return thresholds_[m > 0 ? m - 1 : 0]; }
  K right(int64_t m) const { return thresholds_[m]; }
  // Records in all (the AVX2 lanes index them in int32).
  int64_t records() const { return static_cast<int64_t>(records_.size()); }
  // Each group's cluster shift (code num_groups: none) when every group is one cluster
  // (the usual case: pass 1 need not look shifts up by interval); else null.
  const double* group_shifts() const { return one_cluster_ ? group_shift_.data() : nullptr; }

  bool indexes(const double* q, const double* cluster_shift, int64_t num_pos,
               const int64_t* offsets, int64_t num_groups, double delta) const;

 private:
  std::vector<double> q_, cluster_shift_;
  std::vector<int64_t> offsets_;
  double delta_;
  std::vector<K> thresholds_;
  std::vector<BucketRecord<K>> records_;
  std::vector<GroupFrame<K>> frames_;
  std::vector<uint32_t> lo_, hi_, begin_;
  std::vector<double> shift_;
  std::vector<double> group_shift_;
  bool one_cluster_ = true;
  GroupedIntervalIndex<K> index_{};
};

// The index of these positives, segments and delta; the last one built per key type is
// kept and returned again while they are the same, bit for bit (pass 2 indexes what
// pass 1 did).
template <typename K>
std::shared_ptr<const OwnedGroupedIndex<K>> grouped_index(const double* q,
                                                          const double* cluster_shift,
                                                          int64_t num_pos, const int64_t* offsets,
                                                          int64_t num_groups, double delta);

}  // namespace cpu
}  // namespace aploss
