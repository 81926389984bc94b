#include "family_inputs.h"

#include <ATen/ATen.h>

#include <cmath>

#include "aploss/errors.h"
#include "aploss/host_reads.h"

namespace aploss {

at::Tensor labels_from_targets(const at::Tensor& targets) {
  TORCH_CHECK_TYPE(at::isFloatingType(targets.scalar_type()),
                   "targets must be a floating dtype, got ",
                   targets.scalar_type());
  if (targets.numel() == 0) return at::empty(targets.sizes(), targets.options().dtype(at::kChar));
  // One reduction finds both errors (the maximum is NaN if any target is); the forward
  // syncs with the host at the gather anyway.
  const double largest = read_to_host(targets.max()).item<double>();
  if (std::isnan(largest) || largest > 1.0) {
    const at::Tensor flat = targets.reshape({-1});
    const int64_t index = at::nonzero(flat.isnan() | (flat > 1.0))[0][0].item<int64_t>();
    throw_invalid_target(flat, index);
  }
  return targets.sign().to(at::kChar);
}

void check_regression_losses_layout(const at::Tensor& losses, const at::Tensor& like) {
  TORCH_CHECK_TYPE(at::isFloatingType(losses.scalar_type()),
                   "regression_losses must be a floating dtype, got ",
                   losses.scalar_type());
  TORCH_CHECK_VALUE(losses.device() == like.device(), "regression_losses are on ",
                    losses.device(), " but scores are on ", like.device());
  TORCH_CHECK_VALUE(losses.dim() == 1,
                    "regression_losses must be 1-D (one value per positive), got shape ",
                    losses.sizes());
}

void check_regression_losses(const at::Tensor& losses, int64_t num_pos, const at::Tensor& like) {
  check_regression_losses_layout(losses, like);
  TORCH_CHECK_VALUE(losses.dim() == 1 && losses.numel() == num_pos,
                    "regression_losses must be 1-D with one value per positive (",
                    num_pos, " positives), got shape ", losses.sizes());
  if (num_pos == 0) return;
  const at::Tensor holds = (at::isfinite(losses) & (losses >= 0)).all();
  if (!read_to_host(holds).item<bool>()) throw_invalid_regression_losses(losses);
}

}  // namespace aploss
