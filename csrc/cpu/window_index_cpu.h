// Builds math.h's WindowIndex over the sorted positives on the CPU (grouped rankings).
#pragma once

#include <ATen/Parallel.h>

#include <algorithm>
#include <vector>

#include "../aploss/math.h"
#include "../aploss/segments.h"

namespace aploss {
namespace cpu {

inline WindowIndex make_window_index(const double* q, int64_t n, const int32_t* table,
                                     int64_t buckets, double origin, double width) {
  return {q, n, table, buckets, origin, 1.0 / width};
}

// The window index of a single ranking: 64 buckets per positive, at least 64, at most
// 2^20 (the index of one group's segment, below, as a whole q would be indexed).
class OwnedWindowIndex {
 public:
  OwnedWindowIndex(const double* q, int64_t num_pos, double delta)
      : table_(2 * (bucket_count(num_pos) + 1)) {
    const int64_t buckets = bucket_count(num_pos);
    const double origin = bucket_origin(q, delta);
    const double width = bucket_width(q, num_pos, delta, buckets);
    at::parallel_for(0, buckets + 1, 4096, [&](int64_t begin, int64_t end) {
      fill_window_table(q, num_pos, origin, width, delta, begin, end, table_.data());
    });
    index_ = make_window_index(q, num_pos, table_.data(), buckets, origin, width);
  }
  const WindowIndex& get() const { return index_; }

 private:
  static int64_t bucket_count(int64_t num_pos) {
    return std::min<int64_t>(int64_t(1) << 20, std::max<int64_t>(64, 64 * num_pos));
  }
  std::vector<int32_t> table_;
  WindowIndex index_;
};

// Everything the search of an entry of one group needs, precomputed per group so that
// entries whose groups alternate (per-class groups) pay one table lookup.
struct SegmentSearch {
  Segment seg;          // empty: the group has no positive
  StepParams params;    // of the segment (segments.h, segment_params)
  WindowIndex index;    // over the segment's positives (local positions)
};

// A segment this small is searched in q itself, its step parameters computed from q and
// the shifts: one or two cache lines instead of its search record and its bucket table
// (many small groups, e.g. one query each). It gets no table.
constexpr int64_t kSmallSegment = 8;

inline bool searched_in_q(Segment seg) { return seg.size() <= kSmallSegment; }

// One window index per group's segment of the positives (grouped rankings,
// segments.h): each segment larger than kSmallSegment is indexed exactly as a whole
// ungrouped q would be, with buckets in proportion to its size; the tables together
// hold at most ~2^21 buckets.
class OwnedSegmentedWindowIndex {
 public:
  OwnedSegmentedWindowIndex(const double* q, const double* cluster_shift, const int64_t* offsets,
                            int64_t num_groups, double delta)
      : searches_(num_groups), first_bucket_(num_groups + 1, 0) {
    const int64_t num_pos = offsets[num_groups] - offsets[0];
    constexpr int64_t kMaxBuckets = int64_t(1) << 21;
    const double per_positive =
        num_pos > 0 ? std::min(64.0, static_cast<double>(kMaxBuckets) / num_pos) : 64.0;
    for (int64_t u = 0; u < num_groups; ++u) {
      const int64_t size = offsets[u + 1] - offsets[u];
      const bool indexed = size > kSmallSegment;
      const int64_t buckets =
          indexed ? std::max<int64_t>(1, static_cast<int64_t>(per_positive * size)) : 0;
      // A segment's table has buckets + 1 edges; empty and small segments have none.
      first_bucket_[u + 1] = first_bucket_[u] + (indexed ? buckets + 1 : 0);
    }
    table_.resize(2 * first_bucket_[num_groups]);
    at::parallel_for(0, num_groups, 16, [&](int64_t begin, int64_t end) {
      for (int64_t u = begin; u < end; ++u) {
        SegmentSearch& search = searches_[u];
        search.seg = segment_of(offsets, num_groups, u);
        if (search.seg.empty()) continue;
        search.params = segment_params(delta, q, cluster_shift, search.seg);
        if (searched_in_q(search.seg)) continue;
        const int64_t size = search.seg.size();
        const double* sq = q + search.seg.begin;
        const int64_t buckets = first_bucket_[u + 1] - first_bucket_[u] - 1;
        const double width = bucket_width(sq, size, delta, buckets);
        int32_t* table = table_.data() + 2 * first_bucket_[u];
        fill_window_table(sq, size, bucket_origin(sq, delta), width, delta, 0, buckets + 1, table);
        search.index =
            make_window_index(sq, size, table, buckets, bucket_origin(sq, delta), width);
      }
    });
  }

  // The search of group `code`; a code without a segment reads as an empty one.
  const SegmentSearch& group(int64_t code) const {
    return code >= 0 && code < static_cast<int64_t>(searches_.size()) ? searches_[code] : none_;
  }

 private:
  std::vector<SegmentSearch> searches_;
  std::vector<int64_t> first_bucket_;
  std::vector<int32_t> table_;
  SegmentSearch none_{};
};

}  // namespace cpu
}  // namespace aploss
