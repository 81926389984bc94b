// Sorted (two-pass, O(N log P)) evaluation on the CPU.
#include <ATen/ATen.h>

#include <algorithm>
#include <atomic>
#include <limits>
#include <vector>

#include "../aploss/dispatch.h"
#include "../aploss/errors.h"
#include "../aploss/kernels.h"
#include "../aploss/math.h"
#include "window_blocks_cpu.h"
#include "window_index_cpu.h"
#include "chunks.h"
#include "cpu_kernels.h"

namespace aploss {
namespace cpu {

namespace {
std::atomic<bool> vector_lanes{true};
}  // namespace

void set_cpu_vector_lanes(bool enabled) { vector_lanes.store(enabled); }
bool cpu_vector_lanes() { return vector_lanes.load(std::memory_order_relaxed); }

// Entries per block of the vector lanes (window_blocks_cpu.h): a multiple of 64.
constexpr int64_t kBlock = 256;

// A window's pass 1 sums over the negatives whose window is certain from their bucket.
struct WindowSums {
  double count = 0.0;
  double sum_a = 0.0;
};

// Pass 1: each chunk accumulates its own float64 difference arrays, interleaved as
// (P+1) slots of {d1, da, db, pad} so one negative touches at most two cache lines;
// the partials are then merged in chunk order (deterministic) into (3, P+1).
//
// A negative whose window is certain from its bucket (math.h, certain_window_id: almost
// all of them) only adds 1 and its offset a to its window's {count, sum of a}; the
// windows' sums enter the slots once, at the end of the chunk (accumulate_negatives).
at::Tensor sorted_pass1(const at::Tensor& scores, const at::Tensor& labels,
                        const at::Tensor& positives, double delta) {
  static constexpr int64_t kSlot = 4;
  const int64_t n = scores.numel();
  const int64_t num_pos = positives.size(1);
  const int64_t width = num_pos + 1;
  const double* qp = positives.const_data_ptr<double>();
  const StepParams params = make_step_params(delta, qp[0], qp + num_pos, num_pos);
  const std::shared_ptr<const OwnedWindowIndex> shared_index = window_index(qp, num_pos, delta);
  const OwnedWindowIndex& index = *shared_index;
  const WindowIndex& idx = index.get();
  const int64_t windows = index.has_window_ids() ? index.window_count() : 0;
  // Per window: its cluster shift (window_offset), read by every negative in it.
  std::vector<double> window_shift(windows);
  for (int64_t id = 0; id < windows; ++id) {
    const int32_t lo = index.window_lo(id);
    window_shift[id] = lo >= 0 && lo < num_pos && !params.one_cluster ? params.cluster_shift[lo]
                                                                      : params.smallest;
  }
  const Chunks chunks = split_into_chunks(n, kSlot * width + 2 * windows);
  at::Tensor partials = at::zeros({chunks.count, width, kSlot}, positives.options());
  double* acc = partials.data_ptr<double>();
  std::vector<int64_t> bad_score(chunks.count, -1);
  constexpr double kMinusInf = -std::numeric_limits<double>::infinity();

  APLOSS_DISPATCH_SCORES_AND_LABELS(scores.scalar_type(), labels.scalar_type(),
                                    "aploss_sorted_pass1_cpu", [&] {
    const scalar_t* s = scores.const_data_ptr<scalar_t>();
    const label_t* y = labels.const_data_ptr<label_t>();
    for_each_chunk(chunks, n, [&](int64_t c, int64_t begin, int64_t end) {
      double* slots = acc + c * width * kSlot;
      const auto add = [slots](int array, int64_t at, double v) { slots[at * kSlot + array] += v; };
      std::vector<WindowSums> window_sums(windows);
      // Local copies: the stores below could alias the shared ones, which the compiler
      // would then reload for every entry.
      const WindowIndex ix = idx;
      const StepParams pr = params;
      const double* shift = window_shift.data();
      WindowSums* sums = window_sums.data();
      const bool by_window = windows > 0;
      double with_full_step = 0.0;
      int64_t bad = -1;
      // One entry by the scalar per-entry functions.
      const auto entry = [&](int64_t i) {
        if (classify_label(y[i]) != kNegative) return;
        const double v = static_cast<double>(s[i]);
        if (is_pruned(v, pr)) {  // one comparison (-inf is still an error)
          if (v == kMinusInf && bad < 0) bad = i;
          return;
        }
        const int32_t id = by_window ? certain_window_id(ix, v, pr) : -1;
        if (id >= 0) {
          sums[id].count += 1.0;
          sums[id].sum_a += (v - shift[id]) * pr.inv_2delta + 0.5;
          return;
        }
        if (!is_finite_score(v)) {
          if (bad < 0) bad = i;
          return;
        }
        with_full_step += accumulate_negative(find_window(ix, v, pr), add);
      };
      int64_t i = begin;
#ifdef APLOSS_AVX2_LANES
      if (lanes_usable(ix)) {
        int32_t decision[kBlock];
        double offset[kBlock];
        while (end - i >= 4) {
          const int64_t m = std::min(kBlock, (end - i) / 4 * 4);
          pass1_lanes(s + i, y + i, m, ix, pr, shift, decision, offset);
          for (int64_t j = 0; j < m; ++j) {
            const int32_t id = decision[j];
            if (id >= 0) {
              sums[id].count += 1.0;
              sums[id].sum_a += offset[j];
            } else if (id == kSearch) {
              entry(i + j);
            }
          }
          i += m;
        }
      }
#endif
      for (; i < end; ++i) entry(i);
      for (int64_t id = 0; id < windows; ++id) {
        if (sums[id].count == 0.0) continue;
        const int64_t lo = index.window_lo(id);
        with_full_step += accumulate_negatives(lo, id - lo, sums[id].count, sums[id].sum_a, add);
      }
      slots[kD1] += with_full_step;
      bad_score[c] = bad;
    });
  });

  const int64_t first_bad = first_flagged(bad_score.data(), chunks.count);
  if (first_bad >= 0) throw_non_finite_score(scores, first_bad);
  const at::Tensor merged = chunks.count == 1 ? partials[0] : partials.sum(0);
  return merged.narrow(1, 0, 3).t().contiguous();
}

// Pass 2: a map from (score, label) to the gradient, one write per entry. A negative
// whose window is certain from its bucket reads its window's gradient terms (math.h,
// gradient_terms), computed once per window.
void sorted_pass2(const at::Tensor& scores, const at::Tensor& labels, const at::Tensor& state,
                  double delta, const at::Tensor& grad_output, at::Tensor& grad) {
  const int64_t n = scores.numel();
  const StateView st = view_state(state);
  const int64_t num_pos = st.num_pos;
  const double* qp = st.q;
  const double* prefix_w = st.prefix_w;
  const double* prefix_q = st.prefix_q;
  const double* pos_grad = st.pos_grad;
  const StepParams params = make_step_params(delta, qp[0], st.shift, num_pos);
  const std::shared_ptr<const OwnedWindowIndex> shared_index = window_index(qp, num_pos, delta);
  const OwnedWindowIndex& index = *shared_index;
  const WindowIndex& idx = index.get();
  const int64_t windows = index.has_window_ids() ? index.window_count() : 0;
  std::vector<GradientTerms> terms(windows);
  at::parallel_for(0, windows, 4096, [&](int64_t begin, int64_t end) {
    for (int64_t id = begin; id < end; ++id) {
      const int32_t lo = index.window_lo(id);
      if (lo >= 0) terms[id] = gradient_terms(lo, id - lo, prefix_w, prefix_q, params);
    }
  });
  const double scale = grad_output.item<double>();

  APLOSS_DISPATCH_SCORES_AND_LABELS(scores.scalar_type(), labels.scalar_type(),
                                    "aploss_sorted_pass2_cpu", [&] {
    const scalar_t* s = scores.const_data_ptr<scalar_t>();
    const label_t* y = labels.const_data_ptr<label_t>();
    scalar_t* g = grad.data_ptr<scalar_t>();
    at::parallel_for(0, n, 1 << 14, [&](int64_t begin, int64_t end) {
      // Local copies: the stores to g could alias the shared ones (see pass 1).
      const WindowIndex ix = idx;
      const StepParams pr = params;
      const GradientTerms* by_id = terms.data();
      const bool by_window = windows > 0;
      const double sc = scale;
      // One entry's gradient by the scalar per-entry functions.
      const auto entry = [&](int64_t i) {
        const int cls = classify_label(y[i]);
        const double v = static_cast<double>(s[i]);
        if (cls == kPositive) return positive_gradient(qp, num_pos, pos_grad, v);
        if (cls != kNegative || is_pruned(v, pr)) return 0.0;
        const int32_t id = by_window ? certain_window_id(ix, v, pr) : -1;
        return id >= 0 ? gradient_from_terms(by_id[id], v, pr)
                       : negative_gradient(find_window(ix, v, pr), prefix_w, prefix_q, pr);
      };
      int64_t i = begin;
#ifdef APLOSS_AVX2_LANES
      if (lanes_usable(ix)) {
        while (end - i >= 4) {
          const int64_t m = std::min(kBlock, (end - i) / 4 * 4);
          uint64_t search[kBlock / 64] = {};
          pass2_lanes(s + i, y + i, m, ix, pr, by_id, sc, g + i, search);
          for (int64_t w = 0; w < kBlock / 64; ++w) {
            for (uint64_t bits = search[w]; bits != 0; bits &= bits - 1) {
              const int64_t at = i + 64 * w + __builtin_ctzll(bits);
              g[at] = static_cast<scalar_t>(sc * entry(at));
            }
          }
          i += m;
        }
      }
#endif
      for (; i < end; ++i) g[i] = static_cast<scalar_t>(sc * entry(i));
    });
  });
}

}  // namespace cpu
}  // namespace aploss
