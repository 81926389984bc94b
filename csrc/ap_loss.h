// The device-agnostic operator implementations, registered for every backend's
// dispatch key (CPU in ap_loss.cpp, CUDA in cuda/register_cuda.cpp).
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/string_view.h>

#include <tuple>

namespace aploss {

// Returns (loss, state): the 0-dim loss in scores' dtype and the O(P) float64 state
// (kernels.h, StateRow) the backward needs.
std::tuple<at::Tensor, at::Tensor> ap_loss_forward(const at::Tensor& scores,
                                                   const at::Tensor& labels, double delta,
                                                   bool interpolate, c10::string_view method);

// grad_output * d loss / d scores, shaped like scores, in scores' dtype.
at::Tensor ap_loss_backward(const at::Tensor& grad_output, const at::Tensor& scores,
                            const at::Tensor& labels, const at::Tensor& state, double delta,
                            c10::string_view method);

}  // namespace aploss
