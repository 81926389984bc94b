// The device-agnostic operator implementations, registered for every backend's
// dispatch key (CPU in ap_loss.cpp, CUDA in cuda/register_cuda.cpp).
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/string_view.h>

#include <tuple>

namespace aploss {

struct Kernels;

// Shared by the operators (ap_loss.cpp, grouped_loss.cpp).
enum class Method { kSorted, kPairwise };
Method parse_method(c10::string_view method);
const Kernels& kernels_for(const at::Tensor& t);
// ValueError / TypeError naming the problem (shapes, devices, dtypes, delta).
void check_inputs(const at::Tensor& scores, const at::Tensor& labels, double delta);

// Returns (loss, state): the 0-dim loss in scores' dtype and the O(P) float64 state
// (kernels.h, StateRow) the backward needs.
std::tuple<at::Tensor, at::Tensor> ap_loss_forward(const at::Tensor& scores,
                                                   const at::Tensor& labels, double delta,
                                                   bool interpolate, c10::string_view method);

// grad_output * d loss / d scores, shaped like scores, in scores' dtype.
at::Tensor ap_loss_backward(const at::Tensor& grad_output, const at::Tensor& scores,
                            const at::Tensor& labels, const at::Tensor& state, double delta,
                            c10::string_view method);

// Grouped rankings (group_ids broadcastable to scores): (loss, state, offsets, codes),
// the codes being group_ids mapped to dense int32 codes (shaped like group_ids) and
// offsets the (U+1) int64 segment offsets of the positives (segments.h).
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> ap_loss_grouped_forward(
    const at::Tensor& scores, const at::Tensor& labels, const at::Tensor& group_ids,
    double delta, bool interpolate, c10::string_view method);

at::Tensor ap_loss_grouped_backward(const at::Tensor& grad_output, const at::Tensor& scores,
                                    const at::Tensor& labels, const at::Tensor& group_codes,
                                    const at::Tensor& state, const at::Tensor& offsets,
                                    double delta, c10::string_view method);

}  // namespace aploss
