// Builds math.h's WindowIndex over the sorted positives on the CPU.
#pragma once

#include <ATen/Parallel.h>

#include <algorithm>
#include <cstring>
#include <memory>
#include <vector>

#include "../aploss/math.h"
#include "../aploss/segments.h"

namespace aploss {
namespace cpu {

inline WindowIndex make_window_index(const double* q, int64_t n, const int32_t* table,
                                     int64_t buckets, double origin, double width,
                                     const int32_t* window_ids, const int32_t* window_lo) {
  return {q, n, table, buckets, origin, 1.0 / width, window_ids, window_lo,
          bucket_margin(origin, 1.0 / width, buckets)};
}

// The window index of a single ranking, with its window ids (math.h, WindowIndex) and
// each window's lower bound, so that a pass can work per window: lo of window id
// (hi = id - lo); -1 for an id that is no edge's window.
class OwnedWindowIndex {
 public:
  // Keeps its own copy of q, so that it stays valid after the caller's q is freed.
  OwnedWindowIndex(const double* positives, int64_t num_pos, double delta)
      : q_(positives, positives + num_pos), delta_(delta),
        table_(2 * (bucket_count_for(num_pos) + 1)) {
    const double* q = q_.data();
    const int64_t buckets = bucket_count_for(num_pos);
    const double origin = bucket_origin(q, delta);
    const double width = bucket_width(q, num_pos, delta, buckets);
    at::parallel_for(0, buckets + 1, 4096, [&](int64_t begin, int64_t end) {
      fill_window_table(q, num_pos, origin, width, delta, begin, end, table_.data());
    });
    if (window_ids_fit(num_pos)) {
      window_ids_.resize(buckets);
      window_lo_.assign(2 * num_pos + 1, -1);
      const int32_t* t = table_.data();
      at::parallel_for(0, buckets + 1, 4096, [&](int64_t begin, int64_t end) {
        for (int64_t k = begin; k < end; ++k) {
          if (k < buckets) window_ids_[k] = bucket_window_id(t, k);
          // The window of every edge; one writer per window: its first edge.
          if (k == 0 || t[2 * k - 2] != t[2 * k] || t[2 * k - 1] != t[2 * k + 1]) {
            window_lo_[t[2 * k] + t[2 * k + 1]] = t[2 * k];
          }
        }
      });
    }
    index_ = make_window_index(q, num_pos, table_.data(), buckets, origin, width,
                               window_ids_.empty() ? nullptr : window_ids_.data(),
                               window_lo_.empty() ? nullptr : window_lo_.data());
  }
  const WindowIndex& get() const { return index_; }
  // Whether this is the index of these positives and delta.
  bool indexes(const double* q, int64_t num_pos, double delta) const {
    return delta == delta_ && num_pos == static_cast<int64_t>(q_.size()) &&
           std::memcmp(q, q_.data(), sizeof(double) * num_pos) == 0;
  }
  bool has_window_ids() const { return !window_ids_.empty(); }
  int64_t window_count() const { return static_cast<int64_t>(window_lo_.size()); }
  // lo of window `id`, or -1 when no bucket has that window.
  int32_t window_lo(int64_t id) const { return window_lo_[id]; }

  // Pulls in the table entry the window search of score s will read, some entries
  // ahead of use: the table is larger than L1 and read at random.
  void prefetch(double s) const { __builtin_prefetch(window_entry(index_, s)); }

 private:
  std::vector<double> q_;
  double delta_;
  std::vector<int32_t> table_;
  std::vector<int32_t> window_ids_;
  std::vector<int32_t> window_lo_;
  WindowIndex index_;
};

// The window index of q and delta. A ranking's pass 1, its positive stage and its pass 2
// index the same positives, so the last index built is kept (one, at most ~12 MiB at
// the 2^20-bucket cap) and returned again while q and delta are the same, bit for bit.
std::shared_ptr<const OwnedWindowIndex> window_index(const double* q, int64_t num_pos,
                                                     double delta);

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
            make_window_index(sq, size, table, buckets, bucket_origin(sq, delta), width, nullptr,
                              nullptr);
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
