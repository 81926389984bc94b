// The inputs of Rank & Sort and aLRP loss that AP-loss does not have: continuous targets
// (turned into labels the kernels read) and one regression loss per positive.
#pragma once

#include <ATen/core/Tensor.h>

namespace aploss {

// Rank & Sort targets (> 0 positive with its target, 0 negative, < 0 ignored) as int8
// labels 1 / 0 / -1, shaped like targets. ValueError on NaN or on a target above 1.
at::Tensor labels_from_targets(const at::Tensor& targets);

// ValueError / TypeError unless `losses` holds one finite value >= 0 per positive
// (num_pos), floating, 1-D, on `like`'s device.
void check_regression_losses(const at::Tensor& losses, int64_t num_pos, const at::Tensor& like);
// Only what needs no values: dtype, device, 1-D (a backend's ranking_forward checks the rest).
void check_regression_losses_layout(const at::Tensor& losses, const at::Tensor& like);

}  // namespace aploss
