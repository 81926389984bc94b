#include "positive_stage.h"

#include <ATen/ATen.h>

#include "aploss/kernels.h"
#include "aploss/math.h"

namespace aploss {

at::Tensor make_positives(const at::Tensor& sorted_q, double delta,
                          const at::Tensor& positive_group) {
  const int64_t num_pos = sorted_q.numel();
  // A cluster starts at 0, after every gap of at least kClusterGap * delta and (grouped)
  // at every group's first positive; each positive's shift is the score where its
  // cluster starts.
  const at::Tensor starts = at::ones({num_pos}, sorted_q.options().dtype(at::kBool));
  if (num_pos > 1) {
    at::Tensor after_gap = sorted_q.diff() >= kClusterGap * delta;
    if (positive_group.defined()) after_gap.logical_or_(positive_group.diff() != 0);
    starts.narrow(0, 1, num_pos - 1).copy_(after_gap);
  }
  const at::Tensor index = at::arange(num_pos, sorted_q.options().dtype(at::kLong));
  const at::Tensor start_of_cluster = std::get<0>(at::where(starts, index, 0).cummax(0));
  at::Tensor positives = at::empty({2, num_pos}, sorted_q.options());
  positives[0].copy_(sorted_q);
  at::Tensor shifts = positives[1];
  at::index_select_out(shifts, sorted_q, 0, start_of_cluster);
  return positives;
}

at::Tensor sums_from_histograms(const at::Tensor& positives, const at::Tensor& histograms,
                                double delta) {
  const int64_t num_pos = positives.size(1);
  const at::Tensor prefix = histograms.cumsum(1).narrow(1, 0, num_pos);
  // fp(i) = C1(i) + A(i) - B(i) * (q_i - shift_i) / (2 delta)  (math.h, accumulate_negative).
  const at::Tensor local = positives[0] - positives[1];
  return prefix[0] + prefix[1] - prefix[2] * local * (0.5 / delta);
}

namespace {

// Running maximum within each run of equal `group` (sorted): Hillis-Steele doubling,
// log2(P) rounds of P-sized ATen ops, since ATen has no segmented scan.
at::Tensor segmented_cummax(const at::Tensor& values, const at::Tensor& group) {
  at::Tensor out = values.clone();
  const int64_t n = values.numel();
  for (int64_t step = 1; step < n; step *= 2) {
    at::Tensor head = out.narrow(0, step, n - step);
    const at::Tensor prev = out.narrow(0, 0, n - step);
    const at::Tensor same = group.narrow(0, step, n - step) == group.narrow(0, 0, n - step);
    head.copy_(at::where(same, at::maximum(head, prev), head));  // built before it is written
  }
  return out;
}

}  // namespace

at::Tensor loss_weights(const at::Tensor& positives, const at::Tensor& positive_group,
                        const at::Tensor& offsets) {
  const int64_t num_pos = positives.size(1);
  if (!positive_group.defined()) {
    return at::full({num_pos}, 1.0 / static_cast<double>(num_pos), positives.options());
  }
  // The mean over the G groups that have a positive of each group's mean over its P_g.
  const at::Tensor group_sizes =
      (offsets.narrow(0, 1, offsets.numel() - 1) - offsets.narrow(0, 0, offsets.numel() - 1))
          .to(at::kDouble);
  const at::Tensor num_groups = (group_sizes > 0).sum().to(at::kDouble);
  return 1.0 / (group_sizes.index_select(0, positive_group) * num_groups);
}

at::Tensor positive_gradients(const at::Tensor& positions, const at::Tensor& gradient) {
  return at::stack({positions.to(at::kDouble), gradient}, 1);
}

at::Tensor pass2_state(const at::Tensor& positives, const at::Tensor& w) {
  const int64_t num_pos = positives.size(1);
  at::Tensor state = at::empty({kStateRows, num_pos + 1}, positives.options());
  // Rows q and shift: P values, the padding column repeats the last one.
  state.narrow(0, kRowQ, 2).narrow(1, 0, num_pos).copy_(positives);
  state.narrow(0, kRowQ, 2).narrow(1, num_pos, 1).copy_(positives.narrow(1, num_pos - 1, 1));
  state[kRowW].narrow(0, 0, num_pos).copy_(w);
  state[kRowW].narrow(0, num_pos, 1).zero_();
  // The prefix sums W and Q, each starting at 0.
  state.narrow(0, kRowPrefixW, 2).narrow(1, 0, 1).zero_();
  at::Tensor prefix_w = state[kRowPrefixW].narrow(0, 1, num_pos);
  at::Tensor prefix_q = state[kRowPrefixQ].narrow(0, 1, num_pos);
  at::cumsum_out(prefix_w, w, 0);
  at::cumsum_out(prefix_q, (positives[0] - positives[1]) * w, 0);
  return state;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> ap_positive_stage(const at::Tensor& positives,
                                                     const at::Tensor& false_positives,
                                                     const at::Tensor& positive_sums,
                                                     bool interpolate,
                                                     at::ScalarType loss_dtype,
                                                     const at::Tensor& positive_group,
                                                     const at::Tensor& offsets) {
  const int64_t num_pos = positives.size(1);
  const bool grouped = positive_group.defined();
  const at::Tensor inv_num_pos = loss_weights(positives, positive_group, offsets);

  // positive_sums includes the self term H(0) = 1/2: rank_pos = 1 + sum_{k != i} H.
  const at::Tensor rank_pos = positive_sums + 0.5;
  const at::Tensor rank = rank_pos + false_positives;
  const at::Tensor prec = rank_pos / rank;
  // Interpolated precision: running max from the lowest-scored positive upward.
  const at::Tensor ip = !interpolate ? prec
                        : grouped   ? segmented_cummax(prec, positive_group)
                                    : std::get<0>(prec.cummax(0));
  const at::Tensor one_minus_ip = 1.0 - ip;
  const at::Tensor c = at::where(ip > prec, one_minus_ip / (1.0 - prec), at::ones_like(prec));
  const at::Tensor w = c / rank * inv_num_pos;

  const at::Tensor loss =
      // Grouped: sum of (1 - ip) / (G P_g), exactly 0 when every ip is 1 (1 minus a sum of
      // G P_g weights would leave rounding behind).
      (grouped ? (one_minus_ip * inv_num_pos).sum() : 1.0 - ip.sum() / static_cast<double>(num_pos))
          .to(loss_dtype);
  return {loss, pass2_state(positives, w), one_minus_ip * -inv_num_pos};
}

}  // namespace aploss
