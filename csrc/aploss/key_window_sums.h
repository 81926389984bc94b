// Window sums under a second key (positive_stages.h, key_window_sums) as sums of range
// sums. For positive x, with its window [lo, hi) among the sorted positives and offset a
// (math.h, Window), and G_v(c), G_qv(c) the sums of v_m and of (q_m - shift_m) v_m over
// the positives m < c with keys[m] < keys[x]:
//
//   sum_m H(q_m - q_x) v_m = G_v(P) - a G_v(hi) - (1 - a) G_v(lo)
//                            + (G_qv(hi) - G_qv(lo)) / (2 delta)
//   sum_m H(q_x - q_m) v_m = (1 - a) G_v(lo) + a G_v(hi) - (G_qv(hi) - G_qv(lo)) / (2 delta)
//
// (H is 1 below the window, linear in it, 0 above it). The GPU gets each G(c) from a
// tree over the columns (a wavelet tree): at level l the columns of every node of 2^l
// columns are sorted by key, and [0, c) is the union of one node per set bit of c, the
// left halves on the path from the root down to c. Going down, a query carries the count
// of its node's keys below its own; the part of it in the left half is a difference of the
// level's counts of left-half columns, so a query costs O(1) per level, O(P log P) in all.
#pragma once

#include <cstdint>

#include "math.h"

namespace aploss {

// The weights of G_v and G_qv at one column bound of a query.
struct KeyQuery {
  int64_t column;
  double v, qv;
};

// The three column bounds of positive x's sum, its segment being the columns [begin, end)
// (one ranking: 0 and P) and G counting from column 0: G_v(P) above is G_v(end) -
// G_v(begin), and the transposed sum subtracts G_v(begin) from G_v(lo).
struct KeyQueries {
  KeyQuery at[3];
};

APLOSS_HD KeyQueries key_queries(int64_t begin, int64_t lo, int64_t hi, int64_t end, double a,
                                 double inv_2delta, bool transpose) {
  if (transpose) {
    return {{{lo, 1.0 - a, inv_2delta}, {hi, a, -inv_2delta}, {begin, -1.0, 0.0}}};
  }
  return {{{lo, -(1.0 - a), -inv_2delta}, {hi, -a, inv_2delta}, {end, 1.0, 0.0}}};
}

// The number of columns of a run (sorted by key) whose key is below `key`.
APLOSS_HD int64_t keys_before(const int32_t* run, int64_t length, const double* keys, double key) {
  int64_t lo = 0, count = length;
  while (count > 0) {
    const int64_t half = count / 2;
    if (keys[run[lo + half]] < key) {
      lo += half + 1;
      count -= half + 1;
    } else {
      count = half;
    }
  }
  return lo;
}

// Positions [from, to) in a level's order.
struct RunRange {
  int64_t from, to;
};

// Levels of the tree over n columns: the root (level key_levels(n)) holds 2^level > n.
APLOSS_HD int key_levels(int64_t n) {
  int levels = 0;
  while ((int64_t(1) << levels) <= n) ++levels;
  return levels;
}

// Whether a column is in the left half of its node at `level` (>= 1).
APLOSS_HD bool in_left_half(int64_t column, int level) {
  return ((column >> (level - 1)) & 1) == 0;
}

// Where the column at position i of level `level` (>= 1) goes at level - 1: its node split
// stably into its halves. left_before[i]: the left-half columns at the level's positions
// [0, i).
template <typename Count>  // int32_t, or double (exact below 2^53)
APLOSS_HD int64_t split_position(int64_t i, int64_t column, int level, const Count* left_before) {
  const int64_t node = (i >> level) << level;
  const int64_t lefts = static_cast<int64_t>(left_before[i] - left_before[node]);
  return in_left_half(column, level) ? node + lefts
                                     : node + (int64_t(1) << (level - 1)) + (i - node - lefts);
}

// One level down for the query at column bound c: `count` (the keys of c's node at `level`
// below the query's key) becomes that of c's node at level - 1. Returns the positions, at
// level - 1, of the left half's passing columns where [0, c) holds that half (else empty):
// keys[m] < key (below) or keys[m] >= key.
template <typename Count>
APLOSS_HD RunRange descend(int64_t c, int level, const Count* left_before, bool below,
                           int64_t& count) {
  const int64_t node = (c >> level) << level, half = int64_t(1) << (level - 1);
  const int64_t left = static_cast<int64_t>(left_before[node + count] - left_before[node]);
  if ((c & half) == 0) {
    count = left;
    return {node, node};
  }
  count -= left;
  return below ? RunRange{node, node + left} : RunRange{node + left, node + half};
}

}  // namespace aploss
