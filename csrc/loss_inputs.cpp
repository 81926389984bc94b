#include "loss_inputs.h"

#include <ATen/ATen.h>

#include <cmath>

#include "aploss/errors.h"
#include "aploss/host_reads.h"
#include "op_checks.h"

namespace aploss {

void check_labels_like_scores(const at::Tensor& scores, const at::Tensor& labels, double delta) {
  TORCH_CHECK_VALUE(scores.sizes() == labels.sizes(), "labels.shape ", labels.sizes(),
                    " must equal scores.shape ", scores.sizes());
  TORCH_CHECK_VALUE(scores.device() == labels.device(), "scores are on ",
                    scores.device(), " but labels are on ", labels.device());
  TORCH_CHECK_TYPE(at::isFloatingType(scores.scalar_type()),
                   "scores must be a floating dtype, got ", scores.scalar_type());
  const auto label_type = labels.scalar_type();
  TORCH_CHECK_TYPE(label_type == at::kBool || label_type == at::kChar || label_type == at::kByte ||
                       label_type == at::kInt || label_type == at::kLong ||
                       label_type == at::kFloat || label_type == at::kDouble,
                   "labels dtype ", label_type,
                   " is not supported (bool, int8, uint8, int32, int64, float32, float64)");
  checks::check_delta_for_scores(scores.scalar_type(), delta);
}

void check_row_major(const at::Tensor& scores, const at::Tensor& other) {
  TORCH_CHECK_VALUE(scores.is_contiguous() && other.is_contiguous(),
                    "scores and labels/targets must be contiguous (the Python API makes them so)");
}

void check_targets_like_scores(const at::Tensor& scores, const at::Tensor& targets,
                               double delta) {
  TORCH_CHECK_VALUE(scores.sizes() == targets.sizes(), "targets.shape ", targets.sizes(),
                    " must equal scores.shape ", scores.sizes());
  TORCH_CHECK_VALUE(scores.device() == targets.device(), "scores are on ", scores.device(),
                    " but targets are on ", targets.device());
  check_row_major(scores, targets);
  TORCH_CHECK_TYPE(
      at::isFloatingType(scores.scalar_type()) && at::isFloatingType(targets.scalar_type()),
      "scores and targets must be floating, got ", scores.scalar_type(), " and ",
      targets.scalar_type());
  checks::check_delta_for_scores(scores.scalar_type(), delta);
}

at::Tensor no_extra(const at::TensorOptions& options) { return at::empty({0}, options); }

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
