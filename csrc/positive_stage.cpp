#include "positive_stage.h"

#include <ATen/ATen.h>

#include "aploss/kernels.h"
#include "aploss/math.h"

namespace aploss {

at::Tensor make_positives(const at::Tensor& sorted_q, double delta) {
  const int64_t num_pos = sorted_q.numel();
  // A cluster starts at 0 and after every gap of at least kClusterGap * delta; each
  // positive's shift is the score where its cluster starts.
  const at::Tensor starts = at::ones({num_pos}, sorted_q.options().dtype(at::kBool));
  if (num_pos > 1) {
    starts.narrow(0, 1, num_pos - 1)
        .copy_(sorted_q.diff() >= kClusterGap * delta);
  }
  const at::Tensor index = at::arange(num_pos, sorted_q.options().dtype(at::kLong));
  const at::Tensor start_of_cluster = std::get<0>(at::where(starts, index, 0).cummax(0));
  return at::stack({sorted_q, sorted_q.index_select(0, start_of_cluster)});
}

at::Tensor sums_from_histograms(const at::Tensor& positives, const at::Tensor& histograms,
                                double delta) {
  const int64_t num_pos = positives.size(1);
  const at::Tensor prefix = histograms.cumsum(1).narrow(1, 0, num_pos);
  // fp(i) = C1(i) + A(i) - B(i) * (q_i - shift_i) / (2 delta)  (math.h, accumulate_negative).
  const at::Tensor local = positives[0] - positives[1];
  return prefix[0] + prefix[1] - prefix[2] * local * (0.5 / delta);
}

std::tuple<at::Tensor, at::Tensor> ap_positive_stage(const at::Tensor& positives,
                                                     const at::Tensor& false_positives,
                                                     const at::Tensor& positive_sums,
                                                     bool interpolate,
                                                     at::ScalarType loss_dtype) {
  const int64_t num_pos = positives.size(1);
  const double inv_num_pos = 1.0 / static_cast<double>(num_pos);

  // positive_sums includes the self term H(0) = 1/2: rank_pos = 1 + sum_{k != i} H.
  const at::Tensor rank_pos = positive_sums + 0.5;
  const at::Tensor rank = rank_pos + false_positives;
  const at::Tensor prec = rank_pos / rank;
  // Interpolated precision: running max from the lowest-scored positive upward.
  const at::Tensor ip = interpolate ? std::get<0>(prec.cummax(0)) : prec;
  const at::Tensor one_minus_ip = 1.0 - ip;
  const at::Tensor c = at::where(ip > prec, one_minus_ip / (1.0 - prec), at::ones_like(prec));
  const at::Tensor w = c / rank * inv_num_pos;

  at::Tensor state = at::zeros({kStateRows, num_pos + 1}, positives.options());
  // Rows q and shift: P values, the padding column repeats the last one.
  state.narrow(0, kRowQ, 2).narrow(1, 0, num_pos).copy_(positives);
  state.narrow(0, kRowQ, 2).narrow(1, num_pos, 1).copy_(positives.narrow(1, num_pos - 1, 1));
  state[kRowW].narrow(0, 0, num_pos).copy_(w);
  state[kRowPrefixW].narrow(0, 1, num_pos).copy_(w.cumsum(0));
  state[kRowPrefixQ].narrow(0, 1, num_pos).copy_(((positives[0] - positives[1]) * w).cumsum(0));
  state[kRowPosGrad].narrow(0, 0, num_pos).copy_(one_minus_ip * -inv_num_pos);

  const at::Tensor loss = (1.0 - ip.sum() * inv_num_pos).to(loss_dtype);
  return {loss, state};
}

}  // namespace aploss
