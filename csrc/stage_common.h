// What every loss's positive stage shares (losses.h): ATen ops on P-sized data, so that
// the same code runs on CPU and CUDA tensors.
#pragma once

#include <ATen/core/Tensor.h>

#include "stages.h"

namespace aploss {

// Each positive's weight in a mean over the positives: 1/P, or grouped 1 / (G P_g), G the
// number of groups that have a positive and P_g the size of the positive's group.
at::Tensor loss_weights(const Positives& pos);

// What pass 2 writes at the positives (stages.h, pass2): (P, 2) float64 [position,
// gradient], from each sorted positive's flat position (int64) and own gradient.
at::Tensor positive_gradients(const at::Tensor& positions, const at::Tensor& gradient);

// The (kStateRows, P+1) float64 state pass 2 reads (kernels.h) from each positive's
// weight w(i) in the negatives' gradients (loss weight included).
at::Tensor pass2_state(const at::Tensor& positives, const at::Tensor& w);

}  // namespace aploss
