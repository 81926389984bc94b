// The CPU's Block for the positive stages (../aploss/positive_stages.h): every phase is a
// loop on the calling thread. P-sized work: no threads, no ATen ops.
#pragma once

#include <cstdint>

#include "../aploss/window_sums.h"

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

  // window_sums.h's difference arrays at k in [0, n), summed in place over k.
  template <typename C, typename LoRange, typename HiRange, typename Term>
  void difference_runs(int64_t n, LoRange lo_range, HiRange hi_range, Term term, C* full,
                       C* linear, double* a) const {
    DifferenceAt<C> prefix{C(0), C(0), 0.0};
    for (int64_t k = 0; k < n; ++k) {
      DifferenceAt<C> d{C(0), C(0), 0.0};
      const auto [lo_begin, lo_end] = lo_range(k);
      for (int64_t j = lo_begin; j < lo_end; ++j) add_source(d, term(j), k, true);
      const auto [hi_begin, hi_end] = hi_range(k);
      for (int64_t j = hi_begin; j < hi_end; ++j) add_source(d, term(j), k, false);
      prefix.full += d.full;
      prefix.linear += d.linear;
      prefix.a += d.a;
      full[k] = prefix.full;
      linear[k] = prefix.linear;
      a[k] = prefix.a;
    }
  }
};

}  // namespace cpu
}  // namespace aploss
