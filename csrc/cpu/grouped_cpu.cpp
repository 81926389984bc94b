// Grouped rankings on the CPU: sorted pass 1 and pass 2 with each entry ranked against
// its own group's segment of the positives (../aploss/segments.h). The structure is
// that of sorted_cpu.cpp (private per-chunk accumulators merged in chunk order, so the
// result is bitwise reproducible), with one window index per segment. Codes come one per
// entry or as one period (../aploss/kernels.h).
#include <ATen/ATen.h>

#include <algorithm>
#include <vector>

#include "../aploss/dispatch.h"
#include "../aploss/errors.h"
#include "../aploss/kernels.h"
#include "../aploss/segments.h"
#include "chunks.h"
#include "cpu_kernels.h"
#include "window_index_cpu.h"

namespace aploss {
namespace cpu {
namespace {

// As in sorted_cpu.cpp: what an entry's window search will read is pulled in this many
// entries ahead (it is read at random): the bucket-table entry, and twice as far ahead
// the group's search record, so that computing the table address does not itself wait
// on memory (random groups: retrieval-style ids).
constexpr int64_t kPrefetchDistance = 16;
constexpr int64_t kGroupPrefetchDistance = 2 * kPrefetchDistance;

// Entry by entry, a small segment (window_index_cpu.h, searched_in_q) is found from the
// offsets, U+1 int64 that stay in cache, without reading its search record.
//
// The window of s in a small segment by counting instead of binary search: both regions
// are prefixes of q (math.h), so their lengths are the counts of their predicates, and
// the count has no data-dependent branch to mispredict. The same window as
// find_segment_window.
Window find_small_window(const double* q, Segment seg, double s, const StepParams& p) {
  const FullStep full{s, p.delta};
  const NonzeroStep nonzero{s, p.delta};
  int64_t lo = 0, hi = 0;
  for (int64_t i = seg.begin; i < seg.end; ++i) {
    lo += full(q[i]);
    hi += nonzero(q[i]);
  }
  return {lo, hi, window_offset(s, lo, hi, p)};
}

// The codes of entries i, i + kPrefetchDistance and i + kGroupPrefetchDistance, one
// per entry or periodic (../aploss/kernels.h), advanced one entry at a time (no
// division per entry).
class CodeCursors {
 public:
  CodeCursors(const int32_t* codes, int64_t period, int64_t i)
      : codes_(codes), period_(period), at_{position(i), position(i + kPrefetchDistance),
                                          position(i + kGroupPrefetchDistance)} {}
  int32_t code() const { return codes_[at_[0]]; }
  int32_t code_ahead() const { return codes_[at_[1]]; }
  int32_t code_far_ahead() const { return codes_[at_[2]]; }
  void next() {
    for (int64_t& j : at_) {
      if (++j == period_) j = 0;
    }
  }

 private:
  int64_t position(int64_t i) const { return period_ > 0 ? i % period_ : i; }
  const int32_t* codes_;
  int64_t period_;  // 0: one code per entry
  int64_t at_[3];
};

// The lines the search of entry i + kPrefetchDistance will read: q (and pass 2's prefix
// sums `prefix_w`; null in pass 1) at a small segment's start, else its table entry.
template <typename scalar_t>
void prefetch(const OwnedSegmentedWindowIndex& index, const int64_t* offsets, int64_t num_groups,
              const double* q, const double* prefix_w, const CodeCursors& codes, const scalar_t* s,
              int64_t i, int64_t end) {
  if (i + kGroupPrefetchDistance < end) {
    const int32_t code = codes.code_far_ahead();
    if (!searched_in_q(segment_of(offsets, num_groups, code))) {
      __builtin_prefetch(&index.group(code));
    }
  }
  if (i + kPrefetchDistance < end) {
    const int32_t code = codes.code_ahead();
    const Segment seg = segment_of(offsets, num_groups, code);
    if (seg.empty()) return;
    if (searched_in_q(seg)) {
      __builtin_prefetch(q + seg.begin);
      if (prefix_w != nullptr) __builtin_prefetch(prefix_w + seg.begin);
    } else {
      __builtin_prefetch(
          window_entry(index.group(code).index, static_cast<double>(s[i + kPrefetchDistance])));
    }
  }
}

// Periodic codes with a short period (one per class) are visited code by code over
// tiles of whole rows: each group's record stays in registers and its table in cache
// (in entry order every step touches another group's record and table). The tile size
// was measured: per class at N = 4M, 2^17 entries beat 2^11, 2^15 and 2^19.
constexpr int64_t kTileEntries = int64_t(1) << 17;
constexpr int64_t kCodeMajorPeriod = 256;  // longer periods: entry by entry

struct Rows {
  int64_t begin, end;  // the whole rows of the period within a range of entries
};

Rows whole_rows(int64_t begin, int64_t end, int64_t period) {
  const int64_t row = std::min(end, (begin + period - 1) / period * period);
  return {row, std::max(row, end / period * period)};
}

// Whole rows [row, row_end) of periodic codes, tile by tile and code by code:
// visit(group, first, end, find) for the entries first, first + period, ... < end of one
// code, find(s) being the window search of that group (in q for a small segment, else
// through its table: chosen once per group, not per entry). `group` is a local copy,
// kept in registers.
template <typename Visit>
void for_each_code_in_tiles(const OwnedSegmentedWindowIndex& index, const double* q,
                            const int32_t* codes, int64_t period, int64_t row, int64_t row_end,
                            Visit visit) {
  const int64_t tile = std::max<int64_t>(1, kTileEntries / period) * period;
  for (int64_t tile_begin = row; tile_begin < row_end; tile_begin += tile) {
    const int64_t tile_end = std::min(row_end, tile_begin + tile);
    for (int64_t c = 0; c < period; ++c) {
      const SegmentSearch group = index.group(codes[c]);
      const int64_t first = tile_begin + c;
      if (searched_in_q(group.seg)) {
        visit(group, first, tile_end,
              [&](double s) { return find_small_window(q, group.seg, s, group.params); });
      } else {
        visit(group, first, tile_end,
              [&](double s) { return find_window(group.index, s, group.params); });
      }
    }
  }
}

// In a code's run of entries `period` apart: the table entry the search of the entry
// kPrefetchDistance steps ahead will read.
template <typename scalar_t>
void prefetch_in_run(const SegmentSearch& group, const scalar_t* s, int64_t i, int64_t period,
                     int64_t end) {
  const int64_t ahead = i + kPrefetchDistance * period;
  if (ahead < end && !group.seg.empty() && !searched_in_q(group.seg)) {
    __builtin_prefetch(window_entry(group.index, static_cast<double>(s[ahead])));
  }
}

// Pass 1 over the whole rows [row, row_end) of periodic codes, code by code, each
// group's full steps counted in a register. Returns the lowest non-finite negative's
// index, or -1.
template <typename scalar_t, typename label_t, typename Add>
int64_t pass1_code_major(const OwnedSegmentedWindowIndex& index, const double* q,
                         const scalar_t* s, const label_t* y, const int32_t* codes,
                         int64_t period, int64_t row, int64_t row_end, Add add) {
  int64_t bad = -1;
  for_each_code_in_tiles(index, q, codes, period, row, row_end,
                         [&](const SegmentSearch& group, int64_t first, int64_t end, auto find) {
    int64_t full_steps = 0;
    for (int64_t i = first; i < end; i += period) {
      prefetch_in_run(group, s, i, period, end);
      if (classify_label(y[i]) != kNegative) continue;
      const double v = static_cast<double>(s[i]);
      if (!is_finite_score(v)) {  // every group is validated
        if (bad < 0 || i < bad) bad = i;
        continue;
      }
      if (group.seg.empty() || is_pruned(v, group.params)) continue;
      const int64_t base = group.seg.begin;
      full_steps += accumulate_negative(
          find(v), [&](int array, int64_t at, double value) { add(array, base + at, value); });
    }
    if (full_steps > 0) add(kD1, group.seg.begin, static_cast<double>(full_steps));
  });
  return bad;
}

// Pass 2's value for one entry of the non-empty segment `seg`: a negative's from its
// window (found by `find` unless the entry is pruned), 0 for every other entry.
template <typename Find>
double entry_gradient(int cls, double v, Segment seg, const StepParams& params,
                      const StateView& st, Find find) {
  if (cls != kNegative || is_pruned(v, params)) return 0.0;
  return segment_window_gradient(find(), seg, st.prefix_w, st.prefix_q, params);
}

// Pass 2 over whole rows of periodic codes, code by code (as pass1_code_major).
template <typename scalar_t, typename label_t>
void pass2_code_major(const OwnedSegmentedWindowIndex& index, const StateView& st,
                      const scalar_t* s, const label_t* y, const int32_t* codes, int64_t period,
                      int64_t row, int64_t row_end, double scale, scalar_t* g) {
  for_each_code_in_tiles(index, st.q, codes, period, row, row_end,
                         [&](const SegmentSearch& group, int64_t first, int64_t end, auto find) {
    for (int64_t i = first; i < end; i += period) {
      prefetch_in_run(group, s, i, period, end);
      const double v = static_cast<double>(s[i]);
      const double value =
          group.seg.empty() ? 0.0
                            : entry_gradient(classify_label(y[i]), v, group.seg, group.params, st,
                                             [&] { return find(v); });
      g[i] = static_cast<scalar_t>(scale * value);
    }
  });
}

}  // namespace

at::Tensor grouped_pass1(const at::Tensor& scores, const at::Tensor& labels,
                         const at::Tensor& codes, const at::Tensor& positives,
                         const at::Tensor& offsets, double delta) {
  static constexpr int64_t kSlot = 4;  // {d1, da, db, pad} per index, as in sorted_cpu.cpp
  const int64_t n = scores.numel();
  const int64_t num_pos = positives.size(1);
  const int64_t width = num_pos + 1;
  const int64_t num_groups = offsets.numel() - 1;
  const double* qp = positives.const_data_ptr<double>();
  const double* shift = qp + num_pos;
  const int64_t* off = offsets.const_data_ptr<int64_t>();
  const int32_t* g = codes.const_data_ptr<int32_t>();
  const int64_t period = codes.numel() < n ? codes.numel() : 0;
  const OwnedSegmentedWindowIndex index(qp, shift, off, num_groups, delta);
  const Chunks chunks = split_into_chunks(n, kSlot * width);
  at::Tensor partials = at::zeros({chunks.count, width, kSlot}, positives.options());
  double* acc = partials.data_ptr<double>();
  std::vector<int64_t> bad_score(chunks.count, -1);

  APLOSS_DISPATCH_SCORES_AND_LABELS(scores.scalar_type(), labels.scalar_type(),
                                    "aploss_grouped_pass1_cpu", [&] {
    const scalar_t* s = scores.const_data_ptr<scalar_t>();
    const label_t* y = labels.const_data_ptr<label_t>();
    for_each_chunk(chunks, n, [&](int64_t c, int64_t begin, int64_t end) {
      double* slots = acc + c * width * kSlot;
      const auto add = [slots](int array, int64_t at, double v) { slots[at * kSlot + array] += v; };
      int64_t bad = -1;
      // Entry by entry over [from, to).
      const auto in_order = [&](int64_t from, int64_t to) {
        CodeCursors cursor(g, period, from);
        for (int64_t i = from; i < to; ++i, cursor.next()) {
          prefetch(index, off, num_groups, qp, static_cast<const double*>(nullptr), cursor, s, i,
                   to);
          if (classify_label(y[i]) != kNegative) continue;
          const double v = static_cast<double>(s[i]);
          if (!is_finite_score(v)) {  // checked before the segment: every group is validated
            if (bad < 0 || i < bad) bad = i;
            continue;
          }
          const int32_t code = cursor.code();
          const Segment seg = segment_of(off, num_groups, code);
          if (seg.empty()) continue;  // a group without positives ranks nothing
          if (searched_in_q(seg)) {
            const StepParams params = segment_params(delta, qp, shift, seg);
            if (is_pruned(v, params)) continue;
            accumulate_segment_window(find_small_window(qp, seg, v, params), seg, add);
          } else {
            const SegmentSearch& group = index.group(code);
            if (is_pruned(v, group.params)) continue;
            accumulate_segment_window(find_window(group.index, v, group.params), seg, add);
          }
        }
      };
      if (period == 0 || period > kCodeMajorPeriod) {
        in_order(begin, end);
      } else {  // whole rows of the period code by code, the partial rows at the ends in order
        const Rows rows = whole_rows(begin, end, period);
        in_order(begin, rows.begin);
        const int64_t bad_rows =
            pass1_code_major(index, qp, s, y, g, period, rows.begin, rows.end, add);
        if (bad_rows >= 0 && (bad < 0 || bad_rows < bad)) bad = bad_rows;
        in_order(rows.end, end);
      }
      bad_score[c] = bad;
    });
  });

  const int64_t first_bad = first_flagged(bad_score.data(), chunks.count);
  if (first_bad >= 0) throw_non_finite_score(scores, first_bad);
  const at::Tensor merged = chunks.count == 1 ? partials[0] : partials.sum(0);
  return merged.narrow(1, 0, 3).t().contiguous();
}

void grouped_pass2(const at::Tensor& scores, const at::Tensor& labels, const at::Tensor& codes,
                   const at::Tensor& state, const at::Tensor& offsets, double delta,
                   const at::Tensor& grad_output, at::Tensor& grad) {
  const int64_t n = scores.numel();
  const StateView st = view_state(state);
  const int64_t num_groups = offsets.numel() - 1;
  const int64_t* off = offsets.const_data_ptr<int64_t>();
  const int32_t* gc = codes.const_data_ptr<int32_t>();
  const int64_t period = codes.numel() < n ? codes.numel() : 0;
  const double scale = grad_output.item<double>();
  const OwnedSegmentedWindowIndex index(st.q, st.shift, off, num_groups, delta);

  APLOSS_DISPATCH_SCORES_AND_LABELS(scores.scalar_type(), labels.scalar_type(),
                                    "aploss_grouped_pass2_cpu", [&] {
    const scalar_t* s = scores.const_data_ptr<scalar_t>();
    const label_t* y = labels.const_data_ptr<label_t>();
    scalar_t* g = grad.data_ptr<scalar_t>();
    at::parallel_for(0, n, 1 << 14, [&](int64_t begin, int64_t end) {
      const auto in_order = [&](int64_t from, int64_t to) {
        CodeCursors cursor(gc, period, from);
        for (int64_t i = from; i < to; ++i, cursor.next()) {
          prefetch(index, off, num_groups, st.q, st.prefix_w, cursor, s, i, to);
          const int cls = classify_label(y[i]);
          double value = 0.0;
          if (cls == kNegative) {
            const int32_t code = cursor.code();
            const Segment seg = segment_of(off, num_groups, code);
            const double v = static_cast<double>(s[i]);
            if (seg.empty()) {
              // a group without positives ranks nothing
            } else if (searched_in_q(seg)) {
              const StepParams params = segment_params(delta, st.q, st.shift, seg);
              if (!is_pruned(v, params)) {
                value = segment_window_gradient(find_small_window(st.q, seg, v, params), seg,
                                                st.prefix_w, st.prefix_q, params);
              }
            } else {
              const SegmentSearch& group = index.group(code);
              if (!is_pruned(v, group.params)) {
                value = segment_window_gradient(find_window(group.index, v, group.params), seg,
                                                st.prefix_w, st.prefix_q, group.params);
              }
            }
          }
          g[i] = static_cast<scalar_t>(scale * value);
        }
      };
      if (period == 0 || period > kCodeMajorPeriod) {
        in_order(begin, end);
        return;
      }
      const Rows rows = whole_rows(begin, end, period);
      in_order(begin, rows.begin);
      pass2_code_major(index, st, s, y, gc, period, rows.begin, rows.end, scale, g);
      in_order(rows.end, end);
    });
  });
}

}  // namespace cpu
}  // namespace aploss
