// The positive stage of aLRP loss (docs/ranking_family.md): the classification
// component, the positives' own gradients, the weights pass 2 gives the negatives, and
// the coefficients of the localisation component. ATen ops and the kernel table's
// positive_window_sums, so it runs on every device.
#pragma once

#include <ATen/core/Tensor.h>

#include "stages.h"

namespace aploss {

struct ALRPStage {
  at::Tensor cls_loss;        // 0-dim, loss_dtype
  at::Tensor loc_weights;     // (P,) float64 in memory order: loc_loss = sum_k l_k loc_weights[k]
  at::Tensor state;           // (kStateRows, P+1) float64 for pass 2 (kernels.h)
  at::Tensor positive_grads;  // (P, 2) float64 [position, gradient] (stages.h, pass2)
};

// `regression_losses` (P,) float64: each sorted positive's localisation loss l >= 0.
ALRPStage alrp_positive_stage(const Kernels& k, const Positives& pos,
                              const at::Tensor& false_positives,
                              const at::Tensor& regression_losses, double delta,
                              at::ScalarType loss_dtype);

}  // namespace aploss
