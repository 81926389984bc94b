#include "family_inputs.h"

#include <ATen/ATen.h>

#include <cmath>

#include "aploss/host_reads.h"

namespace aploss {

at::Tensor labels_from_targets(const at::Tensor& targets) {
  TORCH_CHECK_TYPE(at::isFloatingType(targets.scalar_type()),
                   "rank_sort_loss: targets must be a floating dtype, got ",
                   targets.scalar_type());
  if (targets.numel() == 0) return at::empty(targets.sizes(), targets.options().dtype(at::kChar));
  // One reduction finds both errors (the maximum is NaN if any target is); the forward
  // syncs with the host at the gather anyway.
  const double largest = read_to_host(targets.max()).item<double>();
  if (std::isnan(largest) || largest > 1.0) {
    const at::Tensor flat = targets.reshape({-1});
    const int64_t index = at::nonzero(flat.isnan() | (flat > 1.0))[0][0].item<int64_t>();
    TORCH_CHECK_VALUE(false,
                      "rank_sort_loss: targets must be in (0, 1] for a positive, 0 for a "
                      "negative, < 0 (e.g. -1) for an ignored entry; found ",
                      flat[index].item<double>(), " at flat index ", index, " (memory order)");
  }
  return targets.sign().to(at::kChar);
}

void check_regression_losses_layout(const at::Tensor& losses, const at::Tensor& like) {
  TORCH_CHECK_TYPE(at::isFloatingType(losses.scalar_type()),
                   "alrp_loss: regression_losses must be a floating dtype, got ",
                   losses.scalar_type());
  TORCH_CHECK_VALUE(losses.device() == like.device(), "alrp_loss: regression_losses are on ",
                    losses.device(), " but scores are on ", like.device());
  TORCH_CHECK_VALUE(losses.dim() == 1,
                    "alrp_loss: regression_losses must be 1-D (one value per positive), got shape ",
                    losses.sizes());
}

void check_regression_losses(const at::Tensor& losses, int64_t num_pos, const at::Tensor& like) {
  check_regression_losses_layout(losses, like);
  TORCH_CHECK_VALUE(losses.dim() == 1 && losses.numel() == num_pos,
                    "alrp_loss: regression_losses must be 1-D with one value per positive (",
                    num_pos, " positives), got shape ", losses.sizes());
  if (num_pos == 0) return;
  const auto [smallest, largest] = at::aminmax(losses);  // NaN if any value is
  const at::Tensor bounds = read_to_host(at::stack({smallest, largest}).to(at::kDouble));
  const double low = bounds[0].item<double>(), high = bounds[1].item<double>();
  TORCH_CHECK_VALUE(low >= 0.0 && std::isfinite(high),
                    "alrp_loss: regression_losses must be finite and >= 0; found values in [",
                    low, ", ", high, "]");
}

}  // namespace aploss
