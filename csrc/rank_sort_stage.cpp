#include "rank_sort_stage.h"

#include <ATen/ATen.h>

#include "aploss/kernels.h"
#include "positive_stage.h"

namespace aploss {

namespace {
constexpr double kEps = 1e-10;  // the released code's gate on FP(i) and on den(i)
}  // namespace

RankSortStage rank_sort_positive_stage(const Kernels& k, const Positives& pos,
                                       const at::Tensor& false_positives,
                                       const at::Tensor& targets, double delta,
                                       at::ScalarType loss_dtype) {
  const at::Tensor& fp = false_positives;
  const at::Tensor inv_num_pos =
      loss_weights(pos.positives, pos.grouped() ? pos.positive_group : at::Tensor(), pos.offsets);
  const at::Tensor one_minus_y = 1.0 - targets;
  const at::Tensor counts_and_errors = at::stack({at::ones_like(targets), one_minus_y});
  // Over every positive k (self included), then over those with y_k < y_i:
  //   sum H(s_k - s_i) and sum H(s_k - s_i) (1 - y_k).
  const at::Tensor all = k.positive_window_sums(pos.positives, pos.offsets, {}, counts_and_errors,
                                                delta, /*below=*/false, /*transpose=*/false);
  const at::Tensor lower = k.positive_window_sums(pos.positives, pos.offsets, targets,
                                                  counts_and_errors, delta, /*below=*/true,
                                                  /*transpose=*/false);
  const at::Tensor rank_pos = all[0];
  const at::Tensor missorted = lower[0];  // den(i): the sorting update's denominator
  const at::Tensor rank = rank_pos + fp;
  const at::Tensor ranking_error = fp / rank;
  // The target order T(i) = {k : y_k >= y_i} holds i itself, so its count is >= 1/2.
  const at::Tensor sorting_error =
      all[1] / rank_pos - (all[1] - lower[1]) / (rank_pos - missorted);

  const at::Tensor zero = at::zeros({}, fp.options());
  const at::Tensor ranked = fp > kEps;
  const at::Tensor sorted = missorted > kEps;
  // The sorting error of i goes to every k with y_k < y_i in proportion to H(s_k - s_i):
  // for each k, a sum over the i with y_i > y_k (keys -y, "below").
  const at::Tensor sorting_share = at::where(sorted, sorting_error / missorted, zero) * inv_num_pos;
  const at::Tensor received =
      k.positive_window_sums(pos.positives, pos.offsets, -targets, sorting_share.unsqueeze(0),
                             delta, /*below=*/true, /*transpose=*/true)[0];
  const at::Tensor own =
      at::where(ranked, ranking_error, zero) + at::where(sorted, sorting_error, zero);
  const at::Tensor positive_grad = received - own * inv_num_pos;
  // A negative j gets sum_i H(s_j - s_i) ranking_error(i) / fp(i) = H / rank(i).
  const at::Tensor w = at::where(ranked, 1.0 / rank, zero) * inv_num_pos;

  const at::Tensor ranking = (ranking_error * inv_num_pos).sum();
  const at::Tensor sorting = (sorting_error * inv_num_pos).sum();
  return {(ranking + sorting).to(loss_dtype), at::stack({ranking, sorting}).to(loss_dtype),
          pass2_state(pos.positives, w),
          positive_gradients(pos.positions, positive_grad)};
}

}  // namespace aploss
