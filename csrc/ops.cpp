// The aploss operators: schema, the checks of what a caller hands them, and each one's
// call into the pipeline (pipeline.h) or its stages (stages.h).
#include "ops.h"

#include <ATen/ATen.h>

#include <limits>
#include <string>

#include "aploss/invariants.h"
#include "aploss/kernels.h"
#include "group_codes.h"
#include "loss_inputs.h"
#include "losses.h"
#include "op_checks.h"
#include "pipeline.h"

namespace aploss {
namespace ops {
namespace {

Method parse_method(c10::string_view method) {
  if (method == "sorted" || method == "auto") return Method::kSorted;
  if (method == "pairwise") return Method::kPairwise;
  TORCH_CHECK_VALUE(false, "method must be one of 'auto', 'sorted', 'pairwise'; got '",
                    std::string(method), "'");
}

// The method, which `loss` must support.
Method loss_method(const LossDef& loss, c10::string_view method) {
  const Method m = parse_method(method);
  TORCH_CHECK_VALUE(loss.pairwise || m == Method::kSorted,
                    "method must be 'sorted' or 'auto' for this loss, got '", std::string(method),
                    "'");
  return m;
}

using checks::check_delta;

Method check_grouping(const std::optional<at::Tensor>& codes, const at::Tensor& scores,
                      Method m) {
  if (codes.has_value()) {
    check_group_ids(*codes, scores);
    TORCH_CHECK_VALUE(m == Method::kSorted,
                      "group_ids work with method 'sorted' or 'auto', not 'pairwise'");
  }
  return m;
}
Method check_grouping(const std::optional<at::Tensor>& codes, const at::Tensor& scores,
                      c10::string_view method) {
  return check_grouping(codes, scores, parse_method(method));
}

// The positives a stage operator is given, as rank_positives returned them: structure and
// invariants (op_checks.h) into `inv`, which the caller raises.
Positives checked_positives(Invariants& inv, const at::Tensor& positives,
                            const at::Tensor& offsets, const at::Tensor& positive_group,
                            double delta) {
  const Positives pos{positives.contiguous(), offsets.contiguous(), positive_group.contiguous()};
  checks::check_positives(inv, pos, delta);
  return pos;
}

// The loss named by an operator's `loss` argument; an unknown name is the operator's error.
const LossDef& loss_of(const char* op, c10::string_view name) {
  return named(op, [&]() -> const LossDef& { return find_loss(name); });
}

// Positions fit a float64 exactly (positive_grads keeps them as float64).
constexpr int64_t kMaxPosition = int64_t(1) << 53;

}  // namespace

ForwardTuple loss_forward(const Kernels& k, c10::string_view loss_name, const at::Tensor& scores,
                          const at::Tensor& labels, const std::optional<at::Tensor>& values,
                          const std::optional<at::Tensor>& group_ids, double delta,
                          bool interpolate, c10::string_view method) {
  const LossDef& loss = loss_of(kLossForward, loss_name);
  return named(loss.name, [&]() -> ForwardTuple {
    loss.check_inputs(scores, labels, values.value_or(at::Tensor()), delta);
    const Method m = check_grouping(group_ids, scores, loss_method(loss, method));
    ForwardOutputs out = run_forward(k, loss, scores, labels, values.value_or(at::Tensor()),
                                     group_ids, delta, interpolate, m);
    return {out.loss,  out.extra,  out.state,          out.offsets,
            out.codes, out.labels, out.positive_grads, out.classes};
  });
}

at::Tensor loss_backward(const Kernels& k, const at::Tensor& grad_output, const at::Tensor& scores,
                    const at::Tensor& labels, const at::Tensor& classes,
                    const std::optional<at::Tensor>& codes, const at::Tensor& state,
                    const at::Tensor& offsets, const at::Tensor& positive_grads, double delta,
                    c10::string_view method) {
  const Method m = check_grouping(codes, scores, method);
  checks::check_delta_for_scores(scores.scalar_type(), delta);
  const at::Device device = scores.device();
  TORCH_CHECK_TYPE(at::isFloatingType(grad_output.scalar_type()),
                   "grad_output must be floating, got ", grad_output.scalar_type());
  TORCH_CHECK_VALUE(grad_output.numel() == 1 && grad_output.device() == device,
                    "grad_output must hold one value on the scores' device, got shape ",
                    grad_output.sizes(), " on ", grad_output.device());
  checks::expect_tensor(state, "state", at::kByte, 1, device);
  checks::expect_tensor(classes, "classes", at::kLong, 1, device);
  checks::expect_tensor(positive_grads, "positive_grads", at::kDouble, 2, device);
  TORCH_CHECK_VALUE(positive_grads.size(1) == 2,
                    "positive_grads must have shape (P, 2) [position, gradient], got ",
                    positive_grads.sizes());
  // The forward's own outputs (the losses' autograd) need no O(P) check.
  const bool check_values = !checks::forward_outputs_trusted();
  if (classes.numel() > 0) {
    // A backend's ranking_forward ran: its entry classes stand for the labels.
    TORCH_CHECK_VALUE(k.ranking_backward != nullptr && !codes.has_value() && m == Method::kSorted,
                      "entry classes come from an ungrouped sorted forward on a backend that "
                      "evaluates it as a whole");
    TORCH_CHECK_VALUE(classes.numel() == (scores.numel() + 31) / 32,
                      "classes must be one int64 word per 32 entries (",
                      (scores.numel() + 31) / 32, "), got ", classes.numel());
    // The forward's flat order: that of scores with its labels (Rank & Sort's are not kept:
    // its inputs are contiguous).
    const FlatInputs flat = flatten(scores, labels.sizes() == scores.sizes() ? labels : scores);
    checks::expect_tensor(offsets, "offsets", at::kLong, 1, device);
    TORCH_CHECK_VALUE(offsets.numel() == 2, "offsets of one ranking must be [0, P], got ",
                      offsets.numel(), " values");
    if (check_values) {
      Invariants inv;
      checks::check_offsets(inv, offsets, positive_grads.size(0));
      checks::check_positive_grads(inv, positive_grads, scores.numel(), device);
      k.check_ranking_state(inv, flat.scores, classes, state, positive_grads);
      inv.raise_if_broken();
    }
    auto [grad, flat_grad] = gradient_like(scores, flat);
    k.ranking_backward(flat.scores, classes, state, positive_grads, grad_output, flat_grad);
    return grad;
  }
  // Flat labels (Rank & Sort's int8 labels) read like scores.
  const at::Tensor& shaped = labels.dim() == 1 && labels.numel() == scores.numel() &&
                                     scores.is_contiguous() && labels.sizes() != scores.sizes()
                                 ? labels.view(scores.sizes())
                                 : labels;
  check_labels_like_scores(scores, shaped, delta);
  // No entry: a backend's forward returned its workspace without classes.
  if (scores.numel() == 0) return at::zeros_like(scores, at::MemoryFormat::Contiguous);
  TORCH_CHECK_VALUE(state.numel() > 0 && state.numel() % (kStateRows * 8) == 0,
                    "state must hold the (", int64_t(kStateRows),
                    ", P + 1) float64 rows that the forward returned, got ", state.numel(),
                    " bytes");
  const at::Tensor rows = state_rows(state.contiguous());
  const int64_t num_pos = rows.size(1) - 1;
  TORCH_CHECK_VALUE(positive_grads.size(0) <= num_pos,  // fewer: another process's positives
                    "positive_grads must hold at most one row per positive of the state (",
                    num_pos, "), got ", positive_grads.size(0));
  const FlatInputs flat = flatten(scores, shaped);
  auto [grad, flat_grad] = gradient_like(scores, flat);
  if (num_pos == 0) return grad.zero_();
  checks::expect_tensor(offsets, "offsets", at::kLong, 1, device);
  TORCH_CHECK_VALUE(offsets.numel() >= 2,
                    "offsets must hold U + 1 >= 2 values (one segment per group), got ",
                    offsets.numel());
  if (check_values) {
    Invariants inv;
    checks::check_state_rows(inv, rows, offsets, positive_grads, scores.numel(), delta);
    inv.raise_if_broken();
  }
  const at::Tensor scale = grad_output.to(at::kDouble).reshape({});
  aploss::pass2(k, backward_entries(k, flat, scores, codes), rows, offsets.contiguous(),
                positive_grads, delta, scale, flat_grad, m);
  return grad;
}

at::Tensor gather(const Kernels& k, const at::Tensor& scores, const at::Tensor& labels,
                  const std::optional<at::Tensor>& codes) {
  check_labels_like_scores(scores, labels, 1.0);
  (void)check_grouping(codes, scores, "sorted");
  if (scores.numel() == 0) return at::empty({3, 0}, scores.options().dtype(at::kDouble));
  return aploss::gather(k, entries(k, flatten(scores, labels), scores, codes));
}

at::Tensor pass1(const Kernels& k, const at::Tensor& scores, const at::Tensor& labels,
                 const std::optional<at::Tensor>& codes, const at::Tensor& positives,
                 const at::Tensor& offsets, const at::Tensor& positive_group, double delta,
                 c10::string_view method) {
  check_labels_like_scores(scores, labels, delta);
  const Method m = check_grouping(codes, scores, method);
  Invariants inv;
  const Positives pos = checked_positives(inv, positives, offsets, positive_group, delta);
  TORCH_CHECK_VALUE(positives.device() == scores.device(), "positives are on ",
                    positives.device(), " but scores are on ", scores.device());
  inv.raise_if_broken();
  if (scores.numel() == 0) return at::zeros({positives.size(1)}, positives.options());
  return aploss::pass1(k, entries(k, flatten(scores, labels), scores, codes), pos, delta, m);
}


std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> positive_stage(
    const Kernels& k, c10::string_view loss_name, const at::Tensor& positives,
    const at::Tensor& offsets, const at::Tensor& positive_group, const at::Tensor& positions,
    const at::Tensor& memory_rank, const at::Tensor& false_positives,
    const std::optional<at::Tensor>& values, double delta, bool interpolate,
    at::ScalarType loss_dtype, c10::string_view method) {
  const LossDef& loss = find_loss(loss_name);  // errors named by register_backend
  const Method m = loss_method(loss, method);
  check_delta(delta);
  TORCH_CHECK_TYPE(at::isFloatingType(loss_dtype), "loss_dtype must be floating, got ",
                   loss_dtype);
  if (loss.values_name != nullptr) {
    TORCH_CHECK_VALUE(values.has_value(), loss.name, "'s stage needs its values (",
                      loss.values_name, "), one per positive");
  } else {
    TORCH_CHECK_VALUE(!values.has_value(), loss.name, "'s stage takes no values");
  }
  Invariants inv;
  Positives pos = checked_positives(inv, positives, offsets, positive_group, delta);
  const int64_t num_pos = positives.size(1);
  const at::Device device = positives.device();
  checks::check_indices(inv, positions, "positions", num_pos, kMaxPosition, device);
  checks::check_indices(inv, memory_rank, "memory_rank", num_pos, num_pos, device);
  checks::check_per_positive(inv, false_positives, "false_positives", num_pos, false, device);
  if (values.has_value()) {
    checks::check_per_positive(inv, *values, loss.values_name, num_pos, loss.values_at_most_one,
                               device);
  }
  if (num_pos > 1) {
    inv.require(std::get<0>(memory_rank.sort()).diff() > 0,
                "memory_rank must be a permutation of [0, P)");
  }
  inv.raise_if_broken();
  pos.positions = positions.contiguous();
  pos.memory_rank = memory_rank.contiguous();
  // The values come in the positives' memory order; the stage reads them sorted.
  const at::Tensor sorted_values =
      values.has_value() ? values->index_select(0, pos.memory_rank) : at::Tensor();
  StageOutputs out = loss.stage(
      {k, pos, false_positives.contiguous(), sorted_values, delta, interpolate, loss_dtype, m});
  return {out.loss, out.extra, state_bytes(out.state), out.positive_grads};
}

}  // namespace ops

TORCH_LIBRARY(aploss, m) {
  // Every loss: `loss` names it (losses.h); labels are its labels input (Rank & Sort: the
  // targets), values its per-positive input (aLRP: the regression losses).
  // loss -> (loss, extra): what a loss's Python function calls in eager mode. Its autograd
  // keeps the rest of loss_forward's outputs for loss_backward (csrc/autograd.cpp), so a
  // call hands Python two tensors, not eight. Under torch.compile the losses call
  // loss_forward: a graph must return the data-dependent sizes of what the backward reads.
  m.def(
      "loss(str loss, Tensor scores, Tensor labels, Tensor? values, Tensor? group_ids,"
      " float delta, bool interpolate, str method) -> (Tensor, Tensor)");
  // The same forward with everything its backward reads (torch.func transforms and
  // aploss_cuda.distributed call it): (loss, extra, state, offsets, codes, labels,
  // positive_grads, classes).
  m.def(
      "loss_forward(str loss, Tensor scores, Tensor labels, Tensor? values, Tensor? group_ids,"
      " float delta, bool interpolate, str method)"
      " -> (Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor)");
  m.def(
      "loss_backward(Tensor grad_output, Tensor scores, Tensor labels, Tensor classes,"
      " Tensor? group_codes, Tensor state, Tensor offsets, Tensor positive_grads, float delta,"
      " str method) -> Tensor");
  // The stages, for aploss_cuda/distributed.py.
  m.def("loss_labels(str loss, Tensor labels) -> Tensor");
  m.def("positive_values(str loss, Tensor scores, Tensor labels, Tensor? values,"
        " Tensor positions) -> Tensor");
  m.def("gather(Tensor scores, Tensor labels, Tensor? codes) -> Tensor");
  m.def(
      "rank_positives(Tensor gathered, int num_groups, float delta)"
      " -> (Tensor, Tensor, Tensor, Tensor, Tensor)");
  m.def(
      "pass1(Tensor scores, Tensor labels, Tensor? codes, Tensor positives, Tensor offsets,"
      " Tensor positive_group, float delta, str method) -> Tensor");
  m.def(
      "positive_stage(str loss, Tensor positives, Tensor offsets, Tensor positive_group,"
      " Tensor positions, Tensor memory_rank, Tensor false_positives, Tensor? values,"
      " float delta, bool interpolate, ScalarType loss_dtype, str method)"
      " -> (Tensor, Tensor, Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(aploss, CPU, m) { ops::register_backend<&cpu_device_kernels>(m); }

namespace {

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> rank_positives_op(
    const at::Tensor& gathered, int64_t num_groups, double delta) {
  return ops::named(ops::kRankPositives, [&]() -> std::tuple<at::Tensor, at::Tensor, at::Tensor,
                                                             at::Tensor, at::Tensor> {
    checks::check_delta(delta);
    checks::expect_tensor(gathered, "gathered", at::kDouble, 2, gathered.device());
    TORCH_CHECK_VALUE(gathered.size(0) == 3 && gathered.size(1) >= 1,
                      "gathered must have shape (3, P) with P >= 1 ([scores; codes; "
                      "positions], as gather returns them), got ",
                      gathered.sizes());
    TORCH_CHECK_VALUE(num_groups >= 1 && num_groups <= std::numeric_limits<int32_t>::max(),
                      "num_groups must be in [1, 2^31 - 1], got ", num_groups);
    Invariants inv;
    inv.require(at::isfinite(gathered[0]), "gathered scores must be finite");
    const at::Tensor code = gathered[1], position = gathered[2];
    inv.require((code >= 0) & (code < static_cast<double>(num_groups)) & (code == code.floor()),
                "gathered codes must be integers in [0, num_groups)");
    inv.require((position >= 0) & (position < static_cast<double>(int64_t(1) << 53)) &
                    (position == position.floor()),
                "gathered positions must be integers in [0, 2^53)");
    inv.raise_if_broken();
    const Positives pos = rank_positives(gathered, num_groups, delta);
    return {pos.positives, pos.offsets, pos.positive_group, pos.positions, pos.memory_rank};
  });
}

// The labels the passes read, flat, where they are not `labels` itself (an empty tensor
// then).
at::Tensor loss_labels_op(c10::string_view loss_name, const at::Tensor& labels) {
  const LossDef& loss = ops::loss_of(ops::kLossLabels, loss_name);
  return ops::named(loss.name, [&] {
    return loss.pass_labels != nullptr ? loss.pass_labels(labels).reshape({-1})
                                       : at::empty({0}, labels.options().dtype(at::kChar));
  });
}

// One float64 value per positive at the flat `positions`, in their order (an empty tensor
// for a loss without values).
at::Tensor positive_values_op(c10::string_view loss_name, const at::Tensor& scores,
                              const at::Tensor& labels, const std::optional<at::Tensor>& values,
                              const at::Tensor& positions) {
  const LossDef& loss = ops::loss_of(ops::kPositiveValues, loss_name);
  return ops::named(loss.name, [&] {
    loss.check_inputs(scores, labels, values.value_or(at::Tensor()), 1.0);
    checks::expect_tensor(positions, "positions", at::kLong, 1, scores.device());
    Invariants inv;
    inv.require((positions >= 0) & (positions < std::max<int64_t>(scores.numel(), 1)),
                "positions must lie in [0, scores.numel())");
    inv.raise_if_broken();
    if (loss.positive_values == nullptr) {
      return at::empty({0}, scores.options().dtype(at::kDouble));
    }
    const at::Tensor in_order = at::arange(positions.numel(), positions.options());
    return loss.positive_values(labels, values.value_or(at::Tensor()), positions, in_order,
                                scores);
  });
}

}  // namespace

// Sorting P values and elementwise work: ATen ops only, the same code on every device.
TORCH_LIBRARY_IMPL(aploss, CompositeExplicitAutograd, m) {
  m.impl("rank_positives", &rank_positives_op);
  m.impl("loss_labels", &loss_labels_op);
  m.impl("positive_values", &positive_values_op);
}

}  // namespace aploss
