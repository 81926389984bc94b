// Per-entry math of AP-loss, shared unchanged by the CPU and CUDA kernels.
//
// Everything here is a pure inline function marked APLOSS_HD, so the CPU tests
// exercise exactly the code the GPU runs. Notation follows ../shared/algorithm.md:
// q[0..P) are the positives' scores sorted ascending, in float64.
#pragma once

#include <cstdint>

#if defined(__CUDACC__) || defined(__HIPCC__)
#define APLOSS_HD __host__ __device__ __forceinline__
#elif defined(__GNUC__)
#define APLOSS_HD inline __attribute__((always_inline))
#else
#define APLOSS_HD inline
#endif

namespace aploss {

// Constants of one evaluation: derived once from delta and the sorted positives.
struct StepParams {
  double delta;      // half-width of the linear part of H
  double inv_2delta; // 1 / (2 * delta)
  double shift;      // q[0]: subtracted before the linear terms so large scores do not cancel
  double prune_at;   // q[0] - delta: a negative at or below this has H = 0 against every positive
};

APLOSS_HD StepParams make_step_params(double delta, double smallest_positive) {
  StepParams p;
  p.delta = delta;
  p.inv_2delta = 0.5 / delta;
  p.shift = smallest_positive;
  p.prune_at = smallest_positive - delta;
  return p;
}

// H(x) = clamp(x / (2 delta) + 1/2, 0, 1).
APLOSS_HD double step(double x, const StepParams& p) {
  const double h = x * p.inv_2delta + 0.5;
  return h < 0.0 ? 0.0 : (h > 1.0 ? 1.0 : h);
}

// #{ i : q[i] <= t }  (upper bound). Branchless: the loop body compiles to a
// conditional move, so unpredictable comparisons cost no pipeline flushes.
APLOSS_HD int64_t count_at_most(const double* q, int64_t n, double t) {
  if (n <= 0) return 0;
  const double* base = q;
  while (n > 1) {
    const int64_t half = n >> 1;
    base = (base[half] <= t) ? base + half : base;
    n -= half;
  }
  return (base - q) + (base[0] <= t ? 1 : 0);
}

// #{ i : q[i] < t }  (lower bound), branchless likewise.
APLOSS_HD int64_t count_below(const double* q, int64_t n, double t) {
  if (n <= 0) return 0;
  const double* base = q;
  while (n > 1) {
    const int64_t half = n >> 1;
    base = (base[half] < t) ? base + half : base;
    n -= half;
  }
  return (base - q) + (base[0] < t ? 1 : 0);
}

// A bucket index over sorted q that turns most searches into two table loads and a
// search over a handful of entries. Buckets split [origin, origin + buckets / inv_width)
// evenly; table[k] = count_at_most(q, n, edge_k), k = 0..buckets. Results are exact
// whatever the rounding of the bucket arithmetic: the candidate range is verified
// against q before the final search and widened to all of q if it does not hold.
struct BucketIndex {
  const double* q;
  int64_t n;
  const int32_t* table;  // buckets + 1 entries (P < 2^31 is checked by the driver)
  int64_t buckets;
  double origin;
  double inv_width;
};

APLOSS_HD double bucket_edge(double origin, double width, int64_t k) {
  return origin + static_cast<double>(k) * width;
}

// Fills table[k] for k in [begin, end): one search, then a merge-like sweep (the edges
// increase with k), O(end - begin + P). Callers parallelise over k.
APLOSS_HD void fill_bucket_table(const double* q, int64_t n, double origin, double width,
                                 int64_t begin, int64_t end, int32_t* table) {
  if (begin >= end) return;
  int64_t j = count_at_most(q, n, bucket_edge(origin, width, begin));
  for (int64_t k = begin; k < end; ++k) {
    const double edge = bucket_edge(origin, width, k);
    while (j < n && q[j] <= edge) ++j;
    table[k] = static_cast<int32_t>(j);
  }
}

// Candidate [lo, hi] for a search at t: table entries around t's bucket.
APLOSS_HD void bucket_range(const BucketIndex& idx, double t, int64_t* lo, int64_t* hi) {
  const double x = (t - idx.origin) * idx.inv_width;
  if (!(x >= 0.0)) {  // below the first edge (or NaN)
    *lo = 0;
    *hi = idx.table[0];
  } else if (x >= static_cast<double>(idx.buckets)) {
    *lo = idx.table[idx.buckets];
    *hi = idx.n;
  } else {
    const int64_t k = static_cast<int64_t>(x);
    *lo = idx.table[k];
    *hi = idx.table[k + 1];
  }
}

// The table entry a search at t will read first (for software prefetching).
APLOSS_HD const int32_t* bucket_entry(const BucketIndex& idx, double t) {
  const double x = (t - idx.origin) * idx.inv_width;
  const int64_t k = x >= 0.0 ? (x < static_cast<double>(idx.buckets) ? static_cast<int64_t>(x)
                                                                      : idx.buckets)
                             : 0;
  return idx.table + k;
}

APLOSS_HD int64_t indexed_count_at_most(const BucketIndex& idx, double t) {
  int64_t lo, hi;
  bucket_range(idx, t, &lo, &hi);
  if (lo > 0 && !(idx.q[lo - 1] <= t)) lo = 0;        // verify: q[lo-1] <= t
  if (hi < idx.n && !(idx.q[hi] > t)) hi = idx.n;     // verify: q[hi] > t
  return lo + count_at_most(idx.q + lo, hi - lo, t);
}

APLOSS_HD int64_t indexed_count_below(const BucketIndex& idx, double t) {
  int64_t lo, hi;
  bucket_range(idx, t, &lo, &hi);
  if (lo > 0 && !(idx.q[lo - 1] < t)) lo = 0;         // verify: q[lo-1] < t
  if (hi < idx.n && !(idx.q[hi] >= t)) hi = idx.n;    // verify: q[hi] >= t
  return lo + count_below(idx.q + lo, hi - lo, t);
}

// The index covers the thresholds that matter, [q_0 - delta, q_{P-1} + delta].
APLOSS_HD int64_t bucket_count_for(int64_t num_pos) {
  const int64_t k = 16 * num_pos;
  return k < 64 ? 64 : (k > (int64_t(1) << 20) ? (int64_t(1) << 20) : k);
}

APLOSS_HD double bucket_origin(const double* q, double delta) { return q[0] - delta; }

APLOSS_HD double bucket_width(const double* q, int64_t num_pos, double delta, int64_t buckets) {
  return (q[num_pos - 1] - q[0] + 2.0 * delta) / static_cast<double>(buckets);
}

// Where one score s stands against the sorted positives:
//   i <  lo      : H(s - q_i) = 1
//   lo <= i < hi : H(s - q_i) = a - (q_i - shift) / (2 delta)   (linear)
//   i >= hi      : H(s - q_i) = 0
struct Window {
  int64_t lo;
  int64_t hi;
  double a;
};

APLOSS_HD Window find_window(const double* q, int64_t num_pos, double s, const StepParams& p) {
  Window w;
  w.lo = count_at_most(q, num_pos, s - p.delta);
  // q[lo..) > s - delta, so the second search can start at lo.
  w.hi = w.lo + count_below(q + w.lo, num_pos - w.lo, s + p.delta);
  w.a = (s - p.shift) * p.inv_2delta + 0.5;
  return w;
}

// The same window through a bucket index (identical results, fewer memory steps).
APLOSS_HD Window find_window(const BucketIndex& idx, double s, const StepParams& p) {
  Window w;
  w.lo = indexed_count_at_most(idx, s - p.delta);
  w.hi = indexed_count_below(idx, s + p.delta);
  w.a = (s - p.shift) * p.inv_2delta + 0.5;
  return w;
}

// Pass 1 contributions of one negative to the three difference arrays (length P+1):
//   d1: +1 at 0, -1 at lo          -> prefix sum C1(i) = #{negatives with H = 1 for i}
//   da: +a at lo, -a at hi          -> prefix sum A(i)
//   db: +1 at lo, -1 at hi          -> prefix sum B(i)
//   fp(i) = C1(i) + A(i) - B(i) * (q_i - shift) / (2 delta)
// Empty ranges add nothing, so x + a - a rounding never enters. The "+1 at 0" of d1 is
// returned (1 or 0) so callers can count it in a register.
// `add(array, index, value)` is the accumulation primitive (array 0 = d1, 1 = da,
// 2 = db): the backend chooses the layout and the atomics.
enum DiffArray : int { kD1 = 0, kDA = 1, kDB = 2 };

template <typename Add>
APLOSS_HD int accumulate_negative(const Window& w, Add add) {
  if (w.hi > w.lo) {
    add(kDA, w.lo, w.a);
    add(kDA, w.hi, -w.a);
    add(kDB, w.lo, 1.0);
    add(kDB, w.hi, -1.0);
  }
  if (w.lo > 0) {
    add(kD1, w.lo, -1.0);
    return 1;
  }
  return 0;
}

// The same with three separate arrays and `add(double* at, double value)`.
template <typename Add>
APLOSS_HD int negative_contributions(const Window& w, double* d1, double* da, double* db, Add add) {
  double* arrays[3] = {d1, da, db};
  return accumulate_negative(w, [&](int array, int64_t index, double value) {
    add(arrays[array] + index, value);
  });
}

// fp(i) (or, fed with the positives themselves, sum_k H(q_k - q_i)) from the prefix sums.
APLOSS_HD double sum_from_prefix(double c1, double a, double b, double q_i, const StepParams& p) {
  return c1 + a - b * (q_i - p.shift) * p.inv_2delta;
}

// Pass 2: gradient of one negative from the prefix sums W(k) = sum_{i<k} w_i / P and
// Q(k) = sum_{i<k} (q_i - shift) w_i / P (the 1/P is folded into the prefix sums).
APLOSS_HD double negative_gradient(const Window& w, const double* W, const double* Q,
                                   const StepParams& p) {
  const double w_lo = W[w.lo];
  if (w.hi == w.lo) return w_lo;
  return w_lo + w.a * (W[w.hi] - w_lo) - (Q[w.hi] - Q[w.lo]) * p.inv_2delta;
}

// Pass 2 for a positive entry: its gradient is a function of its score alone (tied
// positives share prec, hence ip, hence the gradient), so look it up instead of
// carrying a permutation. count_at_most lands on the last of a run of ties.
APLOSS_HD double positive_gradient(const double* q, int64_t num_pos, const double* pos_grad,
                                   double s) {
  const int64_t k = count_at_most(q, num_pos, s) - 1;
  return pos_grad[k < 0 ? 0 : k];
}

// Label classes. Anything else is invalid and reported by the gather pass.
enum LabelClass : int { kIgnored = -1, kNegative = 0, kPositive = 1, kInvalid = 2 };

template <typename T>
APLOSS_HD int classify_label(T v) {
  // Compare in the label's own type: no conversion pass, exact for floats.
  if (v == T(1)) return kPositive;
  if (v == T(0)) return kNegative;
  if (v == T(-1)) return kIgnored;
  return kInvalid;
}

template <>
APLOSS_HD int classify_label<bool>(bool v) {
  return v ? kPositive : kNegative;
}

// uint8 cannot hold -1: 255 is an invalid label, not "ignored".
template <>
APLOSS_HD int classify_label<uint8_t>(uint8_t v) {
  return v == 1 ? kPositive : (v == 0 ? kNegative : kInvalid);
}

// A score that must make the whole call fail (issue: NaN/Inf are user errors).
APLOSS_HD bool is_finite_score(double s) {
  return s == s && s - s == 0.0;
}

}  // namespace aploss
