// The positive stage of Rank & Sort loss (docs/ranking_family.md): ranking and sorting
// errors, the positives' own gradients and the weights pass 2 gives the negatives. ATen
// ops and the kernel table's positive_window_sums, so it runs on every device.
#pragma once

#include <ATen/core/Tensor.h>

#include "stages.h"

namespace aploss {

struct RankSortStage {
  at::Tensor loss;            // 0-dim, loss_dtype: ranking + sorting
  at::Tensor parts;           // (2,) loss_dtype: ranking, sorting
  at::Tensor state;           // (kStateRows, P+1) float64 for pass 2 (kernels.h)
  at::Tensor positive_grads;  // (P, 2) float64 [position, gradient] (stages.h, pass2)
};

// `targets` (P,) float64: each sorted positive's target, in (0, 1].
RankSortStage rank_sort_positive_stage(const Kernels& k, const Positives& pos,
                                       const at::Tensor& false_positives,
                                       const at::Tensor& targets, double delta,
                                       at::ScalarType loss_dtype);

}  // namespace aploss
