#include "alrp_stage.h"

#include <ATen/ATen.h>

#include "aploss/kernels.h"
#include "positive_stage.h"

namespace aploss {

namespace {
constexpr double kEps = 1e-5;  // the released code's gate on FP(i)
}  // namespace

ALRPStage alrp_positive_stage(const Kernels& k, const Positives& pos,
                              const at::Tensor& false_positives,
                              const at::Tensor& regression_losses, double delta,
                              at::ScalarType loss_dtype) {
  const at::Tensor& fp = false_positives;
  const at::Tensor& l = regression_losses;
  const at::Tensor inv_num_pos =
      loss_weights(pos.positives, pos.grouped() ? pos.positive_group : at::Tensor(), pos.offsets);
  // sum_k H(s_k - s_i) and sum_k H(s_k - s_i) l_k over the positives, self included (H(0) = 1/2).
  const at::Tensor sums = k.positive_window_sums(pos.positives, pos.offsets, {},
                                                 at::stack({at::ones_like(l), l}), delta,
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
  const at::Tensor loc_weights = at::empty_like(loc_sorted).index_put_({pos.memory_rank}, loc_sorted);

  return {((1.0 - prec) * inv_num_pos).sum().to(loss_dtype), loc_weights,
          pass2_state(pos.positives, w),
          positive_gradients(pos.positions, -error)};
}

}  // namespace aploss
