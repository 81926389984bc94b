// The positive stage of AP-loss, and what every loss's positive stage shares: everything
// that lives on P-sized data, written with ATen ops only, so that the same code runs on
// CPU and CUDA tensors. The other losses of the family (rank_sort_stage.h, alrp_stage.h)
// replace ap_positive_stage and keep both passes.
#pragma once

#include <ATen/core/Tensor.h>

#include <tuple>

namespace aploss {

// (2, P) float64: sorted q and each positive's cluster shift (math.h, StepParams).
// Grouped: q sorted within each group, `positive_group` (P,) the groups, sorted.
at::Tensor make_positives(const at::Tensor& sorted_q, double delta,
                          const at::Tensor& positive_group = {});

// fp(i) (or sum_k H(q_k - q_i) when the histograms came from the positives
// themselves) from pass 1's (3, P+1) difference arrays.
at::Tensor sums_from_histograms(const at::Tensor& positives, const at::Tensor& histograms,
                                double delta);

// Each positive's weight in a mean over the positives: 1/P, or grouped (positive_group
// (P,) int64 and the groups' offsets, segments.h) 1 / (G P_g), G the number of groups
// that have a positive and P_g the size of the positive's group.
at::Tensor loss_weights(const at::Tensor& positives, const at::Tensor& positive_group = {},
                        const at::Tensor& offsets = {});

// What pass 2 writes at the positives (stages.h, pass2): (P, 2) float64 [position,
// gradient], from each sorted positive's flat position (int64) and own gradient.
at::Tensor positive_gradients(const at::Tensor& positions, const at::Tensor& gradient);

// The (kStateRows, P+1) float64 state pass 2 reads (kernels.h) from each positive's
// weight w(i) in the negatives' gradients (loss weight included).
at::Tensor pass2_state(const at::Tensor& positives, const at::Tensor& w);

// From the positives, fp(i) and sum_k H(q_k - q_i) (self included): the loss (0-dim,
// loss_dtype), the (kStateRows, P+1) float64 state of kernels.h and each positive's own
// gradient (P,) float64, in the positives' order. Grouped: positive_group (P,) int64 and
// the groups' offsets (segments.h); the loss is then the mean of the AP-losses of the
// groups that have a positive.
std::tuple<at::Tensor, at::Tensor, at::Tensor> ap_positive_stage(const at::Tensor& positives,
                                                     const at::Tensor& false_positives,
                                                     const at::Tensor& positive_sums,
                                                     bool interpolate,
                                                     at::ScalarType loss_dtype,
                                                     const at::Tensor& positive_group = {},
                                                     const at::Tensor& offsets = {});

}  // namespace aploss
