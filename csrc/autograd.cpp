// The losses' autograd, registered in C++ for the Autograd dispatch key: loss and
// loss_forward save loss_forward's O(P) state and the backward is pass 2 (ops.h,
// loss_backward). In C++, so that a call pays no Python between the operators: at small N
// the autograd glue is most of a call's cost. torch.compile traces through it (opcheck's
// aot_dispatch tests).
#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/autograd.h>
#include <torch/library.h>

#include <optional>
#include <string>
#include <tuple>

#include "losses.h"
#include "op_checks.h"

namespace aploss {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

using BackwardSignature = at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                     const at::Tensor&, const std::optional<at::Tensor>&,
                                     const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                     double, c10::string_view);

const c10::TypedOperatorHandle<BackwardSignature>& backward_op() {
  static const auto op = c10::Dispatcher::singleton()
                             .findSchemaOrThrow("aploss::loss_backward", "")
                             .typed<BackwardSignature>();
  return op;
}

// What every loss's backward reads (pass 2): scores, the labels (or the entries' packed
// classes), the group codes, the state, offsets and the positives' own gradients.
struct Saved {
  at::Tensor labels, classes, codes, state, offsets, positive_grads;
};

void save(AutogradContext* ctx, const at::Tensor& scores, const Saved& s, bool grouped,
          double delta, c10::string_view method) {
  ctx->save_for_backward({scores, s.labels, s.classes, s.codes, s.state, s.offsets,
                          s.positive_grads});
  ctx->saved_data["grouped"] = grouped;
  ctx->saved_data["delta"] = delta;
  ctx->saved_data["pairwise"] = method == "pairwise";
  ctx->set_materialize_grads(false);  // no zero gradients made for the O(P) outputs
}

struct Pass2Function;

at::Tensor run_pass2(AutogradContext* ctx, const at::Tensor& grad_loss);

// The arguments of pass 2 as the forward saved them.
template <typename Call>
at::Tensor with_saved(AutogradContext* ctx, const at::Tensor& grad_loss, Call call) {
  const variable_list saved = ctx->get_saved_variables();
  const bool grouped = ctx->saved_data["grouped"].toBool();
  return call(grad_loss, saved[0], saved[1], saved[2],
              grouped ? std::optional<at::Tensor>(saved[3]) : std::nullopt, saved[4], saved[5],
              saved[6], ctx->saved_data["delta"].toDouble(),
              ctx->saved_data["pairwise"].toBool() ? "pairwise" : "sorted");
}

using ForwardTuple = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor,
                                at::Tensor, at::Tensor, at::Tensor>;
using ForwardSignature = ForwardTuple(c10::string_view, const at::Tensor&, const at::Tensor&,
                                      const std::optional<at::Tensor>&,
                                      const std::optional<at::Tensor>&, double, bool,
                                      c10::string_view);

const c10::TypedOperatorHandle<ForwardSignature>& forward_op() {
  static const auto op = c10::Dispatcher::singleton()
                             .findSchemaOrThrow("aploss::loss_forward", "")
                             .typed<ForwardSignature>();
  return op;
}

// loss_forward -> (loss, extra, state, offsets, codes, labels, positive_grads, classes);
// the loss is differentiable to scores. aLRP's localisation component is differentiated
// outside the operator, from extra (loss.py). Returns every output for loss_forward, or
// (loss, extra) for loss: each output costs the caller a Python object and autograd
// bookkeeping, a measurable share of a small call.
template <bool kEveryOutput>
struct LossFunction : public torch::autograd::Function<LossFunction<kEveryOutput>> {
  static variable_list forward(AutogradContext* ctx, c10::string_view loss,
                               const at::Tensor& scores, const at::Tensor& labels,
                               const std::optional<at::Tensor>& values,
                               const std::optional<at::Tensor>& ids, double delta,
                               bool interpolate, c10::string_view method) {
    at::AutoDispatchBelowADInplaceOrView below;
    auto [out, extra, state, offsets, codes, pass_labels, positive_grads, classes] =
        forward_op().call(loss, scores, labels, values, ids, delta, interpolate, method);
    // The labels pass 2 reads: the forward's where the loss converts its labels input.
    const at::Tensor& read = find_loss(loss).pass_labels != nullptr ? pass_labels : labels;
    save(ctx, scores, {read, classes, codes, state, offsets, positive_grads}, ids.has_value(),
         delta, method);
    if constexpr (kEveryOutput) {
      ctx->mark_non_differentiable(
          {extra, state, offsets, codes, pass_labels, positive_grads, classes});
      return {out, extra, state, offsets, codes, pass_labels, positive_grads, classes};
    } else {
      ctx->mark_non_differentiable({extra});
      return {out, extra};
    }
  }
  // One gradient per input: the loss's name, scores, labels, values, ids, delta,
  // interpolate, method.
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    return {{}, run_pass2(ctx, grads[0]), {}, {}, {}, {}, {}, {}};
  }
};

// pass2 itself has no derivative: the error-driven gradient is not the derivative of a
// function. A call that would need one (double backward) raises when it is asked for.
// (The operator's own Autograd kernel is the Python one in _ops.py, which torch.func
// transforms can run; this one records run_pass2's calls.)
struct Pass2Function : public torch::autograd::Function<Pass2Function> {
  static variable_list forward(AutogradContext*, const at::Tensor& grad_output,
                               const at::Tensor& scores, const at::Tensor& labels,
                               const at::Tensor& classes, const std::optional<at::Tensor>& codes,
                               const at::Tensor& state, const at::Tensor& offsets,
                               const at::Tensor& positive_grads, double delta,
                               c10::string_view method) {
    at::AutoDispatchBelowADInplaceOrView below;
    return {backward_op().call(grad_output, scores, labels, classes, codes, state, offsets,
                            positive_grads, delta, method)};
  }
  static variable_list backward(AutogradContext*, variable_list) {
    TORCH_CHECK(false,
                "aploss_cuda's losses do not support double backward: their gradient is the "
                "error-driven update, not the derivative of a function, so it has no "
                "derivative");
  }
};

at::Tensor run_pass2(AutogradContext* ctx, const at::Tensor& grad_loss) {
  // The forward's own outputs, saved for backward (autograd refuses them once modified in
  // place): pass 2 skips their O(P) checks.
  const checks::TrustForwardOutputs trusted;
  return with_saved(ctx, grad_loss, [](auto&&... args) -> at::Tensor {
    // Recorded (so that a double backward raises) only when the backward itself is.
    if (at::GradMode::is_enabled()) return Pass2Function::apply(args...)[0];
    at::AutoDispatchBelowADInplaceOrView below;
    return backward_op().call(args...);
  });
}

ForwardTuple loss_forward_autograd(c10::string_view loss, const at::Tensor& scores,
                                   const at::Tensor& labels,
                                   const std::optional<at::Tensor>& values,
                                   const std::optional<at::Tensor>& ids, double delta,
                                   bool interpolate, c10::string_view method) {
  const variable_list out = LossFunction<true>::apply(loss, scores, labels, values, ids, delta,
                                                      interpolate, method);
  return {out[0], out[1], out[2], out[3], out[4], out[5], out[6], out[7]};
}

std::tuple<at::Tensor, at::Tensor> loss_autograd(c10::string_view loss, const at::Tensor& scores,
                                                 const at::Tensor& labels,
                                                 const std::optional<at::Tensor>& values,
                                                 const std::optional<at::Tensor>& ids,
                                                 double delta, bool interpolate,
                                                 c10::string_view method) {
  const variable_list out = LossFunction<false>::apply(loss, scores, labels, values, ids, delta,
                                                       interpolate, method);
  return {out[0], out[1]};
}

// loss below autograd (inference mode, a traced graph): loss_forward's first two outputs.
std::tuple<at::Tensor, at::Tensor> loss_without_autograd(
    c10::string_view loss, const at::Tensor& scores, const at::Tensor& labels,
    const std::optional<at::Tensor>& values, const std::optional<at::Tensor>& ids, double delta,
    bool interpolate, c10::string_view method) {
  auto out = forward_op().call(loss, scores, labels, values, ids, delta, interpolate, method);
  return {std::get<0>(out), std::get<1>(out)};
}

}  // namespace

TORCH_LIBRARY_IMPL(aploss, Autograd, m) {
  m.impl("loss", &loss_autograd);
  m.impl("loss_forward", &loss_forward_autograd);
}

TORCH_LIBRARY_IMPL(aploss, CompositeExplicitAutograd, m) {
  m.impl("loss", &loss_without_autograd);
}

}  // namespace aploss
