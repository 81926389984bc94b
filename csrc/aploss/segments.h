// Grouped rankings (group_ids): the per-entry math of math.h applied to one segment of
// the positives. Shared unchanged by the CPU and CUDA kernels.
//
// The positives are sorted by (group, score); group u owns the segment
// [offsets[u], offsets[u+1]) of q (empty when the group has no positive). An entry of
// group u is ranked against its segment only, exactly as an ungrouped entry is ranked
// against all of q: the segment's first score is its "smallest", its cluster shifts
// start at offsets[u] (clusters never cross a segment boundary, see make_positives),
// and every index found in the segment is shifted by offsets[u] into the shared
// (P+1)-long arrays. Prefix sums over those arrays run across segments, so a segment's
// own sums are differences from its first index.
#pragma once

#include "math.h"

namespace aploss {

struct Segment {
  int64_t begin;
  int64_t end;
  APLOSS_HD bool empty() const { return end <= begin; }
  APLOSS_HD int64_t size() const { return end - begin; }
};

// The segment of an entry with dense group code `code`. An out-of-range code (which the
// driver never produces) reads as an empty segment instead of out of bounds.
APLOSS_HD Segment segment_of(const int64_t* offsets, int64_t num_groups, int64_t code) {
  if (code < 0 || code >= num_groups) return {0, 0};
  return {offsets[code], offsets[code + 1]};
}

// StepParams of a non-empty segment: its first positive is the smallest.
APLOSS_HD StepParams segment_params(double delta, const double* q, const double* cluster_shift,
                                    Segment seg) {
  return make_step_params(delta, q[seg.begin], cluster_shift + seg.begin, seg.size());
}

// The window of s within the segment by plain binary search (q in fast memory: GPU).
APLOSS_HD Window find_segment_window(const double* q, Segment seg, double s, const StepParams& p) {
  return find_window(q + seg.begin, seg.size(), s, p);
}

// ---------------------------------------------------------------------------------
// Deterministic pass 1 (../deterministic_pass1.cpp): instead of adding its contributions
// with atomics, each entry writes down where they go, and ATen's deterministic
// index_add sums them in a fixed order. Indices are global (segment offset included):
//   d1: +full at begin, -full at lo        (full = lo > begin)
//   da: +a at lo, -a at hi
//   db: +1 at lo, -1 at hi                 (when hi > lo)
// An entry that contributes nothing writes {0, 0, 0, 0}; a non-finite negative writes
// a = NaN, so the sums (hence the loss) cannot be silently wrong.
struct PassOneRecord {
  double begin, lo, hi, a;
};

// `offsets` null: the single ranking, one segment [0, P).
template <typename label_t>
APLOSS_HD PassOneRecord pass1_record(label_t label, double s, int64_t code, const double* q,
                                     const double* cluster_shift, int64_t num_pos,
                                     const int64_t* offsets, int64_t num_groups, double delta) {
  PassOneRecord r{0.0, 0.0, 0.0, 0.0};
  if (classify_label(label) != kNegative) return r;
  if (!is_finite_score(s)) {
    r.a = s - s;  // NaN for NaN and +-Inf
    return r;
  }
  const Segment seg = offsets != nullptr ? segment_of(offsets, num_groups, code)
                                         : Segment{0, num_pos};
  if (seg.empty()) return r;
  const StepParams p = segment_params(delta, q, cluster_shift, seg);
  if (is_pruned(s, p)) return r;
  const Window w = find_segment_window(q, seg, s, p);
  r.begin = static_cast<double>(seg.begin);
  r.lo = static_cast<double>(seg.begin + w.lo);
  r.hi = static_cast<double>(seg.begin + w.hi);
  r.a = w.a;
  return r;
}

}  // namespace aploss
