// Rank & Sort loss (docs/ranking_family.md): its targets (labels and one value per
// positive) and its positive stage: ranking and sorting errors, the positives' own
// gradients and the weights pass 2 gives the negatives. ATen ops and the kernel table's
// positive_window_sums, so it runs on every device.
#include <ATen/ATen.h>

#include "aploss/positive_stages.h"
#include "loss_inputs.h"
#include "losses.h"
#include "op_checks.h"
#include "stage_common.h"

namespace aploss {
namespace {

constexpr double kEps = kRankSortEps;  // the whole-ranking path's (positive_stages.h)

void check_inputs(const at::Tensor& scores, const at::Tensor& targets, const at::Tensor& values,
                  double delta) {
  TORCH_CHECK_VALUE(!values.defined(),
                    "rank_sort_loss takes its per-positive values from the targets");
  check_targets_like_scores(scores, targets, delta);
}

// Each positive's target: the targets at the positives' flat positions.
at::Tensor positive_targets(const at::Tensor& targets, const at::Tensor&,
                            const at::Tensor& positions, const at::Tensor&, const at::Tensor&) {
  return targets.reshape({-1}).index_select(0, positions).to(at::kDouble);
}

StageOutputs stage(const StageInputs& in) {
  const Kernels& k = in.k;
  const Positives& pos = in.pos;
  const at::Tensor& fp = in.false_positives;
  const at::Tensor& targets = in.values;
  const at::Tensor inv_num_pos = loss_weights(pos);
  const at::Tensor one_minus_y = at::rsub(targets, 1.0);
  const at::Tensor counts_and_errors = at::stack({at::ones_like(targets), one_minus_y});
  // Over every positive k (self included), then over those with y_k < y_i:
  //   sum H(s_k - s_i) and sum H(s_k - s_i) (1 - y_k).
  const at::Tensor all = k.positive_window_sums(pos.positives, pos.offsets, {}, counts_and_errors,
                                                in.delta, /*below=*/false, /*transpose=*/false);
  const at::Tensor lower = k.positive_window_sums(pos.positives, pos.offsets, targets,
                                                  counts_and_errors, in.delta, /*below=*/true,
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
                             in.delta, /*below=*/true, /*transpose=*/true)[0];
  const at::Tensor own =
      at::where(ranked, ranking_error, zero) + at::where(sorted, sorting_error, zero);
  const at::Tensor positive_grad = received - own * inv_num_pos;
  // A negative j gets sum_i H(s_j - s_i) ranking_error(i) / fp(i) = H / rank(i).
  const at::Tensor w = at::where(ranked, 1.0 / rank, zero) * inv_num_pos;

  const at::Tensor ranking = (ranking_error * inv_num_pos).sum();
  const at::Tensor sorting = (sorting_error * inv_num_pos).sum();
  return {(ranking + sorting).to(in.loss_dtype), at::stack({ranking, sorting}),
          pass2_state(pos.positives, w), positive_gradients(pos.positions, positive_grad)};
}

at::Tensor no_parts(const at::TensorOptions& options) { return at::zeros({2}, options); }

}  // namespace

extern const LossDef kRankSortLossDef{
    "rank_sort_loss", LossKind::kRankSort, /*pairwise=*/false,
    /*extra=*/"(2,) the ranking and the sorting loss", /*values_name=*/"targets",
    /*values_at_most_one=*/true, check_inputs, labels_from_targets, positive_targets, stage,
    no_parts};

}  // namespace aploss
