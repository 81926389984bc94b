// Per-entry math of AP-loss, shared unchanged by the CPU and CUDA kernels.
//
// Everything here is a pure inline function marked APLOSS_HD, so the CPU tests
// exercise exactly the code the GPU runs. Notation follows docs/algorithm.md:
// q[0..P) are the positives' scores sorted ascending, in float64.
//
// Every H-region test is made on the difference x = s - q_i, exactly as H(x) is
// defined, never as "q_i <= s - delta": when ulp(s) exceeds delta the two disagree
// (a tie at 1e30 must give H = 1/2). fl(s - q) is monotone in q, so the regions are
// still prefixes of q and binary searches apply.
#pragma once

#include <cstdint>

#if defined(__CUDACC__) || defined(__HIPCC__)
#define APLOSS_HD __host__ __device__ __forceinline__
#elif defined(__GNUC__)
#define APLOSS_HD inline __attribute__((always_inline))
#else
#define APLOSS_HD inline
#endif

// Before a template that is __host__ __device__ but calls what its type arguments provide
// (a CPU or a GPU Block, positive_stages.h): nvcc checks the call per instantiation only.
#if defined(__CUDACC__)
#define APLOSS_HD_TEMPLATE _Pragma("nv_exec_check_disable")
#else
#define APLOSS_HD_TEMPLATE
#endif

#if defined(__CUDACC__) || defined(__clang__)
#define APLOSS_UNROLL _Pragma("unroll")
#elif defined(__GNUC__)
#define APLOSS_UNROLL _Pragma("GCC unroll 8")
#else
#define APLOSS_UNROLL
#endif

namespace aploss {

// ---------------------------------------------------------------------------------
// Constants of one evaluation.
//
// Linear terms are evaluated relative to a local shift so that large scores do not
// cancel: AP depends only on differences, but a(j) - q_i / (2 delta) with |q| = 1e30
// loses every digit. The positives are cut into clusters wherever two neighbours are at
// least kClusterGap * delta apart; a window (|s - q_i| < delta, width 2 delta) never spans
// such a gap, so every negative's linear contributions and every positive's prefix sums
// use one shift: the first score of its cluster. Within a cluster |q_i - shift| < 4 delta P.
constexpr double kClusterGap = 4.0;

struct StepParams {
  double delta;                // half-width of the linear part of H
  double inv_2delta;           // 1 / (2 delta)
  double smallest;             // q[0]
  const double* cluster_shift; // per positive: the first score of its cluster
  bool one_cluster;            // all shifts equal q[0] (the usual case): no lookup
};

// cluster_shift has num_pos entries, non-decreasing.
APLOSS_HD StepParams make_step_params(double delta, double smallest_positive,
                                      const double* cluster_shift, int64_t num_pos) {
  StepParams p;
  p.delta = delta;
  p.inv_2delta = 0.5 / delta;
  p.smallest = smallest_positive;
  p.cluster_shift = cluster_shift;
  p.one_cluster = cluster_shift[num_pos - 1] == smallest_positive;
  return p;
}

// H(x) = clamp(x / (2 delta) + 1/2, 0, 1).
APLOSS_HD double step(double x, const StepParams& p) {
  const double h = x * p.inv_2delta + 0.5;
  return h < 0.0 ? 0.0 : (h > 1.0 ? 1.0 : h);
}

// H(s - q_i) = 0 for every positive: the negative changes no rank and gets no gradient.
// One subtraction and one comparison; NaN is not pruned (the finiteness check sees it).
APLOSS_HD bool is_pruned(double s, const StepParams& p) { return s - p.smallest <= -p.delta; }

// ---------------------------------------------------------------------------------
// Searches over sorted q. All are "partition points": the length of the prefix of q on
// which a monotone predicate holds. Branchless: the loop body is a conditional move, so
// unpredictable comparisons cost no pipeline flushes.

template <typename T, typename Pred>
APLOSS_HD int64_t partition_point(const T* q, int64_t n, Pred pred) {
  if (n <= 0) return 0;
  const T* base = q;
  while (n > 1) {
    const int64_t half = n >> 1;
    base = pred(base[half]) ? base + half : base;
    n -= half;
  }
  return (base - q) + (pred(base[0]) ? 1 : 0);
}

// Predicates of the window of a score s (true on a prefix of q).
struct FullStep {  // H(s - q_i) = 1
  double s, delta;
  APLOSS_HD bool operator()(double v) const { return s - v >= delta; }
};
struct NonzeroStep {  // H(s - q_i) > 0
  double s, delta;
  APLOSS_HD bool operator()(double v) const { return s - v > -delta; }
};

// ---------------------------------------------------------------------------------
// A bucket index over the scores s that turns the two window searches of an entry into
// one table load and searches over a handful of positives (the grouped CPU kernels; the
// ungrouped ones count thresholds instead, intervals.h). Buckets split
// [origin, origin + buckets / inv_width) evenly; for each edge e_k the table holds the
// window bounds of a score at e_k: {lo(e_k), hi(e_k)}, k = 0..buckets. lo(s) and hi(s)
// never decrease with s, so a score in bucket k has lo in [lo(e_k), lo(e_k+1)] and hi in
// [hi(e_k), hi(e_k+1)]. The table only proposes these ranges: each is verified with the
// search's own predicate and widened to all of q if it does not hold, so results are
// exact whatever the rounding of the bucket arithmetic.
struct WindowIndex {
  const double* q;
  int64_t n;
  const int32_t* table;       // 2 (buckets + 1) entries (P < 2^31 is checked by the driver)
  int64_t buckets;
  double origin;
  double inv_width;
};

APLOSS_HD double bucket_edge(double origin, double width, int64_t k) {
  return origin + static_cast<double>(k) * width;
}

// The scores whose windows are not empty: [q_0 - delta, q_{P-1} + delta].
APLOSS_HD double bucket_origin(const double* q, double delta) { return q[0] - delta; }

APLOSS_HD double bucket_width(const double* q, int64_t num_pos, double delta, int64_t buckets) {
  return (q[num_pos - 1] - q[0] + 2.0 * delta) / static_cast<double>(buckets);
}

// Fills the table entries of edges k in [begin, end): one search per bound, then a
// merge-like sweep (the edges increase with k), O(end - begin + P). Callers
// parallelise over k.
APLOSS_HD void fill_window_table(const double* q, int64_t n, double origin, double width,
                                 double delta, int64_t begin, int64_t end, int32_t* table) {
  if (begin >= end) return;
  const double first = bucket_edge(origin, width, begin);
  int64_t lo = partition_point(q, n, FullStep{first, delta});
  int64_t hi = partition_point(q, n, NonzeroStep{first, delta});
  for (int64_t k = begin; k < end; ++k) {
    const double edge = bucket_edge(origin, width, k);
    while (lo < n && FullStep{edge, delta}(q[lo])) ++lo;
    while (hi < n && NonzeroStep{edge, delta}(q[hi])) ++hi;
    table[2 * k] = static_cast<int32_t>(lo);
    table[2 * k + 1] = static_cast<int32_t>(hi);
  }
}

// Bucket of score s: -1 below the first edge (or NaN), `buckets` at or past the last.
APLOSS_HD int64_t bucket_of(const WindowIndex& idx, double s) {
  const double x = (s - idx.origin) * idx.inv_width;
  if (!(x >= 0.0)) return -1;
  return x >= static_cast<double>(idx.buckets) ? idx.buckets : static_cast<int64_t>(x);
}

// The table entry the window search of s reads (for software prefetching).
APLOSS_HD const int32_t* window_entry(const WindowIndex& idx, double s) {
  const int64_t k = bucket_of(idx, s);
  return idx.table + 2 * (k < 0 ? 0 : k);
}

// Partition point of `pred` over q (n >= 1), within the proposed [lo, hi] once verified.
constexpr int64_t kShortRange = 2;

template <typename Pred>
APLOSS_HD int64_t verified_partition_point(const double* q, int64_t n, int64_t lo, int64_t hi,
                                           Pred pred) {
  if (lo > 0 && !pred(q[lo - 1])) lo = 0;  // pred must hold before lo
  if (hi < n && pred(q[hi])) hi = n;       // and fail from hi on
  const int64_t m = hi - lo;
  if (m <= kShortRange) {
    // The usual case: a fixed-length, branch-free count (pred is monotone, so the
    // number of entries where it holds is the partition point). A search loop whose
    // trip count varies at random from entry to entry mispredicts on every exit.
    int64_t count = 0;
    APLOSS_UNROLL
    for (int64_t j = 0; j < kShortRange; ++j) {
      const int64_t at = lo + j < n ? lo + j : n - 1;
      count += (j < m && pred(q[at])) ? 1 : 0;
    }
    return lo + count;
  }
  return lo + partition_point(q + lo, m, pred);
}

// ---------------------------------------------------------------------------------
// Where one score s stands against the sorted positives:
//   i <  lo      : H(s - q_i) = 1
//   lo <= i < hi : H(s - q_i) = a - (q_i - shift_i) / (2 delta)   (linear; shift_i is
//                  the same over the window, see StepParams)
//   i >= hi      : H(s - q_i) = 0
struct Window {
  int64_t lo;
  int64_t hi;
  double a;
};

// a(j) = (s - shift) / (2 delta) + 1/2 with the window's cluster shift; read only for a
// non-empty window, where lo < P.
APLOSS_HD double window_offset(double s, int64_t lo, int64_t hi, const StepParams& p) {
  if (hi <= lo) return 0.0;
  const double shift = p.one_cluster ? p.smallest : p.cluster_shift[lo];
  return (s - shift) * p.inv_2delta + 0.5;
}

// Plain binary searches (for q in fast memory, e.g. GPU shared memory).
APLOSS_HD Window find_window(const double* q, int64_t num_pos, double s, const StepParams& p) {
  Window w;
  w.lo = partition_point(q, num_pos, FullStep{s, p.delta});
  // The nonzero region contains the full-step region, so search on from lo.
  w.hi = w.lo + partition_point(q + w.lo, num_pos - w.lo, NonzeroStep{s, p.delta});
  w.a = window_offset(s, w.lo, w.hi, p);
  return w;
}

// The same window through a window index (identical results, fewer memory steps).
//
// Fast path: when s lies in bucket k with a margin larger than any rounding error of the
// bucket arithmetic, then e_k <= s < e_k+1 for certain, and since fl(s - q) is monotone
// in s the bounds lie in the table's ranges without verification; a bucket with no
// breakpoint (lo and hi equal at both edges, most of them) needs no search at all. The
// margin bounds the errors of s - origin, of the product with inv_width and of the
// table's edges origin + k * width (each a few ulps), with a factor of 16 to spare.
APLOSS_HD Window find_window(const WindowIndex& idx, double s, const StepParams& p) {
  const int32_t* t = idx.table;
  const double x = (s - idx.origin) * idx.inv_width;
  Window w;
  if (x >= 0.0 && x < static_cast<double>(idx.buckets)) {
    const int64_t k = static_cast<int64_t>(x);
    const double frac = x - static_cast<double>(k);
    const double magnitude = ((s < 0 ? -s : s) + (idx.origin < 0 ? -idx.origin : idx.origin));
    const double margin = 0x1p-48 * (x + magnitude * idx.inv_width + 1.0);
    if (frac >= margin && frac <= 1.0 - margin) {
      const int64_t lo_min = t[2 * k], hi_min = t[2 * k + 1];
      const int64_t lo_max = t[2 * k + 2], hi_max = t[2 * k + 3];
      w.lo = lo_min == lo_max ? lo_min
                              : lo_min + partition_point(idx.q + lo_min, lo_max - lo_min,
                                                         FullStep{s, p.delta});
      w.hi = hi_min == hi_max ? hi_min
                              : hi_min + partition_point(idx.q + hi_min, hi_max - hi_min,
                                                         NonzeroStep{s, p.delta});
      w.a = window_offset(s, w.lo, w.hi, p);
      return w;
    }
  }
  const int64_t k = bucket_of(idx, s);
  int64_t lo_min, lo_max, hi_min, hi_max;
  if (k < 0) {
    lo_min = 0, hi_min = 0, lo_max = t[0], hi_max = t[1];
  } else if (k >= idx.buckets) {
    lo_min = t[2 * k], hi_min = t[2 * k + 1], lo_max = idx.n, hi_max = idx.n;
  } else {
    lo_min = t[2 * k], hi_min = t[2 * k + 1], lo_max = t[2 * k + 2], hi_max = t[2 * k + 3];
  }
  w.lo = verified_partition_point(idx.q, idx.n, lo_min, lo_max, FullStep{s, p.delta});
  w.hi = verified_partition_point(idx.q, idx.n, hi_min, hi_max, NonzeroStep{s, p.delta});
  w.a = window_offset(s, w.lo, w.hi, p);
  return w;
}

// ---------------------------------------------------------------------------------
// Pass 1 contributions of one negative to the three difference arrays (length P+1):
//   d1: +1 at 0, -1 at lo          -> prefix sum C1(i) = #{negatives with H = 1 for i}
//   da: +a at lo, -a at hi          -> prefix sum A(i)
//   db: +1 at lo, -1 at hi          -> prefix sum B(i)
//   fp(i) = C1(i) + A(i) - B(i) * (q_i - shift_i) / (2 delta)
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

// The same for `count` negatives sharing the window [lo, hi), their offsets a summing to
// sum_a. Returns the count of their "+1 at 0" of d1.
template <typename Add>
APLOSS_HD double accumulate_negatives(int64_t lo, int64_t hi, double count, double sum_a,
                                      Add add) {
  if (hi > lo) {
    add(kDA, lo, sum_a);
    add(kDA, hi, -sum_a);
    add(kDB, lo, count);
    add(kDB, hi, -count);
  }
  if (lo > 0) {
    add(kD1, lo, -count);
    return count;
  }
  return 0.0;
}

// The same with three separate arrays and `add(double* at, double value)`.
template <typename Add>
APLOSS_HD int negative_contributions(const Window& w, double* d1, double* da, double* db, Add add) {
  double* arrays[3] = {d1, da, db};
  return accumulate_negative(w, [&](int array, int64_t index, double value) {
    add(arrays[array] + index, value);
  });
}

// Pass 2: gradient of one negative from the prefix sums W(k) = sum_{i<k} w_i / P and
// Q(k) = sum_{i<k} (q_i - shift_i) w_i / P (the 1/P is folded into the prefix sums).
APLOSS_HD double negative_gradient(const Window& w, const double* W, const double* Q,
                                   const StepParams& p) {
  const double w_lo = W[w.lo];
  if (w.hi == w.lo) return w_lo;
  return w_lo + w.a * (W[w.hi] - w_lo) - (Q[w.hi] - Q[w.lo]) * p.inv_2delta;
}

// ---------------------------------------------------------------------------------
// Labels. Compared in the label's own type: no conversion pass, exact for floats.
enum LabelClass : int { kIgnored = -1, kNegative = 0, kPositive = 1, kInvalid = 2 };

template <typename T>
APLOSS_HD int classify_label(T v) {
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

// NaN and +-Inf make the whole call fail (they are user errors, not rankable).
APLOSS_HD bool is_finite_score(double s) { return s == s && s - s == 0.0; }

}  // namespace aploss
