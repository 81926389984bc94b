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
    at::parallel_for(begin, end, 2048, [&](int64_t from, int64_t to) {
      for (int64_t x = from; x < to; ++x) {
        const Window w = find_window(q + begin, end - begin, q[x], params);
        windows[x] = {begin, begin + w.lo, begin + w.hi, end, w.a};
      }
    });
  }
  return windows;
}

constexpr int kMaxRows = 4;  // value rows per call (the family uses at most 2)

// For each value row r: sums of v_r and of (q - shift) v_r over the columns [0, k) of
// what has been added.
struct ColumnSums {
  double v[kMaxRows];
  double qv[kMaxRows];
};

// Rows of one call, column by column: what a column adds to ColumnSums.
struct Values {
  const double* q;
  const double* shift;
  const double* rows;  // (V, P)
  int count;           // V
  int64_t num_pos;

  void add_to(ColumnSums& sums, int64_t m) const {
    const double local = q[m] - shift[m];
    for (int r = 0; r < count; ++r) {
      const double v = rows[r * num_pos + m];
      sums.v[r] += v;
      sums.qv[r] += local * v;
    }
  }
};

// Every row's window sum of x from range sums (`sums(k)`: ColumnSums over [0, k)).
template <typename Sums>
void window_sums(const PositiveWindow& w, int64_t x, const Values& values, double inv_2delta,
                 bool transpose, double* out, Sums sums) {
  const ColumnSums at_lo = sums(w.lo), at_hi = sums(w.hi);
  const ColumnSums at_edge = transpose ? sums(w.begin) : sums(w.end);
  for (int r = 0; r < values.count; ++r) {
    const double linear_v = at_hi.v[r] - at_lo.v[r], linear_qv = at_hi.qv[r] - at_lo.qv[r];
    out[r * values.num_pos + x] =
        transpose ? (at_lo.v[r] - at_edge.v[r]) + w.a * linear_v - linear_qv * inv_2delta
                  : (at_edge.v[r] - at_hi.v[r]) + (1.0 - w.a) * linear_v + linear_qv * inv_2delta;
  }
}

// Fenwick trees of every row's v and (q - shift) v, interleaved per column: 2V doubles
// per node, so that the tree of 40,000 positives stays in L2 (its accesses are random).
class Fenwick {
 public:
  Fenwick(int64_t n, int count)
      : count_(count), tree_(static_cast<size_t>((n + 1) * 2 * count), 0.0) {}
  void add(int64_t column, const Values& values) {
    ColumnSums one{};
    values.add_to(one, column);
    const int64_t size = static_cast<int64_t>(tree_.size()) / (2 * count_);
    for (int64_t i = column + 1; i < size; i += i & -i) {
      double* node = tree_.data() + i * 2 * count_;
      for (int r = 0; r < count_; ++r) {
        node[2 * r] += one.v[r];
        node[2 * r + 1] += one.qv[r];
      }
    }
  }
  ColumnSums prefix(int64_t k) const {  // columns [0, k)
    ColumnSums s{};
    for (int64_t i = k; i > 0; i -= i & -i) {
      const double* node = tree_.data() + i * 2 * count_;
      for (int r = 0; r < count_; ++r) {
        s.v[r] += node[2 * r];
        s.qv[r] += node[2 * r + 1];
      }
    }
    return s;
  }

 private:
  int count_;
  std::vector<double> tree_;
};

void sums_without_keys(const std::vector<PositiveWindow>& windows, const Values& values,
                       double inv_2delta, bool transpose, double* out) {
  const int64_t n = values.num_pos;
  std::vector<ColumnSums> prefix(static_cast<size_t>(n + 1), ColumnSums{});
  for (int64_t m = 0; m < n; ++m) {
    prefix[m + 1] = prefix[m];
    values.add_to(prefix[m + 1], m);
  }
  at::parallel_for(0, n, 1024, [&](int64_t begin, int64_t end) {
    for (int64_t x = begin; x < end; ++x) {
      window_sums(windows[x], x, values, inv_2delta, transpose, out,
                  [&](int64_t k) { return prefix[k]; });
    }
  });
}

// Positives in key order, ascending (below) or descending, ties in column order; runs of
// equal keys are added after their queries (below: keys[m] < keys[x]) or before them.
void sums_with_keys(const std::vector<PositiveWindow>& windows, const Values& values,
                    const double* keys, double inv_2delta, bool below, bool transpose,
                    double* out) {
  const int64_t n = values.num_pos;
  std::vector<int64_t> order(static_cast<size_t>(n));
  std::iota(order.begin(), order.end(), int64_t(0));
  std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) {
    return below ? keys[a] < keys[b] : keys[a] > keys[b];
  });
  Fenwick tree(n, values.count);
  const auto add_run = [&](int64_t from, int64_t to) {
    for (int64_t t = from; t < to; ++t) tree.add(order[t], values);
  };
  const auto query_run = [&](int64_t from, int64_t to) {
    for (int64_t t = from; t < to; ++t) {
      const int64_t x = order[t];
      window_sums(windows[x], x, values, inv_2delta, transpose, out,
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

void key_window_sums(const double* q, const double* shift, int64_t num_pos, const double* keys,
                     const double* values, int rows, int64_t stride, double delta,
                     bool transpose, double* out) {
  TORCH_CHECK(rows >= 1 && rows <= kMaxRows, "aploss key_window_sums: 1 to ", kMaxRows, " rows");
  if (num_pos == 0) return;
  // The rows contiguous, as Values holds them.
  std::vector<double> in(static_cast<size_t>(rows * num_pos)), sums(in.size());
  for (int r = 0; r < rows; ++r) {
    std::copy(values + r * stride, values + r * stride + num_pos, in.begin() + r * num_pos);
  }
  const StepParams params = make_step_params(delta, q[0], shift, num_pos);
  std::vector<PositiveWindow> windows(static_cast<size_t>(num_pos));
  for (int64_t x = 0; x < num_pos; ++x) {
    const Window w = find_window(q, num_pos, q[x], params);
    windows[x] = {0, w.lo, w.hi, num_pos, w.a};
  }
  sums_with_keys(windows, Values{q, shift, in.data(), rows, num_pos}, keys, 0.5 / delta,
                 /*below=*/true, transpose, sums.data());
  for (int r = 0; r < rows; ++r) {
    std::copy(sums.begin() + r * num_pos, sums.begin() + (r + 1) * num_pos, out + r * stride);
  }
}

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
  TORCH_CHECK(values.size(0) <= kMaxRows, "aploss positive_window_sums: at most ", kMaxRows,
              " value rows");
  at::Tensor out = at::empty_like(values);
  if (num_pos == 0 || values.size(0) == 0) return out;
  const double* q = positives.const_data_ptr<double>();
  const Values rows{q, q + num_pos, values.const_data_ptr<double>(),
                    static_cast<int>(values.size(0)), num_pos};
  const std::vector<PositiveWindow> windows = positive_windows(q, q + num_pos, offsets, delta);
  const double inv_2delta = 0.5 / delta;
  if (keys.defined()) {
    sums_with_keys(windows, rows, keys.const_data_ptr<double>(), inv_2delta, below, transpose,
                   out.data_ptr<double>());
  } else {
    sums_without_keys(windows, rows, inv_2delta, transpose, out.data_ptr<double>());
  }
  return out;
}

}  // namespace cpu
}  // namespace aploss
