// aLRP loss (docs/ranking_family.md): its regression losses (one value per positive) and
// its positive stage: the classification component, the positives' own gradients, the
// weights pass 2 gives the negatives, and the coefficients of the localisation component.
// ATen ops and the kernel table's positive_window_sums, so it runs on every device.
#include <ATen/ATen.h>

#include "aploss/positive_stages.h"
#include "loss_inputs.h"
#include "losses.h"
#include "op_checks.h"
#include "stage_common.h"

namespace aploss {
namespace {

constexpr double kEps = kALRPEps;  // the whole-ranking path's (positive_stages.h)

void check_inputs(const at::Tensor& scores, const at::Tensor& labels,
                  const at::Tensor& regression_losses, double delta) {
  check_labels_like_scores(scores, labels, delta);
  check_row_major(scores, labels);
  TORCH_CHECK_VALUE(regression_losses.defined(), "alrp_loss needs regression_losses");
  check_regression_losses_layout(regression_losses, scores);
}

// Each positive's regression loss: given in the positives' memory order.
at::Tensor positive_losses(const at::Tensor&, const at::Tensor& regression_losses,
                           const at::Tensor& positions, const at::Tensor& memory_rank,
                           const at::Tensor& scores) {
  check_regression_losses(regression_losses, positions.numel(), scores);
  return regression_losses.index_select(0, memory_rank).to(at::kDouble);
}

StageOutputs stage(const StageInputs& in) {
  const Positives& pos = in.pos;
  const at::Tensor& fp = in.false_positives;
  const at::Tensor& l = in.values;
  const at::Tensor inv_num_pos = loss_weights(pos);
  // sum_k H(s_k - s_i) and sum_k H(s_k - s_i) l_k over the positives, self included (H(0) = 1/2).
  const at::Tensor sums = in.k.positive_window_sums(pos.positives, pos.offsets, {},
                                                    at::stack({at::ones_like(l), l}), in.delta,
                                                    /*below=*/false, /*transpose=*/false);
  const at::Tensor rank_pos = sums[0] + 0.5;  // 1 + sum over k != i
  const at::Tensor rank = rank_pos + fp;
  const at::Tensor prec = rank_pos / rank;
  const at::Tensor weighted_above = sums[1] - 0.5 * l;  // sum over k != i of H l_k

  const at::Tensor zero = at::zeros({}, fp.options());
  const at::Tensor ranked = fp > kEps;
  const at::Tensor error = at::where(ranked, (weighted_above + fp) / rank, zero) * inv_num_pos;
  // A negative j gets sum_i H(s_j - s_i) error(i) / fp(i).
  const at::Tensor w = at::where(ranked, error / fp, zero);

  // loc_loss = sum_i inv(i) / rank(i) * (sum of l over the positives at or above i in
  // descending score order); ascending within each segment, that is the segment's
  // running sum of inv / rank from its start up to k, for each l_k.
  const at::Tensor per_rank = inv_num_pos / rank;
  const at::Tensor running = per_rank.cumsum(0);
  const at::Tensor before_segment =
      (running - per_rank).index_select(0, pos.offsets.index_select(0, pos.positive_group));
  const at::Tensor loc_sorted = running - before_segment;
  const at::Tensor loc_weights =
      at::empty_like(loc_sorted).index_put_({pos.memory_rank}, loc_sorted);

  return {(at::rsub(prec, 1.0) * inv_num_pos).sum().to(in.loss_dtype), loc_weights,
          pass2_state(pos.positives, w), positive_gradients(pos.positions, -error)};
}

at::Tensor no_loc_weights(const at::TensorOptions& options) { return at::zeros({0}, options); }

}  // namespace

extern const LossDef kALRPLossDef{
    "alrp_loss", LossKind::kALRP, /*pairwise=*/false,
    /*extra=*/"(P,) loc_weights in the positives' memory order: loc_loss = "
              "sum_k regression_losses[k] loc_weights[k]",
    /*values_name=*/"regression_losses", /*values_at_most_one=*/false, check_inputs,
    /*pass_labels=*/nullptr, positive_losses, stage, no_loc_weights};

}  // namespace aploss
