// The checks and conversions of the losses' inputs (losses.h): labels (1 / 0 / -1),
// continuous targets and per-positive regression losses.
#pragma once

#include <ATen/core/Tensor.h>

namespace aploss {

// ValueError / TypeError naming the problem: labels shaped like scores on its device,
// floating scores, a supported labels dtype, a delta the scores' key type holds.
void check_labels_like_scores(const at::Tensor& scores, const at::Tensor& labels, double delta);

// The same for continuous targets (floating, like scores); both contiguous, so that "the
// memory order of the positives" is the row-major order the user indexes with.
void check_targets_like_scores(const at::Tensor& scores, const at::Tensor& targets,
                               double delta);
void check_row_major(const at::Tensor& scores, const at::Tensor& other);

// Rank & Sort targets (> 0 positive with its target, 0 negative, < 0 ignored) as int8
// labels 1 / 0 / -1, shaped like targets. ValueError on NaN or on a target above 1.
at::Tensor labels_from_targets(const at::Tensor& targets);

// ValueError / TypeError unless `losses` holds one finite value >= 0 per positive
// (num_pos), floating, 1-D, on `like`'s device.
void check_regression_losses(const at::Tensor& losses, int64_t num_pos, const at::Tensor& like);
// Only what needs no values: dtype, device, 1-D (a backend's ranking_forward checks the rest).
void check_regression_losses_layout(const at::Tensor& losses, const at::Tensor& like);

// The extra output of a loss that has none: an empty float64 tensor.
at::Tensor no_extra(const at::TensorOptions& options);

}  // namespace aploss
