// Sums of H over windows, for every sorted positive, from "sources": groups of entries
// that share one window over the positives (math.h, Window). A source j holds count(j)
// entries whose window is [lo(j), hi(j)) and whose offsets a (math.h, window_offset) sum
// to sum_a(j); for positive i its entries add
//
//   count(j)                                       if i < lo(j)   (H = 1)
//   sum_a(j) - count(j) (q_i - shift_i) / (2 delta)   if lo(j) <= i < hi(j)
//
// The sources of pass 1 are the intervals of the negatives' scores (intervals.h), those
// of the ranking among the positives are the positives themselves. In both, lo and hi
// never decrease from one source to the next, so the sources with lo(j) = k (or hi(j) =
// k) are one contiguous run, and the difference arrays of math.h (accumulate_negatives)
// are sums over runs: at index k,
//
//   full(k)   = sum of count(j) over lo(j) = k
//   linear(k) = sum of count(j) over lo(j) = k < hi(j), minus over lo(j) < hi(j) = k
//   a(k)      = the same sums of sum_a(j)
//
// and with their prefix sums over k <= i the sum for positive i is
//
//   (total count - full prefix) + a prefix - linear prefix (q_i - shift_i) / (2 delta).
//
// Counts stay integers (exact); each a(k) sums a run in source order, and its prefix sum
// only ever holds the windows that cover the current index, as with per-entry difference
// arrays. Shared unchanged by the CPU and CUDA kernels.
#pragma once

#include <cstdint>

#include "math.h"

namespace aploss {

// Counts are int64 (exact) for entries, double for weighted positives (Rank & Sort's and
// aLRP's sums with values).
template <typename C>
struct DifferenceAt {
  C full;
  C linear;
  double a;
};

// What source j adds to index k of the difference arrays, given that lo(j) == k
// (`at_lo`) or hi(j) == k (otherwise).
template <typename C>
struct SourceTerm {
  C count;
  int64_t lo, hi;
  double sum_a;
};

template <typename C>
APLOSS_HD void add_source(DifferenceAt<C>& d, const SourceTerm<C>& s, int64_t k, bool at_lo) {
  if (s.count == C(0)) return;
  if (at_lo) {
    d.full += s.count;
    if (s.hi > k) {
      d.linear += s.count;
      d.a += s.sum_a;
    }
  } else if (s.lo < k) {  // a window that ends at k and started before it
    d.linear -= s.count;
    d.a -= s.sum_a;
  }
}

// The sum of positive i from the prefix sums (over k <= i) of the difference arrays.
template <typename C>
APLOSS_HD double window_sum(C total_count, C full_prefix, C linear_prefix, double a_prefix,
                            double q, double shift, double inv_2delta) {
  return static_cast<double>(total_count - full_prefix) + a_prefix -
         static_cast<double>(linear_prefix) * ((q - shift) * inv_2delta);
}

// The window of positive j's score among the sorted positives q[0, P): lo = #{i :
// q_j - q_i >= delta} (H = 1), hi = #{i : q_j - q_i > -delta} (H > 0), exactly as
// math.h's find_window evaluates them.
APLOSS_HD int64_t positive_window_lo(const double* q, int64_t num_pos, double s, double delta) {
  return partition_point(q, num_pos, FullStep{s, delta});
}
APLOSS_HD int64_t positive_window_hi(const double* q, int64_t num_pos, double s, double delta) {
  return partition_point(q, num_pos, NonzeroStep{s, delta});
}

// The first positive j whose window's lo is >= k, for k in [1, P]: lo(j) >= k exactly when
// q_j - q_{k-1} >= delta. Likewise for hi: q_j - q_{k-1} > -delta.
APLOSS_HD int64_t first_positive_with_lo(const double* q, int64_t num_pos, int64_t k,
                                         double delta) {
  if (k <= 0) return 0;
  const double at = q[k - 1];
  return partition_point(q, num_pos, [at, delta](double v) { return !(v - at >= delta); });
}
APLOSS_HD int64_t first_positive_with_hi(const double* q, int64_t num_pos, int64_t k,
                                         double delta) {
  if (k <= 0) return 0;
  const double at = q[k - 1];
  return partition_point(q, num_pos, [at, delta](double v) { return !(v - at > -delta); });
}

// ---------------------------------------------------------------------------------------
// AP-loss's positive stage, per positive (docs/algorithm.md): from rank_pos(i) = 1 + sum
// over the other positives of H and fp(i), its precision; from the interpolated precision
// ip(i) (a running maximum of prec over the positives in score order), its weight w(i) in
// the negatives' gradients and its own gradient, both times `weight` (1/P, or 1/(G P_g)
// for a grouped ranking).
APLOSS_HD double ap_precision(double rank_pos, double fp) { return rank_pos / (rank_pos + fp); }

struct APTerms {
  double w;         // the weight of positive i in every negative's gradient
  double own_grad;  // d loss / d s_i
};

APLOSS_HD APTerms ap_terms(double rank_pos, double fp, double prec, double ip, double weight) {
  const double c = ip > prec ? (1.0 - ip) / (1.0 - prec) : 1.0;
  return {c / (rank_pos + fp) * weight, -(1.0 - ip) * weight};
}

}  // namespace aploss
