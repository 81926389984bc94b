// Deterministic pass 1 of one ranking (../deterministic_pass1.cpp): instead of adding its
// contributions with atomics, each entry writes down where they go, and ATen's
// deterministic index_add sums them in a fixed order. Shared unchanged by the CPU and
// CUDA record kernels:
//   d1: +full at 0, -full at lo        (full = lo > 0)
//   da: +a at lo, -a at hi
//   db: +1 at lo, -1 at hi             (when hi > lo)
// An entry that contributes nothing writes {0, 0, 0}; a non-finite negative writes
// a = NaN, so the sums (hence the loss) cannot be silently wrong. Grouped rankings need
// no records: their pass 1 is the same in every thread order on both devices.
#pragma once

#include "math.h"

namespace aploss {

struct PassOneRecord {
  double lo, hi, a;
};

template <typename label_t>
APLOSS_HD PassOneRecord pass1_record(label_t label, double s, const double* q,
                                     const double* cluster_shift, int64_t num_pos,
                                     double delta) {
  PassOneRecord r{0.0, 0.0, 0.0};
  if (classify_label(label) != kNegative) return r;
  if (!is_finite_score(s)) {
    r.a = s - s;  // NaN for NaN and +-Inf
    return r;
  }
  if (num_pos <= 0) return r;
  const StepParams p = make_step_params(delta, q[0], cluster_shift, num_pos);
  if (is_pruned(s, p)) return r;
  const Window w = find_window(q, num_pos, s, p);
  r.lo = static_cast<double>(w.lo);
  r.hi = static_cast<double>(w.hi);
  r.a = w.a;
  return r;
}

}  // namespace aploss
