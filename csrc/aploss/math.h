// Per-entry math of AP-loss, shared unchanged by the CPU and CUDA kernels.
//
// Everything here is a pure inline function marked APLOSS_HD, so the CPU tests
// exercise exactly the code the GPU runs. Notation follows ../shared/algorithm.md:
// q[0..P) are the positives' scores sorted ascending, in float64.
#pragma once

#include <cstdint>

#if defined(__CUDACC__) || defined(__HIPCC__)
#define APLOSS_HD __host__ __device__ __forceinline__
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

// #{ i : q[i] <= t }  (upper bound). Branch-light so it runs the same on both sides.
APLOSS_HD int64_t count_at_most(const double* q, int64_t n, double t) {
  int64_t first = 0;
  while (n > 0) {
    const int64_t half = n >> 1;
    if (q[first + half] <= t) {
      first += half + 1;
      n -= half + 1;
    } else {
      n = half;
    }
  }
  return first;
}

// #{ i : q[i] < t }  (lower bound).
APLOSS_HD int64_t count_below(const double* q, int64_t n, double t) {
  int64_t first = 0;
  while (n > 0) {
    const int64_t half = n >> 1;
    if (q[first + half] < t) {
      first += half + 1;
      n -= half + 1;
    } else {
      n = half;
    }
  }
  return first;
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

// Pass 1 contributions of one negative to the three difference arrays (length P+1):
//   d1: +1 at 0, -1 at lo          -> prefix sum C1(i) = #{negatives with H = 1 for i}
//   da: +a at lo, -a at hi          -> prefix sum A(i)
//   db: +1 at lo, -1 at hi          -> prefix sum B(i)
//   fp(i) = C1(i) + A(i) - B(i) * (q_i - shift) / (2 delta)
// Empty ranges add nothing, so x + a - a rounding never enters. `add` is the
// accumulation primitive: a plain += on the CPU, a shared-memory atomicAdd on the GPU.
// The "+1 at 0" of d1 is returned (1 or 0) so callers can count it in a register.
template <typename Add>
APLOSS_HD int negative_contributions(const Window& w, double* d1, double* da, double* db, Add add) {
  if (w.hi > w.lo) {
    add(da + w.lo, w.a);
    add(da + w.hi, -w.a);
    add(db + w.lo, 1.0);
    add(db + w.hi, -1.0);
  }
  if (w.lo > 0) {
    add(d1 + w.lo, -1.0);
    return 1;
  }
  return 0;
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
