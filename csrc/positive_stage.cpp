#include "positive_stage.h"

#include <ATen/ATen.h>

#include "aploss/kernels.h"

namespace aploss {

at::Tensor sums_from_histograms(const at::Tensor& q, const at::Tensor& histograms, double delta) {
  const int64_t num_pos = q.numel();
  const at::Tensor prefix = histograms.cumsum(1).narrow(1, 0, num_pos);
  // C1 + A - B * (q - shift) / (2 delta): math.h's sum_from_prefix, vectorised.
  const at::Tensor shifted = q - q.narrow(0, 0, 1);
  return prefix[0] + prefix[1] - prefix[2] * shifted * (0.5 / delta);
}

std::tuple<at::Tensor, at::Tensor> ap_positive_stage(const at::Tensor& q,
                                                     const at::Tensor& false_positives,
                                                     const at::Tensor& positive_sums,
                                                     bool interpolate,
                                                     at::ScalarType loss_dtype) {
  const int64_t num_pos = q.numel();
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

  at::Tensor state = at::zeros({kStateRows, num_pos + 1}, q.options());
  state[kRowQ].narrow(0, 0, num_pos).copy_(q);
  state[kRowQ].narrow(0, num_pos, 1).copy_(q.narrow(0, num_pos - 1, 1));
  state[kRowW].narrow(0, 0, num_pos).copy_(w);
  state[kRowPrefixW].narrow(0, 1, num_pos).copy_(w.cumsum(0));
  state[kRowPrefixQ].narrow(0, 1, num_pos).copy_(((q - q.narrow(0, 0, 1)) * w).cumsum(0));
  state[kRowPosGrad].narrow(0, 0, num_pos).copy_(one_minus_ip * -inv_num_pos);

  const at::Tensor loss = (1.0 - ip.sum() * inv_num_pos).to(loss_dtype);
  return {loss, state};
}

}  // namespace aploss
