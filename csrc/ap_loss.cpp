// The aploss operators: schema, input preparation, and the device-agnostic driver
// that strings the device kernels (kernels.h) and the positive stage together.
#include <ATen/ATen.h>
#include <torch/library.h>

#include <atomic>
#include <cmath>
#include <string>

#include "ap_loss.h"
#include "deterministic_pass1.h"
#include "flat_inputs.h"
#include "aploss/kernels.h"
#include "positive_stage.h"

namespace aploss {

Method parse_method(c10::string_view method) {
  if (method == "sorted" || method == "auto") return Method::kSorted;
  if (method == "pairwise") return Method::kPairwise;
  TORCH_CHECK_VALUE(false, "ap_loss: method must be one of 'auto', 'sorted', 'pairwise'; got '",
                    std::string(method), "'");
}

const Kernels& kernels_for(const at::Tensor& t) {
#ifdef APLOSS_WITH_CUDA
  if (t.is_cuda()) return cuda_kernels();
#endif
  TORCH_CHECK(t.is_cpu(), "ap_loss: no kernels for device ", t.device());
  const Kernels* emulated = emulated_device_kernels();
  return emulated != nullptr ? *emulated : cpu_kernels();
}

namespace {
std::atomic<const Kernels*> emulated_table{nullptr};
}  // namespace

void set_emulated_device_kernels(const Kernels* table) { emulated_table.store(table); }
const Kernels* emulated_device_kernels() { return emulated_table.load(); }

void check_inputs(const at::Tensor& scores, const at::Tensor& labels, double delta) {
  TORCH_CHECK_VALUE(scores.sizes() == labels.sizes(), "ap_loss: labels.shape ", labels.sizes(),
                    " must equal scores.shape ", scores.sizes());
  TORCH_CHECK_VALUE(scores.device() == labels.device(), "ap_loss: scores are on ",
                    scores.device(), " but labels are on ", labels.device());
  TORCH_CHECK_TYPE(at::isFloatingType(scores.scalar_type()),
                   "ap_loss: scores must be a floating dtype, got ", scores.scalar_type());
  const auto label_type = labels.scalar_type();
  TORCH_CHECK_TYPE(label_type == at::kBool || label_type == at::kChar || label_type == at::kByte ||
                       label_type == at::kInt || label_type == at::kLong ||
                       label_type == at::kFloat || label_type == at::kDouble,
                   "ap_loss: labels dtype ", label_type,
                   " is not supported (bool, int8, uint8, int32, int64, float32, float64)");
  TORCH_CHECK_VALUE(std::isfinite(delta) && delta > 0.0,
                    "ap_loss: delta must be finite and > 0, got ", delta);
}

std::tuple<at::Tensor, at::Tensor> ap_loss_forward(const at::Tensor& scores,
                                                   const at::Tensor& labels, double delta,
                                                   bool interpolate, c10::string_view method) {
  check_inputs(scores, labels, delta);
  const Method m = parse_method(method);
  const Kernels& k = kernels_for(scores);
  const FlatInputs in = flatten(scores, labels);
  const auto f64 = scores.options().dtype(at::kDouble);

  // The one host sync of the call: the gather learns P.
  const at::Tensor q = std::get<0>(k.gather_positives(in.scores, in.labels).sort());
  const int64_t num_pos = q.numel();
  TORCH_CHECK_VALUE(num_pos < (int64_t(1) << 31), "ap_loss: at most 2^31 - 1 positives, got ",
                    num_pos);
  if (num_pos == 0) {
    return {at::zeros({}, scores.options()), at::zeros({kStateRows, 1}, f64)};
  }
  const at::Tensor positives = make_positives(q, delta);
  // Ranks among the positives reuse pass 1 with the positives as the "negatives".
  const at::Tensor all_negative = at::zeros({num_pos}, q.options().dtype(at::kChar));
  at::Tensor false_positives, positive_sums;
  if (m == Method::kSorted) {
    // Float atomics (CUDA) are replaced by a deterministic reduction when asked for.
    const auto pass1 = [&](const at::Tensor& s, const at::Tensor& y) {
      return needs_deterministic_pass1(k)
                 ? deterministic_pass1(k, s, y, {}, positives, {}, delta)
                 : k.sorted_pass1(s, y, positives, delta);
    };
    false_positives = sums_from_histograms(positives, pass1(in.scores, in.labels), delta);
    positive_sums = sums_from_histograms(positives, pass1(q, all_negative), delta);
  } else {
    false_positives = k.pairwise_pass1(in.scores, in.labels, positives, delta);
    positive_sums = k.pairwise_pass1(q, all_negative, positives, delta);
  }
  return ap_positive_stage(positives, false_positives, positive_sums, interpolate, scores.scalar_type());
}

at::Tensor ap_loss_backward(const at::Tensor& grad_output, const at::Tensor& scores,
                            const at::Tensor& labels, const at::Tensor& state, double delta,
                            c10::string_view method) {
  check_inputs(scores, labels, delta);
  const Method m = parse_method(method);
  TORCH_CHECK(state.dim() == 2 && state.size(0) == kStateRows && state.scalar_type() == at::kDouble,
              "ap_loss_backward: malformed state");
  const FlatInputs in = flatten(scores, labels);
  auto [grad, flat_grad] = gradient_like(scores, in);
  if (state.size(1) == 1 || scores.numel() == 0) return grad.zero_();

  const at::Tensor scale = grad_output.to(at::kDouble).reshape({});
  const Kernels& k = kernels_for(scores);
  if (m == Method::kSorted) {
    k.sorted_pass2(in.scores, in.labels, state, delta, scale, flat_grad);
  } else {
    k.pairwise_pass2(in.scores, in.labels, state, delta, scale, flat_grad);
  }
  return grad;
}

TORCH_LIBRARY(aploss, m) {
  m.def(
      "ap_loss_forward(Tensor scores, Tensor labels, float delta, bool interpolate, str method)"
      " -> (Tensor, Tensor)");
  m.def(
      "ap_loss_backward(Tensor grad_output, Tensor scores, Tensor labels, Tensor state,"
      " float delta, str method) -> Tensor");
}

TORCH_LIBRARY_IMPL(aploss, CPU, m) {
  m.impl("ap_loss_forward", &ap_loss_forward);
  m.impl("ap_loss_backward", &ap_loss_backward);
}

}  // namespace aploss
