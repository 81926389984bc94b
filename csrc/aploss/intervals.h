// The windows of every score as intervals between precomputed thresholds, in the
// scores' own precision. Shared unchanged by the CPU and CUDA kernels (APLOSS_HD).
//
// lo(s) = #{i : s - q_i >= delta} and hi(s) = #{i : s - q_i > -delta} (math.h) are
// evaluated in float64, but the scores themselves are keys of a narrower type: float for
// float32, float16 and bfloat16 scores (exact conversions), double for float64. Each
// predicate is monotone in s, so over the keys it holds exactly from a smallest key on,
// its threshold:
//
//   lo(s) = #{i : s >= full_threshold(q_i)}     hi(s) = #{i : s >= nonzero_threshold(q_i)}
//
// With the 2P thresholds merged into U_0 <= U_1 <= ... <= U_{T-1} (the CPU keeps equal
// keys once; the GPU keeps them all, so that its sizes depend on P alone, and an interval
// between equal keys is empty), every key s lies in one interval m(s) = #{k : U_k <= s},
// and all keys of an interval share their window: lo and hi are tables over m. Finding
// a window is then one count over sorted keys, compared in the key type, with results
// identical to the float64 predicates by construction (no rounding margin, no
// verification).
//
// The count goes through buckets: key_bucket(s) = clamp(trunc((s - origin) * scale)) is
// monotone in s (each operation is), and a bucket's first threshold is
// #{k : key_bucket(U_k) < b}, computed with the same function. So every threshold of an
// earlier bucket is <= s and every threshold of a later bucket is > s: only the
// thresholds of s's own bucket are compared. Each bucket's record holds its first
// threshold's index and the next thresholds themselves (one memory access per score);
// with a few buckets per threshold, those settle almost every score (direct_interval),
// and the rest search their bucket (interval_of).
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>

#include "math.h"

namespace aploss {

// The key of a score type.
template <typename scalar_t>
struct ScoreKey {
  using type = float;
};
template <>
struct ScoreKey<double> {
  using type = double;
};

// Keys as order-preserving integers (-0.0 just below +0.0), so that a search can step
// through every key between two others.
template <typename K>
struct KeyBits;
template <>
struct KeyBits<float> {
  using type = int32_t;
  using unsigned_type = uint32_t;
};
template <>
struct KeyBits<double> {
  using type = int64_t;
  using unsigned_type = uint64_t;
};

template <typename K>
APLOSS_HD typename KeyBits<K>::type ordered_bits(K key) {
  using I = typename KeyBits<K>::type;
  I bits;
  memcpy(&bits, &key, sizeof bits);
  return bits >= 0 ? bits : bits ^ std::numeric_limits<I>::max();
}

template <typename K>
APLOSS_HD K key_of_ordered_bits(typename KeyBits<K>::type ordered) {
  using I = typename KeyBits<K>::type;
  const I bits = ordered >= 0 ? ordered : ordered ^ std::numeric_limits<I>::max();
  K key;
  memcpy(&key, &bits, sizeof key);
  return key;
}

// The smallest key x in [lowest finite, +inf] with holds(x), for `holds` monotone over
// the keys and true at +inf (+inf: no finite key holds), starting from a guess close to
// it: a few steps from the guess, else bisection over the ordered bits.
template <typename K, typename Holds>
APLOSS_HD K smallest_key_where(double guess, Holds holds) {
  using I = typename KeyBits<K>::type;
  using U = typename KeyBits<K>::unsigned_type;
  const I lowest = ordered_bits<K>(-std::numeric_limits<K>::max());
  const I highest = ordered_bits<K>(std::numeric_limits<K>::infinity());
  const auto at = [&](I x) { return x >= highest || holds(key_of_ordered_bits<K>(x)); };
  const K rounded = static_cast<K>(guess);  // +-inf when out of range
  I x = rounded == rounded ? ordered_bits<K>(rounded) : highest;
  x = x < lowest ? lowest : (x > highest ? highest : x);
  constexpr int kSteps = 4;
  I below, above;  // !at(below) (or below = lowest - 1), at(above)
  if (at(x)) {
    for (int k = 0; k < kSteps; ++k, --x) {
      if (x == lowest || !at(x - 1)) return key_of_ordered_bits<K>(x);
    }
    below = lowest - 1, above = x;
  } else {
    for (int k = 0; k < kSteps; ++k) {
      if (at(++x)) return key_of_ordered_bits<K>(x);
    }
    below = x, above = highest;
  }
  while (static_cast<U>(above) - static_cast<U>(below) > 1) {
    const I mid = below + static_cast<I>((static_cast<U>(above) - static_cast<U>(below)) / 2);
    if (at(mid)) {
      above = mid;
    } else {
      below = mid;
    }
  }
  return key_of_ordered_bits<K>(above);
}

// The key from which H(s - q) = 1, and the key from which H(s - q) > 0 (math.h's
// FullStep and NonzeroStep, evaluated in float64 on the key).
template <typename K>
APLOSS_HD K full_threshold(double q, double delta) {
  return smallest_key_where<K>(q + delta, [&](K s) {
    return FullStep{static_cast<double>(s), delta}(q);
  });
}
template <typename K>
APLOSS_HD K nonzero_threshold(double q, double delta) {
  return smallest_key_where<K>(q - delta, [&](K s) {
    return NonzeroStep{static_cast<double>(s), delta}(q);
  });
}

// Thresholds compared per score before its bucket is searched.
constexpr int kIntervalCandidates = 2;
// +inf keys after the last threshold, so that a bucket's record can always hold the
// thresholds after its first.
constexpr int kThresholdPadding = kIntervalCandidates + 1;
// Buckets per threshold: with 2, a score's record settles it in all but about 1% of
// the init regime's scores (1 leaves about 5% to a search, 4 doubles the records).
constexpr int64_t kBucketsPerThreshold = 2;
// At most this many buckets: small integers, and exact in float.
constexpr int64_t kMaxIntervalBuckets = int64_t(1) << 22;

// A bucket: U_first .. U_{first+2} (+inf past the last threshold) and first, the number
// of thresholds in earlier buckets. 16 bytes for float keys, 32 for double.
template <typename K>
struct BucketRecord {
  K next[kIntervalCandidates + 1];
  typename KeyBits<K>::unsigned_type first;
};

template <typename K>
struct IntervalIndex {
  const K* thresholds;             // `count` keys, non-decreasing, then kThresholdPadding +inf
  int64_t count;                   // T: intervals 0..T
  const BucketRecord<K>* records;  // buckets + 1; the last one's first is T
  int64_t buckets;                 // 1 .. kMaxIntervalBuckets
  K origin;
  K scale;                         // buckets per unit of key, 0 for a single bucket
};

// The bucket of key s: monotone in s, the same on every device (no FMA can form: one
// subtraction, one product). NaN goes to bucket 0.
template <typename K>
APLOSS_HD int64_t key_bucket(const IntervalIndex<K>& ix, K s) {
  K x = (s - ix.origin) * ix.scale;
  x = x > K(0) ? x : K(0);
  const K last = static_cast<K>(ix.buckets - 1);
  x = x < last ? x : last;
  return static_cast<int64_t>(x);
}

// m(s) when its bucket's record settles it (the threshold after the candidates is above
// s); -1 otherwise. Finite s only.
template <typename K>
APLOSS_HD int64_t direct_interval(const IntervalIndex<K>& ix, K s) {
  const BucketRecord<K>& r = ix.records[key_bucket(ix, s)];
  if (r.next[kIntervalCandidates] <= s) return -1;
  int64_t m = r.first;
  APLOSS_UNROLL
  for (int c = 0; c < kIntervalCandidates; ++c) m += r.next[c] <= s ? 1 : 0;
  return m;
}

// m(s) = #{k : U_k <= s} for a finite key s.
template <typename K>
APLOSS_HD int64_t interval_of(const IntervalIndex<K>& ix, K s) {
  const int64_t m = direct_interval(ix, s);
  if (m >= 0) return m;
  const int64_t b = key_bucket(ix, s);
  const int64_t first = ix.records[b].first + kIntervalCandidates + 1;  // those are <= s
  const int64_t end = ix.records[b + 1].first;
  return first + partition_point(ix.thresholds + first, end - first, [s](K u) { return u <= s; });
}

// Pass 2 of a negative in interval m >= 1 with window (lo, hi): its gradient is affine
// in the score over the interval, and is evaluated from the interval's left end, its
// first key U_{m-1}, in the key type:
//
//   g(s) = at_left + slope (s - left),   left = U_{m-1} <= s
//   slope   = scale (W(hi) - W(lo)) / (2 delta)
//   at_left = g(left) = scale (W(lo) + a(left) (W(hi) - W(lo)) - (Q(hi) - Q(lo)) / (2 delta))
//
// (math.h's negative_gradient with a = (s - shift) / (2 delta) + 1/2, `scale` the
// incoming gradient). W never decreases, so at_left and slope (s - left) have the sign of
// `scale` and their sum cannot cancel: in float32 each gradient is within a few float32
// ulps, with at_left computed in float64. Interval 0 (below every window) has g = 0.
//
// Far-apart finite scores: s - left can overflow the key type (2 delta wider than its
// range), and 0 * inf is NaN. So the piece evaluates slope (s - left) as
// (slope / unit) (s unit - left unit) with unit = 1/2: the same number whenever s - left
// is finite (halving and doubling are exact), and finite for every finite s. A left end
// of -inf (a window reaching below the key type's range) moves to its lowest finite value
// (interval_anchor). Where slope / unit would overflow (delta tiny against the incoming
// gradient), unit is the power of two that keeps it finite: the interval is then at most
// about 2 delta wide, near 0, so s unit stays finite; an interval of no width in the key
// type (every score in it is `left`) and a flat one keep g = at_left.
template <typename K>
APLOSS_HD K interval_anchor(K left) {
  const K lowest = -std::numeric_limits<K>::max();
  return left >= lowest ? left : lowest;
}

// (s - anchor) / (2 delta) for s >= anchor in the key type, without overflow
// (inv_delta = 1 / delta, finite): 0 where s is the anchor.
template <typename K>
APLOSS_HD K offset_in_interval(K s, K anchor, K inv_delta) {
  return (s * K(0.5) - anchor * K(0.5)) * inv_delta;
}

// (x - y) / (2 delta) in float64 for finite x and y, without overflow.
APLOSS_HD double scaled_difference(double x, double y, double inv_2delta) {
  return (x * 0.5 - y * 0.5) * (2.0 * inv_2delta);
}

template <typename K>
struct alignas(16) IntervalGradient {
  K at_left;
  K slope_per_unit;  // slope / unit
  K left_in_units;   // left * unit
  K unit;            // 1/2, or a larger power of two (above)
};

// `w_begin`: W at the first positive of the interval's segment (grouped rankings: W runs
// across segments, so a segment's own prefix sums are differences), 0 for one ranking.
template <typename K>
APLOSS_HD IntervalGradient<K> interval_gradient(int64_t lo, int64_t hi, double shift, K left,
                                                K right, const double* W, const double* Q,
                                                double inv_2delta, double scale,
                                                double w_begin = 0.0) {
  const double w_lo = W[lo] - w_begin;
  if (hi <= lo) return {static_cast<K>(scale * w_lo), K(0), K(0), K(0)};
  left = interval_anchor(left);
  const double w_diff = W[hi] - W[lo];
  const double a = scaled_difference(static_cast<double>(left), shift, inv_2delta) + 0.5;
  const double at_left = w_lo + a * w_diff - (Q[hi] - Q[lo]) * inv_2delta;
  const K value = static_cast<K>(scale * at_left);
  const double slope = scale * (w_diff * inv_2delta);
  const double largest = static_cast<double>(std::numeric_limits<K>::max());
  double unit = 0.5;
  if (!(2.0 * fabs(slope) <= largest)) {
    if (!(right > left)) return {value, K(0), K(0), K(0)};
    unit = ldexp(1.0, ilogb(fabs(slope) / largest) + 2);  // slope / unit < largest / 2
  }
  return {value, static_cast<K>(slope / unit), static_cast<K>(left * unit),
          static_cast<K>(unit)};
}

template <typename K>
APLOSS_HD K gradient_in_interval(const IntervalGradient<K>& t, K s) {
  return t.at_left + t.slope_per_unit * (s * t.unit - t.left_in_units);
}

}  // namespace aploss
