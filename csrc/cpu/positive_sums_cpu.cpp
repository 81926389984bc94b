// Sums among the positives on the CPU (../aploss/kernels.h, positive_window_sums): each
// positive's window among its segment's positives, then range sums of the values over
// it. Without keys the range sums come from prefix sums; with keys, from Fenwick trees
// over the columns, filled in key order so that a query sees exactly the positives that
// pass the key condition. O(P log P) either way.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <numeric>
#include <vector>

#include "../aploss/math.h"
#include "cpu_kernels.h"

namespace aploss {
namespace cpu {
namespace {

// Positive x against the positives m of its segment [begin, end) (columns): H(q_x - q_m)
// is 1 for m < lo, a - (q_m - shift_m) / (2 delta) for lo <= m < hi, 0 from hi on
// (math.h, find_window with s = q_x; the window holds x, so lo < hi).
struct PositiveWindow {
  int64_t begin, lo, hi, end;
  double a;
};

std::vector<PositiveWindow> positive_windows(const double* q, const double* shift,
                                             const at::Tensor& offsets, double delta) {
  const int64_t* off = offsets.const_data_ptr<int64_t>();
  std::vector<PositiveWindow> windows(static_cast<size_t>(off[offsets.numel() - 1]));
  for (int64_t u = 0; u + 1 < offsets.numel(); ++u) {
    const int64_t begin = off[u], end = off[u + 1];
    if (end == begin) continue;
    const StepParams params = make_step_params(delta, q[begin], shift + begin, end - begin);
    for (int64_t x = begin; x < end; ++x) {
      const Window w = find_window(q + begin, end - begin, q[x], params);
      windows[x] = {begin, begin + w.lo, begin + w.hi, end, w.a};
    }
  }
  return windows;
}

// Sums of v and of (q - shift) v over the columns [0, k) of what has been added.
struct ColumnSums {
  double v, qv;
};

// The window sum of x from range sums (`sums(k)`: ColumnSums over [0, k)).
template <typename Sums>
double window_sum(const PositiveWindow& w, double inv_2delta, bool transpose, Sums sums) {
  const ColumnSums at_begin = sums(w.begin), at_lo = sums(w.lo), at_hi = sums(w.hi);
  const double linear_v = at_hi.v - at_lo.v, linear_qv = at_hi.qv - at_lo.qv;
  if (transpose) return (at_lo.v - at_begin.v) + w.a * linear_v - linear_qv * inv_2delta;
  const ColumnSums at_end = sums(w.end);
  return (at_end.v - at_hi.v) + (1.0 - w.a) * linear_v + linear_qv * inv_2delta;
}

class Fenwick {
 public:
  explicit Fenwick(int64_t n) : tree_(static_cast<size_t>(n + 1), ColumnSums{0.0, 0.0}) {}
  void add(int64_t column, double v, double qv) {
    for (int64_t i = column + 1; i < static_cast<int64_t>(tree_.size()); i += i & -i) {
      tree_[i].v += v;
      tree_[i].qv += qv;
    }
  }
  ColumnSums prefix(int64_t k) const {  // columns [0, k)
    ColumnSums s{0.0, 0.0};
    for (int64_t i = k; i > 0; i -= i & -i) {
      s.v += tree_[i].v;
      s.qv += tree_[i].qv;
    }
    return s;
  }

 private:
  std::vector<ColumnSums> tree_;
};

void sums_without_keys(const std::vector<PositiveWindow>& windows, const double* q,
                       const double* shift, const double* v, double inv_2delta, bool transpose,
                       double* out) {
  const int64_t n = static_cast<int64_t>(windows.size());
  std::vector<ColumnSums> prefix(static_cast<size_t>(n + 1), ColumnSums{0.0, 0.0});
  for (int64_t m = 0; m < n; ++m) {
    prefix[m + 1] = {prefix[m].v + v[m], prefix[m].qv + (q[m] - shift[m]) * v[m]};
  }
  for (int64_t x = 0; x < n; ++x) {
    out[x] = window_sum(windows[x], inv_2delta, transpose, [&](int64_t k) { return prefix[k]; });
  }
}

// Positives in key order, ascending (below) or descending, ties in column order; runs of
// equal keys are added after their queries (below: keys[m] < keys[x]) or before them.
void sums_with_keys(const std::vector<PositiveWindow>& windows, const double* q,
                    const double* shift, const double* keys, const double* v, double inv_2delta,
                    bool below, bool transpose, double* out) {
  const int64_t n = static_cast<int64_t>(windows.size());
  std::vector<int64_t> order(static_cast<size_t>(n));
  std::iota(order.begin(), order.end(), int64_t(0));
  std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) {
    return below ? keys[a] < keys[b] : keys[a] > keys[b];
  });
  Fenwick tree(n);
  const auto add_run = [&](int64_t from, int64_t to) {
    for (int64_t t = from; t < to; ++t) {
      const int64_t m = order[t];
      tree.add(m, v[m], (q[m] - shift[m]) * v[m]);
    }
  };
  const auto query_run = [&](int64_t from, int64_t to) {
    for (int64_t t = from; t < to; ++t) {
      const int64_t x = order[t];
      out[x] = window_sum(windows[x], inv_2delta, transpose,
                          [&](int64_t k) { return tree.prefix(k); });
    }
  };
  for (int64_t from = 0; from < n;) {
    int64_t to = from + 1;
    while (to < n && keys[order[to]] == keys[order[from]]) ++to;
    if (below) {
      query_run(from, to);
      add_run(from, to);
    } else {
      add_run(from, to);
      query_run(from, to);
    }
    from = to;
  }
}

}  // namespace

at::Tensor positive_window_sums(const at::Tensor& positives, const at::Tensor& offsets,
                                const at::Tensor& keys, const at::Tensor& values, double delta,
                                bool below, bool transpose) {
  TORCH_CHECK(positives.dim() == 2 && positives.size(0) == 2 && positives.is_contiguous() &&
                  positives.scalar_type() == at::kDouble,
              "aploss positive_window_sums: positives must be contiguous (2, P) float64");
  const int64_t num_pos = positives.size(1);
  TORCH_CHECK(values.dim() == 2 && values.size(1) == num_pos && values.is_contiguous() &&
                  values.scalar_type() == at::kDouble,
              "aploss positive_window_sums: values must be contiguous (V, P) float64");
  TORCH_CHECK(offsets.scalar_type() == at::kLong && offsets.is_contiguous() &&
                  offsets.numel() >= 2 && offsets[-1].item<int64_t>() == num_pos,
              "aploss positive_window_sums: offsets must end at P");
  TORCH_CHECK(!keys.defined() || (keys.numel() == num_pos && keys.is_contiguous() &&
                                  keys.scalar_type() == at::kDouble),
              "aploss positive_window_sums: keys must be contiguous (P,) float64");
  at::Tensor out = at::empty_like(values);
  if (num_pos == 0) return out;
  const double* q = positives.const_data_ptr<double>();
  const double* shift = q + num_pos;
  const std::vector<PositiveWindow> windows = positive_windows(q, shift, offsets, delta);
  const double inv_2delta = 0.5 / delta;
  at::parallel_for(0, values.size(0), 1, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const double* v = values.const_data_ptr<double>() + r * num_pos;
      double* o = out.data_ptr<double>() + r * num_pos;
      if (keys.defined()) {
        sums_with_keys(windows, q, shift, keys.const_data_ptr<double>(), v, inv_2delta, below,
                       transpose, o);
      } else {
        sums_without_keys(windows, q, shift, v, inv_2delta, transpose, o);
      }
    }
  });
  return out;
}

}  // namespace cpu
}  // namespace aploss
