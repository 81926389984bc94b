// The losses' backward, registered in C++ for the Autograd dispatch key: each forward
// operator saves its O(P) state and the backward is pass 2 (../ops.h, backward). In C++,
// so that a call pays no Python between the operators: at small N the autograd glue is
// most of a call's cost. torch.compile traces through it (opcheck's aot_dispatch tests).
#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/autograd.h>
#include <torch/library.h>

#include <optional>
#include <string>
#include <tuple>

#include "op_checks.h"

namespace aploss {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

const c10::TypedOperatorHandle<at::Tensor(
    const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&,
    const std::optional<at::Tensor>&, const at::Tensor&, const at::Tensor&, const at::Tensor&,
    double, c10::string_view)>&
pass2_op() {
  static const auto op = c10::Dispatcher::singleton()
                             .findSchemaOrThrow("aploss::pass2", "")
                             .typed<at::Tensor(const at::Tensor&, const at::Tensor&,
                                               const at::Tensor&, const at::Tensor&,
                                               const std::optional<at::Tensor>&,
                                               const at::Tensor&, const at::Tensor&,
                                               const at::Tensor&, double, c10::string_view)>();
  return op;
}

template <typename Signature>
c10::TypedOperatorHandle<Signature> forward_op(const char* name) {
  return c10::Dispatcher::singleton().findSchemaOrThrow(name, "").typed<Signature>();
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

// ap_loss_forward -> (loss, state, offsets, codes, positive_grads, classes)
struct APLossFunction : public torch::autograd::Function<APLossFunction> {
  static variable_list forward(AutogradContext* ctx, const at::Tensor& scores,
                               const at::Tensor& labels, const std::optional<at::Tensor>& ids,
                               double delta, bool interpolate, c10::string_view method) {
    at::AutoDispatchBelowADInplaceOrView below;
    static const auto op = forward_op<std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor,
                                                 at::Tensor, at::Tensor>(
        const at::Tensor&, const at::Tensor&, const std::optional<at::Tensor>&, double, bool,
        c10::string_view)>("aploss::ap_loss_forward");
    auto [loss, state, offsets, codes, positive_grads, classes] =
        op.call(scores, labels, ids, delta, interpolate, method);
    save(ctx, scores, {labels, classes, codes, state, offsets, positive_grads}, ids.has_value(),
         delta, method);
    ctx->mark_non_differentiable({state, offsets, codes, positive_grads, classes});
    return {loss, state, offsets, codes, positive_grads, classes};
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    return {run_pass2(ctx, grads[0]), {}, {}, {}, {}, {}};
  }
};

// rank_sort_forward -> (loss, parts, state, offsets, codes, labels, positive_grads, classes)
struct RankSortFunction : public torch::autograd::Function<RankSortFunction> {
  static variable_list forward(AutogradContext* ctx, const at::Tensor& scores,
                               const at::Tensor& targets, const std::optional<at::Tensor>& ids,
                               double delta) {
    at::AutoDispatchBelowADInplaceOrView below;
    static const auto op =
        forward_op<std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor,
                              at::Tensor, at::Tensor, at::Tensor>(
            const at::Tensor&, const at::Tensor&, const std::optional<at::Tensor>&, double)>(
            "aploss::rank_sort_forward");
    auto [loss, parts, state, offsets, codes, labels, positive_grads, classes] =
        op.call(scores, targets, ids, delta);
    // labels: the int8 labels of the targets, where pass 2 reads labels.
    save(ctx, scores, {labels, classes, codes, state, offsets, positive_grads}, ids.has_value(),
         delta, "sorted");
    ctx->mark_non_differentiable({parts, state, offsets, codes, labels, positive_grads, classes});
    return {loss, parts, state, offsets, codes, labels, positive_grads, classes};
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    return {run_pass2(ctx, grads[0]), {}, {}, {}};
  }
};

// alrp_forward -> (cls_loss, loc_weights, state, offsets, codes, positive_grads, classes);
// the localisation component is differentiated outside the operator (loss.py).
struct ALRPFunction : public torch::autograd::Function<ALRPFunction> {
  static variable_list forward(AutogradContext* ctx, const at::Tensor& scores,
                               const at::Tensor& labels, const at::Tensor& regression_losses,
                               const std::optional<at::Tensor>& ids, double delta) {
    at::AutoDispatchBelowADInplaceOrView below;
    static const auto op =
        forward_op<std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor,
                              at::Tensor, at::Tensor>(
            const at::Tensor&, const at::Tensor&, const at::Tensor&,
            const std::optional<at::Tensor>&, double)>("aploss::alrp_forward");
    auto [loss, loc_weights, state, offsets, codes, positive_grads, classes] =
        op.call(scores, labels, regression_losses, ids, delta);
    save(ctx, scores, {labels, classes, codes, state, offsets, positive_grads}, ids.has_value(),
         delta, "sorted");
    ctx->mark_non_differentiable({loc_weights, state, offsets, codes, positive_grads, classes});
    return {loss, loc_weights, state, offsets, codes, positive_grads, classes};
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    return {run_pass2(ctx, grads[0]), {}, {}, {}, {}};
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
    return {pass2_op().call(grad_output, scores, labels, classes, codes, state, offsets,
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
    return pass2_op().call(args...);
  });
}

template <typename... T, size_t... I>
std::tuple<T...> as_tuple(const variable_list& v, std::index_sequence<I...>) {
  return {v[I]...};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>
ap_loss_autograd(const at::Tensor& scores, const at::Tensor& labels,
                const std::optional<at::Tensor>& ids, double delta, bool interpolate,
                c10::string_view method) {
  return as_tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>(
      APLossFunction::apply(scores, labels, ids, delta, interpolate, method),
      std::make_index_sequence<6>());
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor,
           at::Tensor>
rank_sort_autograd(const at::Tensor& scores, const at::Tensor& targets,
                   const std::optional<at::Tensor>& ids, double delta) {
  return as_tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor,
                  at::Tensor, at::Tensor>(RankSortFunction::apply(scores, targets, ids, delta),
                                          std::make_index_sequence<8>());
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>
alrp_autograd(const at::Tensor& scores, const at::Tensor& labels,
              const at::Tensor& regression_losses, const std::optional<at::Tensor>& ids,
              double delta) {
  return as_tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor,
                  at::Tensor>(ALRPFunction::apply(scores, labels, regression_losses, ids, delta),
                              std::make_index_sequence<7>());
}

}  // namespace

TORCH_LIBRARY_IMPL(aploss, Autograd, m) {
  m.impl("ap_loss_forward", &ap_loss_autograd);
  m.impl("rank_sort_forward", &rank_sort_autograd);
  m.impl("alrp_forward", &alrp_autograd);
}

}  // namespace aploss
