// Grouped rankings on the interval index (intervals.h): one table of thresholds and
// bucket records serves every group. Shared unchanged by the CPU and CUDA kernels.
//
// Each group with positives owns a block of the threshold array (its merged thresholds,
// then +inf padding) and a block of the bucket records; its *frame* says where its
// records start and how its keys map to buckets. A record's `first` is a global
// threshold index, so intervals.h's direct_interval and interval_of, run on a group's
// frame (frame_index), return a global interval number: group u's intervals are
// threshold_base(u) + m for its local m in [0, count_u]. Every interval has a window
// (lo, hi) as global indices into the sorted positives, within its group's segment
// [begin, end), and a left end; interval 0 belongs to no group and is the one of every
// entry whose group has no positive: it counts nothing and its gradient is 0. Neither does
// a group's first interval (keys below its first threshold: an empty window), so pass 1
// skips such keys on both devices, and the CPU's lanes look them up in interval 0
// (../cpu/interval_lanes_cpu.h).
//
// Layout, for the groups with positives in code order (u with P_u > 0):
//
//   thresholds  [0, 3) +inf (interval 0's record reads them), then per group a block of
//               2 P_u + kThresholdPadding keys: its merged thresholds, then +inf
//   records     [0, 2) interval 0's (its one bucket and the end record), then per group a
//               block of kBucketsPerThreshold * 2 P_u + 1 records (at most
//               kMaxIntervalBuckets + 1): its buckets and its end record
//
// so both bases are sums over earlier groups of sizes known from P_u alone: any device
// lays them out with one scan over the groups, and an interval number fits the tables
// sized by the thresholds' length.
#pragma once

#include <cstdint>
#include <limits>

#include "intervals.h"

namespace aploss {

// Where group u's keys are looked up. origin, scale and buckets as IntervalIndex's; a
// group without positives has interval 0's frame (one bucket, scale 0).
template <typename K>
struct GroupFrame {
  K origin;
  K scale;
  int32_t buckets;
  uint32_t record_base;  // its first record
};

template <typename K>
struct GroupedIntervalIndex {
  const K* thresholds;             // every group's blocks (above)
  const BucketRecord<K>* records;  // every group's blocks
  const GroupFrame<K>* frames;     // one per dense group code
  int64_t num_groups;
};

// Threshold and record blocks of a group with num_pos positives, and of interval 0.
APLOSS_HD int64_t threshold_block(int64_t num_pos) { return 2 * num_pos + kThresholdPadding; }
APLOSS_HD int64_t record_block(int64_t num_pos) {
  const int64_t buckets = kBucketsPerThreshold * 2 * num_pos;
  return (buckets < kMaxIntervalBuckets ? buckets : kMaxIntervalBuckets) + 1;
}
constexpr int64_t kNoGroupThresholds = kThresholdPadding;
constexpr int64_t kNoGroupRecords = 2;

// The frame of interval 0: every finite key lands in its one bucket, whose record (all
// +inf, first 0) settles it as interval 0.
template <typename K>
APLOSS_HD GroupFrame<K> no_group_frame() {
  return {K(0), K(0), 1, 0};
}

// Group `code`'s keys as an IntervalIndex over the shared tables (count is not used by
// the lookups). A code out of range (never produced) reads as interval 0's frame.
template <typename K>
APLOSS_HD IntervalIndex<K> frame_index(const GroupedIntervalIndex<K>& g, int64_t code) {
  const GroupFrame<K> f =
      code >= 0 && code < g.num_groups ? g.frames[code] : no_group_frame<K>();
  return {g.thresholds, 0, g.records + f.record_base, f.buckets, f.origin, f.scale};
}

// The interval of a finite key of group `code`.
template <typename K>
APLOSS_HD int64_t grouped_interval_of(const GroupedIntervalIndex<K>& g, int64_t code, K s) {
  return interval_of(frame_index(g, code), s);
}

// Pass 1: `count` negatives of one interval with window [lo, hi) in the segment that
// starts at `begin` (global indices), their offsets a summing to sum_a, added to the
// difference arrays (math.h, accumulate_negatives, within the segment: "+count at the
// segment's first index" for the negatives above the window's full part).
template <typename Add>
APLOSS_HD void accumulate_interval(int64_t begin, int64_t lo, int64_t hi, double count,
                                   double sum_a, Add add) {
  const double full = accumulate_negatives(
      lo - begin, hi - begin, count, sum_a,
      [&](int array, int64_t at, double value) { add(array, begin + at, value); });
  if (full != 0.0) add(kD1, begin, full);
}

}  // namespace aploss
