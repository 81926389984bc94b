// Sorted (two-pass, O(N log P)) evaluation on the CPU.
#include <ATen/ATen.h>

#include <limits>
#include <vector>

#include "../aploss/dispatch.h"
#include "../aploss/errors.h"
#include "../aploss/kernels.h"
#include "../aploss/math.h"
#include "window_index_cpu.h"
#include "chunks.h"
#include "cpu_kernels.h"

namespace aploss {
namespace cpu {

// How many entries ahead the bucket-table entries are prefetched.
constexpr int64_t kPrefetchDistance = 16;

// Pass 1: each chunk accumulates its own float64 difference arrays, interleaved as
// (P+1) slots of {d1, da, db, pad} so one negative touches at most two cache lines;
// the partials are then merged in chunk order (deterministic) into (3, P+1).
at::Tensor sorted_pass1(const at::Tensor& scores, const at::Tensor& labels,
                        const at::Tensor& positives, double delta) {
  static constexpr int64_t kSlot = 4;
  const int64_t n = scores.numel();
  const int64_t num_pos = positives.size(1);
  const int64_t width = num_pos + 1;
  const double* qp = positives.const_data_ptr<double>();
  const StepParams params = make_step_params(delta, qp[0], qp + num_pos, num_pos);
  const OwnedWindowIndex index(qp, num_pos, delta);
  const Chunks chunks = split_into_chunks(n, kSlot * width);
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
      int64_t with_full_step = 0;
      int64_t bad = -1;
      for (int64_t i = begin; i < end; ++i) {
        if (i + kPrefetchDistance < end) {
          index.prefetch(static_cast<double>(s[i + kPrefetchDistance]));
        }
        if (classify_label(y[i]) != kNegative) continue;
        const double v = static_cast<double>(s[i]);
        if (is_pruned(v, params)) {  // one comparison (-inf is still an error)
          if (v == kMinusInf && bad < 0) bad = i;
          continue;
        }
        if (!is_finite_score(v)) {
          if (bad < 0) bad = i;
          continue;
        }
        with_full_step += accumulate_negative(find_window(index.get(), v, params), add);
      }
      slots[kD1] += static_cast<double>(with_full_step);
      bad_score[c] = bad;
    });
  });

  const int64_t first_bad = first_flagged(bad_score.data(), chunks.count);
  if (first_bad >= 0) throw_non_finite_score(scores, first_bad);
  const at::Tensor merged = chunks.count == 1 ? partials[0] : partials.sum(0);
  return merged.narrow(1, 0, 3).t().contiguous();
}

// Pass 2: a map from (score, label) to the gradient, one write per entry.
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
  const OwnedWindowIndex index(qp, num_pos, delta);
  const double scale = grad_output.item<double>();

  APLOSS_DISPATCH_SCORES_AND_LABELS(scores.scalar_type(), labels.scalar_type(),
                                    "aploss_sorted_pass2_cpu", [&] {
    const scalar_t* s = scores.const_data_ptr<scalar_t>();
    const label_t* y = labels.const_data_ptr<label_t>();
    scalar_t* g = grad.data_ptr<scalar_t>();
    at::parallel_for(0, n, 1 << 14, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) {
        if (i + kPrefetchDistance < end) {
          index.prefetch(static_cast<double>(s[i + kPrefetchDistance]));
        }
        const int cls = classify_label(y[i]);
        double value = 0.0;
        if (cls == kNegative) {
          const double v = static_cast<double>(s[i]);
          if (!is_pruned(v, params)) {
            value = negative_gradient(find_window(index.get(), v, params), prefix_w, prefix_q,
                                      params);
          }
        } else if (cls == kPositive) {
          value = positive_gradient(qp, num_pos, pos_grad, static_cast<double>(s[i]));
        }
        g[i] = static_cast<scalar_t>(scale * value);
      }
    });
  });
}

}  // namespace cpu
}  // namespace aploss
