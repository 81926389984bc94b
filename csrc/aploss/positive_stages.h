// The positive stages of the three losses, written once for the CPU and the GPU: the
// P-sized work between pass 1 and pass 2 of one ranking (docs/algorithm.md,
// docs/ranking_family.md), from each positive's fp(i) to the loss, every positive's own
// gradient and its weight w(i) in the negatives' gradients.
//
// They run on a `Block`: the CPU's SerialBlock (cpu/serial_block.h) runs each phase as a
// loop; the GPU's CudaBlock (cuda/cuda_block.cuh) runs it on the threads of one block,
// with a barrier after each phase. A Block provides
//
//   for_each(n, f)                  f(i) for every i in [0, n), then a barrier
//   sum(local)                      the sum of every thread's `local` (exact order fixed)
//   scan<T>(n, op, identity, inclusive, value, store)
//                                   store(i, op-scan of value(0..i)); returns the total
//   difference_sums<C>(n, sources, lo_of, hi_of, term, full, linear, a)
//                                   window_sums.h's difference arrays at k in [0, n) and
//                                   their prefix sums, from `sources` sources whose
//                                   windows lo_of(j), hi_of(j) never decrease
//   key_window_sums(a, keys, values, rows, stride, transpose, out)
//                                   for every positive x and each of `rows` value rows
//                                   (`stride` apart, as the outputs): the sum over the
//                                   positives m with keys[m] < keys[x] of H(q_m - q_x)
//                                   (transpose: H(q_x - q_m)) times the value at m
//
// A loss supplies only its stage function below; the passes, the sort and the index are
// shared (csrc/stages.h, cuda/ranking_cuda.cuh).
#pragma once

#include <cstdint>

#include "math.h"
#include "window_sums.h"

namespace aploss {

// The sorted positives and the stage's arrays (P each unless said otherwise).
struct StageArrays {
  int64_t num_pos;
  double delta;
  const double* q;            // sorted scores
  const double* shift;        // cluster shifts (math.h)
  const long long* position;  // flat positions
  const int32_t* window_lo;   // each positive's window among the positives: math.h's lo and
  const int32_t* window_hi;   // hi of its score (the window holds the positive itself)
  const double* value;        // per positive: Rank & Sort's target, aLRP's regression loss
  const int32_t* memory_rank; // aLRP: each positive's rank by position
  const double* fp;           // fp(i)
  double* row[8];             // work rows of P + 1, evenly spaced: 0 and 1 for
                              // difference_sums, 2-7 the stage's own
  double* w;                  // out: weight in the negatives' gradients
  double* positive_grads;     // out: (P, 2) [position, gradient]
  double* loc_weights;        // out (aLRP): d loc_loss / d regression_loss, memory order
};

struct StageLosses {
  double loss;
  double parts[2];  // Rank & Sort: ranking, sorting
};

APLOSS_HD void write_positive_grad(const StageArrays& a, int64_t i, double grad) {
  a.positive_grads[2 * i] = static_cast<double>(a.position[i]);
  a.positive_grads[2 * i + 1] = grad;
}

// sum_k H(q_k - q_i) v_k over every positive k, i itself included (H(0) = 1/2), into
// `out`: the positives as the sources of window_sums.h, each with count v_k (`value(k)`,
// C = double) or 1 (C = long long: exact).
APLOSS_HD_TEMPLATE
template <typename C, typename Block, typename Value>
APLOSS_HD void positive_window_sums(const Block& b, const StageArrays& a, double* out,
                                    Value value) {
  const int64_t num_pos = a.num_pos;
  const double inv_2delta = 0.5 / a.delta;
  const double* const q = a.q;
  const double* const shift = a.shift;
  const int32_t* const lo = a.window_lo;
  const int32_t* const hi = a.window_hi;
  C* const full = reinterpret_cast<C*>(a.row[0]);
  C* const linear = reinterpret_cast<C*>(a.row[1]);
  b.template difference_sums<C>(
      num_pos, num_pos, [lo](int64_t j) { return static_cast<int64_t>(lo[j]); },
      [hi](int64_t j) { return static_cast<int64_t>(hi[j]); },
      [q, shift, lo, hi, inv_2delta, value](int64_t j) {
        // Positive j's window holds j itself, so its cluster shift is j's (math.h).
        const C v = value(j);
        return SourceTerm<C>{v, lo[j], hi[j],
                             static_cast<double>(v) * ((q[j] - shift[j]) * inv_2delta + 0.5)};
      },
      full, linear, out);
  C mine = C(0);
  b.for_each(num_pos, [&mine, value](int64_t k) { mine += value(k); });
  const C total = b.sum(mine);
  b.for_each(num_pos, [=](int64_t i) {
    out[i] = window_sum(total, full[i], linear[i], out[i], q[i], shift[i], inv_2delta);
  });
}

// sum_k H(q_k - q_i) over every positive k, i included: exact counts.
APLOSS_HD_TEMPLATE
template <typename Block>
APLOSS_HD void positive_rank_sums(const Block& b, const StageArrays& a, double* out) {
  positive_window_sums<long long>(b, a, out, [](int64_t) { return 1LL; });
}

// The released codes' gates: Rank & Sort's on FP(i) and on den(i), aLRP's on FP(i).
constexpr double kRankSortEps = 1e-10;
constexpr double kALRPEps = 1e-5;

// Rank & Sort's and aLRP's first sums, over every positive k, i included: sum_k H(q_k - q_i)
// into row 2 (exact counts) and sum_k H(q_k - q_i) term(k) into row 3, term a function of
// the loss's value per positive (a.value).
struct RankAndValueSums {
  double* ranks;
  double* values;
};
APLOSS_HD_TEMPLATE
template <typename Block, typename Term>
APLOSS_HD RankAndValueSums rank_and_value_sums(const Block& b, const StageArrays& a, Term term) {
  positive_rank_sums(b, a, a.row[2]);
  positive_window_sums<double>(b, a, a.row[3], term);
  return {a.row[2], a.row[3]};
}

// ---- AP-loss (docs/algorithm.md) -------------------------------------------------------

APLOSS_HD_TEMPLATE
template <typename Block>
APLOSS_HD StageLosses ap_stage(const Block& b, const StageArrays& a, bool interpolate) {
  const int64_t num_pos = a.num_pos;
  const double* const fp = a.fp;
  double* const rank_sums = a.row[2];
  positive_rank_sums(b, a, rank_sums);
  double* const ip = a.row[3];
  b.for_each(num_pos, [=](int64_t i) {
    ip[i] = ap_precision(rank_sums[i] + 0.5, fp[i]);  // rank_pos = 1 + sum over k != i
  });
  if (interpolate) {  // the running maximum from the lowest-scored positive up
    b.template scan<double>(
        num_pos, [](double x, double y) { return y > x ? y : x; }, 0.0, true,
        [ip](int64_t i) { return ip[i]; }, [ip](int64_t i, double v) { ip[i] = v; });
  }
  const double weight = 1.0 / static_cast<double>(num_pos);
  double ip_sum = 0.0;
  b.for_each(num_pos, [&](int64_t i) {
    const double rank_pos = rank_sums[i] + 0.5;
    const APTerms t = ap_terms(rank_pos, fp[i], ap_precision(rank_pos, fp[i]), ip[i], weight);
    a.w[i] = t.w;
    write_positive_grad(a, i, t.own_grad);
    ip_sum += ip[i];
  });
  return {1.0 - b.sum(ip_sum) / static_cast<double>(num_pos), {0.0, 0.0}};
}

// ---- Rank & Sort loss (docs/ranking_family.md): each positive's target is a.value ------

APLOSS_HD_TEMPLATE
template <typename Block>
APLOSS_HD StageLosses rank_sort_stage(const Block& b, const StageArrays& a) {
  const int64_t num_pos = a.num_pos;
  const double* const fp = a.fp;
  const double* const y = a.value;
  const int64_t stride = a.row[3] - a.row[2];
  // Over every positive, self included: sum H, sum H (1 - y).
  const RankAndValueSums all = rank_and_value_sums(b, a, [y](int64_t k) { return 1.0 - y[k]; });
  double* const rank_pos = all.ranks;
  double* const errors_all = all.values;
  // Over the positives with a lower target: sum H (den(i)) and sum H (1 - y).
  double* const ones = a.row[4];
  double* const one_minus_y = a.row[5];
  double* const missorted = a.row[6];
  double* const errors_lower = a.row[7];
  b.for_each(num_pos, [=](int64_t x) {
    ones[x] = 1.0;
    one_minus_y[x] = 1.0 - y[x];
  });
  b.key_window_sums(a, y, ones, 2, stride, /*transpose=*/false, missorted);
  // Each positive's sorting error, and the share of it that goes to every positive with a
  // lower target, in proportion to H(s_k - s_i).
  const double weight = 1.0 / static_cast<double>(num_pos);
  double* const share = a.row[4];
  double* const sorting_error = a.row[5];
  double* const minus_y = a.row[3];
  b.for_each(num_pos, [=](int64_t x) {
    const double error = errors_all[x] / rank_pos[x] -
                         (errors_all[x] - errors_lower[x]) / (rank_pos[x] - missorted[x]);
    sorting_error[x] = error;
    share[x] = missorted[x] > kRankSortEps ? error / missorted[x] * weight : 0.0;
    minus_y[x] = -y[x];
  });
  // Received from every i with y_i > y_x, in proportion to H(s_x - s_i).
  double* const received = a.row[7];
  b.key_window_sums(a, minus_y, share, 1, stride, /*transpose=*/true, received);
  double ranking = 0.0, sorting = 0.0;
  b.for_each(num_pos, [&](int64_t x) {
    const double rank = rank_pos[x] + fp[x];
    const double ranking_error = fp[x] / rank;
    const bool ranked = fp[x] > kRankSortEps;
    const double own = (ranked ? ranking_error : 0.0) +
                       (missorted[x] > kRankSortEps ? sorting_error[x] : 0.0);
    write_positive_grad(a, x, received[x] - own * weight);
    // A negative j gets sum_i H(s_j - s_i) ranking_error(i) / fp(i) = H / rank(i).
    a.w[x] = ranked ? weight / rank : 0.0;
    ranking += ranking_error * weight;
    sorting += sorting_error[x] * weight;
  });
  ranking = b.sum(ranking);
  sorting = b.sum(sorting);
  return {ranking + sorting, {ranking, sorting}};
}

// ---- aLRP loss (docs/ranking_family.md): each positive's regression loss is a.value ----

APLOSS_HD_TEMPLATE
template <typename Block>
APLOSS_HD StageLosses alrp_stage(const Block& b, const StageArrays& a) {
  const double* const l = a.value;  // each positive's regression loss
  // Over every positive, self included: sum H, sum H l.
  const RankAndValueSums all = rank_and_value_sums(b, a, [l](int64_t k) { return l[k]; });
  const int64_t num_pos = a.num_pos;
  const double* const fp = a.fp;
  double* const rank_sums = all.ranks;
  double* const weighted = all.values;
  const double weight = 1.0 / static_cast<double>(num_pos);
  double* const per_rank = a.row[4];
  double cls = 0.0;
  b.for_each(num_pos, [&](int64_t i) {
    const double rank_pos = rank_sums[i] + 0.5;  // 1 + sum over k != i
    const double rank = rank_pos + fp[i];
    const double weighted_above = weighted[i] - 0.5 * l[i];  // over k != i
    const bool ranked = fp[i] > kALRPEps;
    const double error = ranked ? (weighted_above + fp[i]) / rank * weight : 0.0;
    // A negative j gets sum_i H(s_j - s_i) error(i) / fp(i).
    a.w[i] = ranked ? error / fp[i] : 0.0;
    write_positive_grad(a, i, -error);
    per_rank[i] = weight / rank;
    cls += (1.0 - rank_pos / rank) * weight;
  });
  cls = b.sum(cls);
  // loc_loss = sum_i weight / rank(i) (sum of l over the positives at or above i in
  // descending score order): l_k's weight is the running sum of weight / rank up to k.
  const int32_t* const memory_rank = a.memory_rank;
  double* const loc_weights = a.loc_weights;
  b.template scan<double>(
      num_pos, [](double x, double y) { return x + y; }, 0.0, true,
      [per_rank](int64_t i) { return per_rank[i]; },
      [memory_rank, loc_weights](int64_t i, double v) { loc_weights[memory_rank[i]] = v; });
  return {cls, {0.0, 0.0}};
}

}  // namespace aploss
