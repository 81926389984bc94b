// The CPU's Block for the positive stages (../aploss/positive_stages.h): every phase is a
// loop on the calling thread. P-sized work: no ATen ops.
#pragma once

#include <algorithm>
#include <cstdint>

#include "../aploss/positive_stages.h"
#include "../aploss/window_sums.h"
#include "cpu_kernels.h"

namespace aploss {
namespace cpu {

struct SerialBlock {
  template <typename F>
  void for_each(int64_t n, F&& f) const {
    for (int64_t i = 0; i < n; ++i) f(i);
  }

  template <typename T>
  T sum(T local) const {
    return local;
  }

  template <typename T, typename Op, typename Value, typename Store>
  T scan(int64_t n, Op op, T identity, bool inclusive, Value value, Store store) const {
    T running = identity;
    for (int64_t i = 0; i < n; ++i) {
      const T v = value(i);
      if (inclusive) {
        running = op(running, v);
        store(i, running);
      } else {
        store(i, running);
        running = op(running, v);
      }
    }
    return running;
  }

  // window_sums.h's difference arrays at k in [0, n): each source adds at its lo and hi,
  // in source order; then their prefix sums in place.
  template <typename C, typename LoOf, typename HiOf, typename Term>
  void difference_sums(int64_t n, int64_t sources, LoOf, HiOf, Term term, C* full, C* linear,
                       double* a) const {
    std::fill(full, full + n, C(0));
    std::fill(linear, linear + n, C(0));
    std::fill(a, a + n, 0.0);
    for (int64_t j = 0; j < sources; ++j) {
      const SourceTerm<C> t = term(j);
      if (t.count == C(0)) continue;
      if (t.lo < n) {
        full[t.lo] += t.count;
        if (t.hi > t.lo) {
          linear[t.lo] += t.count;
          a[t.lo] += t.sum_a;
        }
      }
      if (t.hi > t.lo && t.hi < n) {
        linear[t.hi] -= t.count;
        a[t.hi] -= t.sum_a;
      }
    }
    for (int64_t k = 1; k < n; ++k) {
      full[k] += full[k - 1];
      linear[k] += linear[k - 1];
      a[k] += a[k - 1];
    }
  }

  // Sums under a second key: a sweep in key order, O(P log P) (positive_sums_cpu.cpp).
  void key_window_sums(const StageArrays& a, const double* keys, const double* values, int rows,
                       int64_t stride, bool transpose, double* out) const {
    cpu::key_window_sums(a.q, a.shift, a.window_lo, a.window_hi, a.num_pos, keys, values, rows,
                         stride, a.delta, transpose, out);
  }
};

}  // namespace cpu
}  // namespace aploss
