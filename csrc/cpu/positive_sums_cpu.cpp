// Sums among the positives on the CPU (../aploss/kernels.h, positive_window_sums): each
// positive's window among its segment's positives, then range sums of the values over
// it. Without keys the range sums come from prefix sums; with keys, from a sweep in key
// order that adds each positive to a Fenwick tree over blocks of columns, so that a query
// sees exactly the positives that pass the key condition (AddedColumnSums). O(P log P).
#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <memory>
#include <vector>

#include "../aploss/math.h"
#include "cpu_kernels.h"
#include "stable_order.h"

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
  const double* rows;  // V rows of P, `stride` apart
  int count;           // V
  int64_t num_pos;
  int64_t stride;

  void add_to(ColumnSums& sums, int64_t m) const {
    const double local = q[m] - shift[m];
    for (int r = 0; r < count; ++r) {
      const double v = rows[r * stride + m];
      sums.v[r] += v;
      sums.qv[r] += local * v;
    }
  }
};

// Every row's window sum of x from range sums (`sums(k)`: ColumnSums over [0, k)), into
// out[r * stride + x].
template <typename Sums>
void window_sums(const PositiveWindow& w, int64_t x, const Values& values, double inv_2delta,
                 bool transpose, double* out, int64_t stride, Sums sums) {
  const ColumnSums at_lo = sums(w.lo), at_hi = sums(w.hi);
  const ColumnSums at_edge = transpose ? sums(w.begin) : sums(w.end);
  for (int r = 0; r < values.count; ++r) {
    const double linear_v = at_hi.v[r] - at_lo.v[r], linear_qv = at_hi.qv[r] - at_lo.qv[r];
    out[r * stride + x] =
        transpose ? (at_lo.v[r] - at_edge.v[r]) + w.a * linear_v - linear_qv * inv_2delta
                  : (at_edge.v[r] - at_hi.v[r]) + (1.0 - w.a) * linear_v + linear_qv * inv_2delta;
  }
}

// Range sums over the columns added so far, for the sweep in key order of
// sums_with_keys: when a query is made, the added columns are exactly those that pass
// its key condition. A query's columns [0, k) split into whole blocks of kColumnBlock
// columns, before k's block, and the columns of k's block before k. The whole blocks are a
// Fenwick tree over the blocks, small enough to stay in L1/L2 (a tree over the columns
// themselves outgrows L2 at P = 40,000, and its random accesses then cost a cache miss
// each); each column holds the sum of the added columns of its block before it, which an
// addition updates (at most kColumnBlock - 1 contiguous columns). A query is then one
// column's sums and the tree's nodes: no key is read.
template <int kRows>
class AddedColumnSums {
 public:
  static constexpr int64_t kColumnBlock = 8;
  static constexpr int kWidth = 2 * kRows;  // v and (q - shift) v of each row

  explicit AddedColumnSums(int64_t num_pos)
      : num_pos_(num_pos),
        before_(static_cast<size_t>(num_pos * kWidth), 0.0),
        tree_(static_cast<size_t>((num_pos / kColumnBlock + 2) * kWidth), 0.0) {}

  // Column m, whose v and (q - shift) v of each row are `term`, passes the key condition
  // from now on.
  void add(int64_t m, const double* term) {
    for (int c = 0; c < kWidth; ++c) total_[c] += term[c];
    const int64_t block_end = std::min(num_pos_, (m / kColumnBlock + 1) * kColumnBlock);
    for (int64_t k = m + 1; k < block_end; ++k) {
      double* sums = before_.data() + k * kWidth;
      for (int c = 0; c < kWidth; ++c) sums[c] += term[c];
    }
    const int64_t nodes = static_cast<int64_t>(tree_.size()) / kWidth;
    for (int64_t i = m / kColumnBlock + 1; i < nodes; i += i & -i) {
      double* node = tree_.data() + i * kWidth;
      for (int c = 0; c < kWidth; ++c) node[c] += term[c];
    }
  }

  // Starts the reads of a query at k, or of the addition of column m.
  void prefetch_query(int64_t k) const {
    if (k < num_pos_) __builtin_prefetch(before_.data() + k * kWidth);
  }
  void prefetch_add(int64_t m) const {
    const int64_t last = std::min(num_pos_, (m / kColumnBlock + 1) * kColumnBlock) - 1;
    if (m < last) {
      __builtin_prefetch(before_.data() + (m + 1) * kWidth, 1);
      __builtin_prefetch(before_.data() + last * kWidth, 1);
    }
  }

  // Sums over the added columns of [0, k).
  ColumnSums prefix(int64_t k) const {
    if (k == num_pos_) return as_sums(total_);
    double s[kWidth];
    const double* in_block = before_.data() + k * kWidth;
    for (int c = 0; c < kWidth; ++c) s[c] = in_block[c];
    for (int64_t i = k / kColumnBlock; i > 0; i -= i & -i) {
      const double* node = tree_.data() + i * kWidth;
      for (int c = 0; c < kWidth; ++c) s[c] += node[c];
    }
    return as_sums(s);
  }

 private:
  static ColumnSums as_sums(const double* s) {
    ColumnSums out{};
    for (int r = 0; r < kRows; ++r) {
      out.v[r] = s[2 * r];
      out.qv[r] = s[2 * r + 1];
    }
    return out;
  }

  int64_t num_pos_;
  double total_[kWidth] = {};   // over every added column
  std::vector<double> before_;  // per column: v and (q - shift) v of every row, interleaved,
                                // over its block's added columns before it
  std::vector<double> tree_;    // per block: the same sums over its added columns
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
      window_sums(windows[x], x, values, inv_2delta, transpose, out, values.stride,
                  [&](int64_t k) { return prefix[k]; });
    }
  });
}

// Runs of equal keys are added after their queries (below: keys[m] < keys[x]) or before
// them. The key order is random in columns: every positive's window, terms and key are
// gathered in that order first, and the results scattered back last (loops whose random
// accesses overlap), so that the sweep itself reads at random only what it must: the
// columns' sums at its queries and additions, their reads started ahead of time.
// window_of(x): positive x's PositiveWindow. Into out[r * values.stride + x]. (The
// buffers, each written before it is read, are not value-initialised.)
template <int kRows, typename WindowOf>
void sums_with_keys(const WindowOf& window_of, const Values& values, const double* keys,
                    double inv_2delta, bool below, bool transpose, double* out) {
  constexpr int kWidth = AddedColumnSums<kRows>::kWidth;
  const int64_t n = values.num_pos;
  const std::vector<int64_t> order = stable_order(keys, n, /*descending=*/!below);
  const std::unique_ptr<PositiveWindow[]> swept_windows(new PositiveWindow[n]);
  const std::unique_ptr<double[]> swept_keys(new double[n]), terms(new double[n * kWidth]);
  for (int64_t t = 0; t < n; ++t) {
    const int64_t x = order[t];
    swept_windows[t] = window_of(x);
    swept_keys[t] = keys[x];
    ColumnSums one{};
    values.add_to(one, x);
    for (int r = 0; r < kRows; ++r) {
      terms[t * kWidth + 2 * r] = one.v[r];
      terms[t * kWidth + 2 * r + 1] = one.qv[r];
    }
  }
  AddedColumnSums<kRows> added(n);
  const std::unique_ptr<double[]> results(new double[kRows * n]);  // (kRows, n) in key order
  constexpr int64_t kAhead = 16;
  const auto add_run = [&](int64_t from, int64_t to) {
    for (int64_t t = from; t < to; ++t) {
      if (t + kAhead < n) added.prefetch_add(order[t + kAhead]);
      added.add(order[t], terms.get() + t * kWidth);
    }
  };
  const auto query_run = [&](int64_t from, int64_t to) {
    for (int64_t t = from; t < to; ++t) {
      if (t + kAhead < n) {
        added.prefetch_query(swept_windows[t + kAhead].lo);
        added.prefetch_query(swept_windows[t + kAhead].hi);
      }
      window_sums(swept_windows[t], t, values, inv_2delta, transpose, results.get(), n,
                  [&](int64_t k) { return added.prefix(k); });
    }
  };
  for (int64_t from = 0; from < n;) {
    int64_t to = from + 1;
    while (to < n && swept_keys[to] == swept_keys[from]) ++to;
    if (below) {
      query_run(from, to);
      add_run(from, to);
    } else {
      add_run(from, to);
      query_run(from, to);
    }
    from = to;
  }
  for (int r = 0; r < kRows; ++r) {
    for (int64_t t = 0; t < n; ++t) out[r * values.stride + order[t]] = results[r * n + t];
  }
}

// sums_with_keys for values.count rows (1 to kMaxRows), each width its own loops.
template <typename WindowOf>
void sums_with_keys(const WindowOf& window_of, const Values& values, const double* keys,
                    double inv_2delta, bool below, bool transpose, double* out) {
  switch (values.count) {
    case 1: return sums_with_keys<1>(window_of, values, keys, inv_2delta, below, transpose, out);
    case 2: return sums_with_keys<2>(window_of, values, keys, inv_2delta, below, transpose, out);
    case 3: return sums_with_keys<3>(window_of, values, keys, inv_2delta, below, transpose, out);
    default: return sums_with_keys<4>(window_of, values, keys, inv_2delta, below, transpose, out);
  }
}

}  // namespace

void key_window_sums(const double* q, const double* shift, const int32_t* window_lo,
                     const int32_t* window_hi, int64_t num_pos, const double* keys,
                     const double* values, int rows, int64_t stride, double delta,
                     bool transpose, double* out) {
  TORCH_CHECK(rows >= 1 && rows <= kMaxRows, "aploss key_window_sums: 1 to ", kMaxRows, " rows");
  if (num_pos == 0) return;
  const StepParams params = make_step_params(delta, q[0], shift, num_pos);
  const auto window_of = [&](int64_t x) {
    const int64_t lo = window_lo[x], hi = window_hi[x];
    return PositiveWindow{0, lo, hi, num_pos, window_offset(q[x], lo, hi, params)};
  };
  sums_with_keys(window_of, Values{q, shift, values, rows, num_pos, stride}, keys, 0.5 / delta,
                 /*below=*/true, transpose, out);
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
                    static_cast<int>(values.size(0)), num_pos, num_pos};
  const std::vector<PositiveWindow> windows = positive_windows(q, q + num_pos, offsets, delta);
  const double inv_2delta = 0.5 / delta;
  if (keys.defined()) {
    sums_with_keys([&windows](int64_t x) { return windows[x]; }, rows,
                   keys.const_data_ptr<double>(), inv_2delta, below, transpose,
                   out.data_ptr<double>());
  } else {
    sums_without_keys(windows, rows, inv_2delta, transpose, out.data_ptr<double>());
  }
  return out;
}

}  // namespace cpu
}  // namespace aploss
