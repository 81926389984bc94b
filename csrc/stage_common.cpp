#include "stage_common.h"

#include <ATen/ATen.h>

#include "aploss/kernels.h"

namespace aploss {

at::Tensor loss_weights(const Positives& pos) {
  const int64_t num_pos = pos.positives.size(1);
  if (!pos.grouped()) {
    return at::full({num_pos}, 1.0 / static_cast<double>(num_pos), pos.positives.options());
  }
  // The mean over the G groups that have a positive of each group's mean over its P_g.
  const at::Tensor& offsets = pos.offsets;
  const at::Tensor group_sizes =
      (offsets.narrow(0, 1, offsets.numel() - 1) - offsets.narrow(0, 0, offsets.numel() - 1))
          .to(at::kDouble);
  const at::Tensor num_groups = (group_sizes > 0).sum().to(at::kDouble);
  return 1.0 / (group_sizes.index_select(0, pos.positive_group) * num_groups);
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

}  // namespace aploss
