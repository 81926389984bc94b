// The grouped interval index of ../aploss/grouped_intervals.h on the GPU, built on the
// device from the positives sorted by (group, score) and the groups' offsets, without a
// host sync. Every size is known from P and U alone: as for one ranking
// (interval_index_cuda.cuh) each group keeps its 2 P_u thresholds with their ties and
// 2 buckets per threshold, and the tables are sized for the largest layout (every group
// with positives starts a block): 3 + 2P + 3 min(U, P) intervals, 2 + 4P + min(U, P)
// records. The device writes how many it used.
//
// Three kernels, each one launch:
//   bases      block 0 scans the groups for their blocks' bases (and writes interval 0
//              and the frames of the groups without positives); every block computes the
//              positives' two thresholds and zeroes what pass 1 adds into
//   merge      each threshold's place in its group's merged block: its index in its
//              family plus the count of the other family's thresholds below it (equal
//              keys: full thresholds first), and the window (lo, hi), segment begin and
//              cluster shift of the interval it starts
//   records    each bucket record from its group's thresholds, each group's frame; for
//              pass 2 also every interval's gradient piece
#pragma once

#include <ATen/core/Tensor.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "../aploss/grouped_intervals.h"
#include "ranking_cuda.cuh"

namespace aploss {
namespace gpu {

// The workspace's first words (int64).
enum GroupedMeta : int {
  kGroupedIntervals = 0,  // intervals (= threshold slots) in use
  kGroupedRecords = 1,    // records in use
  kGroupedNonFinite = 2,  // pass 1 met a non-finite negative
  kGroupedMetaWords = 4,
};

// Sizes of the tables for P positives in U groups.
struct GroupedSizes {
  int64_t num_pos;
  int64_t num_groups;
  int64_t intervals;  // threshold slots: every interval number is below this
  int64_t records;
};

APLOSS_HD GroupedSizes grouped_sizes(int64_t num_pos, int64_t num_groups) {
  const int64_t blocks = num_groups < num_pos ? num_groups : num_pos;
  return {num_pos, num_groups, kNoGroupThresholds + 2 * num_pos + kThresholdPadding * blocks,
          kNoGroupRecords + kBucketsPerThreshold * 2 * num_pos + blocks};
}

// Pointers into one workspace (kernels take it by value).
template <typename K>
struct GroupedBuffers {
  GroupedSizes size;
  long long* meta;
  K* thresholds;              // size.intervals
  BucketRecord<K>* records;   // size.records
  GroupFrame<K>* frames;      // U
  long long* threshold_base;  // U: each group's first threshold (and interval)
  long long* record_base;     // U: each group's first record
  int32_t* lo;                // size.intervals: each interval's window and segment
  int32_t* hi;
  int32_t* begin;
  double* shift;              // size.intervals: the cluster shift at lo
  K* family;                  // 2P: every positive's full, then nonzero threshold
  IntervalSums* sums;         // size.intervals: pass 1 (shares its bytes with pieces)
  IntervalGradient<K>* pieces;  // size.intervals: pass 2

  APLOSS_HD GroupedIntervalIndex<K> index() const {
    return {thresholds, records, frames, size.num_groups};
  }
};

// The positives as the build reads them: P sorted scores and their cluster shifts.
struct GroupedPositives {
  const double* q;
  const double* shift;
  const int64_t* offsets;  // U + 1, on the device
};

// What the build adds for a pass: pass 1 zeroes the sums; pass 2 fills the pieces from the
// state's prefix sums, times grad_output (on the device).
struct GroupedExtras {
  bool pass1_sums = false;
  const double* prefix_w = nullptr;  // pass 2: W and Q (kernels.h, StateRow)
  const double* prefix_q = nullptr;
  const double* grad_output = nullptr;
};

// A workspace for the index of P positives in U groups with keys of K (one allocation).
at::Tensor grouped_workspace(const at::TensorOptions& options, int64_t num_pos,
                             int64_t num_groups, int64_t key_bytes);

template <typename K>
GroupedBuffers<K> grouped_buffers(const at::Tensor& workspace, int64_t num_pos,
                                  int64_t num_groups);

// Launches the three kernels on `stream`.
template <typename K>
void build_grouped_index(const GroupedBuffers<K>& g, const GroupedPositives& pos, double delta,
                         const GroupedExtras& extras, int device, cudaStream_t stream);

}  // namespace gpu
}  // namespace aploss
