// The aploss operators: schema, input checks, and the one driver that strings the
// stages (stages.h) together for single and grouped rankings.
#include "ops.h"

#include <ATen/ATen.h>

#include <cmath>
#include <limits>
#include <string>

#include "aploss/kernels.h"
#include "flat_inputs.h"
#include "group_codes.h"
#include "alrp_stage.h"
#include "aploss/invariants.h"
#include "op_checks.h"
#include "family_inputs.h"
#include "rank_sort_stage.h"
#include "stages.h"

namespace aploss {
namespace ops {
namespace {

Method parse_method(c10::string_view method) {
  if (method == "sorted" || method == "auto") return Method::kSorted;
  if (method == "pairwise") return Method::kPairwise;
  TORCH_CHECK_VALUE(false, "method must be one of 'auto', 'sorted', 'pairwise'; got '",
                    std::string(method), "'");
}

using checks::check_delta;

// ValueError / TypeError naming the problem (shapes, devices, dtypes, delta).
void check_inputs(const at::Tensor& scores, const at::Tensor& labels, double delta) {
  TORCH_CHECK_VALUE(scores.sizes() == labels.sizes(), "labels.shape ", labels.sizes(),
                    " must equal scores.shape ", scores.sizes());
  TORCH_CHECK_VALUE(scores.device() == labels.device(), "scores are on ",
                    scores.device(), " but labels are on ", labels.device());
  TORCH_CHECK_TYPE(at::isFloatingType(scores.scalar_type()),
                   "scores must be a floating dtype, got ", scores.scalar_type());
  const auto label_type = labels.scalar_type();
  TORCH_CHECK_TYPE(label_type == at::kBool || label_type == at::kChar || label_type == at::kByte ||
                       label_type == at::kInt || label_type == at::kLong ||
                       label_type == at::kFloat || label_type == at::kDouble,
                   "labels dtype ", label_type,
                   " is not supported (bool, int8, uint8, int32, int64, float32, float64)");
  checks::check_delta_for_scores(scores.scalar_type(), delta);
}

Method check_grouping(const std::optional<at::Tensor>& codes, const at::Tensor& scores,
                      c10::string_view method) {
  const Method m = parse_method(method);
  if (codes.has_value()) {
    check_group_ids(*codes, scores);
    TORCH_CHECK_VALUE(m == Method::kSorted,
                      "group_ids work with method 'sorted' or 'auto', not '",
                      std::string(method), "'");
  }
  return m;
}

// The operators' state: the stages' (kStateRows, P+1) float64 as bytes, or what a
// backend's ranking_forward keeps (opaque to everything but its ranking_backward).
at::Tensor state_bytes(const at::Tensor& rows) { return rows.view(at::kByte).view({-1}); }
at::Tensor state_rows(const at::Tensor& bytes) {
  return bytes.view(at::kDouble).view({kStateRows, -1});
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

// The stages' view of the N-sized inputs; codes (int32) broadcast to scores' shape,
// as code_layout.h lays them out when the backend reads them so (kernels.h), else one
// per entry.
Entries entries(const Kernels& k, const FlatInputs& in, const at::Tensor& scores,
                const std::optional<at::Tensor>& codes) {
  if (!codes.has_value()) return {in.scores, in.labels, {}};
  TORCH_CHECK_TYPE(codes->scalar_type() == at::kInt,
                   "codes must be int32 (dense group codes), got ", codes->scalar_type());
  if (k.broadcast_codes && scores.numel() > 0) {
    const BroadcastCodes broadcast = broadcast_codes(*codes, scores, in);
    if (broadcast.codes.defined()) {
      return {in.scores, in.labels, broadcast.codes, broadcast.repeat};
    }
  }
  return {in.scores, in.labels, flatten_like(*codes, scores, in)};
}

at::Tensor empty_codes(const at::Tensor& scores) {
  return at::empty({0}, scores.options().dtype(at::kInt));
}

// Everything before the positive stage, written once for every loss: group codes,
// gather, rank_positives, pass 1. `pos.positives` stays undefined when there is no
// positive.
struct Ranking {
  at::Tensor codes;  // dense int32 group codes (empty without group_ids), for the backward
  int64_t num_groups = 1;
  Positives pos;
  at::Tensor false_positives;
  bool has_positives() const { return pos.positives.defined(); }
};

Ranking rank_entries(const Kernels& k, const at::Tensor& scores, const at::Tensor& labels,
                     const std::optional<at::Tensor>& group_ids, double delta, Method method) {
  Ranking r;
  std::optional<at::Tensor> codes;
  if (group_ids.has_value()) {
    const GroupCodes groups = dense_group_codes(k, *group_ids, scores.numel());
    codes = groups.codes;
    r.num_groups = groups.num_groups;
  }
  r.codes = codes.value_or(empty_codes(scores));
  if (scores.numel() == 0) return r;
  const FlatInputs flat = flatten(scores, labels);
  const Entries in = entries(k, flat, scores, codes);
  at::Tensor gathered;
  try {
    gathered = aploss::gather(k, in);
  } catch (const c10::ValueError&) {
    // A negative id numbered on the device reaches the gather as its code, clamped to
    // int32: the ids themselves name it exactly (one more host read, on this error path).
    if (group_ids.has_value()) check_group_ids_non_negative(*group_ids);
    throw;
  }
  const int64_t num_pos = gathered.size(1);
  if (num_pos == 0) return r;
  TORCH_CHECK_VALUE(num_pos <= std::numeric_limits<int32_t>::max(),
                    "at most 2^31 - 1 positives, got ", num_pos);
  r.pos = rank_positives(gathered, r.num_groups, delta);
  r.false_positives = aploss::pass1(k, in, r.pos, delta, method);
  return r;
}

// What a call without positives returns: zero losses and an empty state.
at::Tensor empty_state(const at::Tensor& scores) {
  return state_bytes(at::zeros({kStateRows, 1}, scores.options().dtype(at::kDouble)));
}
at::Tensor empty_offsets(const Ranking& r, const at::Tensor& scores) {
  return at::zeros({r.num_groups + 1}, scores.options().dtype(at::kLong));
}
at::Tensor empty_positive_grads(const at::Tensor& scores) {
  return at::empty({0, 2}, scores.options().dtype(at::kDouble));
}
// The entries' classes when the backend's ranking_forward ran: none from the stages (pass
// 2 reads the labels).
at::Tensor no_classes(const at::Tensor& scores) {
  return at::empty({0}, scores.options().dtype(at::kLong));
}

// The family's N-sized inputs: contiguous, so that "the memory order of the positives"
// (regression losses, tie order) is the row-major order the user indexes with.
void check_contiguous(const at::Tensor& scores, const at::Tensor& other) {
  TORCH_CHECK_VALUE(scores.is_contiguous() && other.is_contiguous(),
                    "scores and labels/targets must be contiguous (the Python API makes them so)");
}

}  // namespace

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> forward(
    const Kernels& k, const at::Tensor& scores, const at::Tensor& labels,
    const std::optional<at::Tensor>& group_ids, double delta, bool interpolate,
    c10::string_view method) {
  check_inputs(scores, labels, delta);
  const Method m = check_grouping(group_ids, scores, method);
  if (!group_ids.has_value() && m == Method::kSorted && k.ranking_forward != nullptr) {
    const FlatInputs flat = flatten(scores, labels);
    RankingOutputs out = k.ranking_forward(
        {flat.scores, flat.labels, LossKind::kAP, delta, interpolate, at::Tensor()});
    return {out.loss, out.state, out.offsets, empty_codes(scores), out.positive_grads,
            out.classes};
  }
  const Ranking r = rank_entries(k, scores, labels, group_ids, delta, m);
  if (!r.has_positives()) {
    return {at::zeros({}, scores.options()), empty_state(scores), empty_offsets(r, scores),
            r.codes, empty_positive_grads(scores), no_classes(scores)};
  }
  auto [loss, state, positive_grads] = aploss::positive_stage(
      k, r.pos, r.false_positives, delta, interpolate, scores.scalar_type(), m);
  return {loss, state_bytes(state), r.pos.offsets, r.codes, positive_grads, no_classes(scores)};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor,
           at::Tensor>
rank_sort_forward(const Kernels& k, const at::Tensor& scores, const at::Tensor& targets,
                  const std::optional<at::Tensor>& group_ids, double delta) {
  TORCH_CHECK_VALUE(scores.sizes() == targets.sizes(), "targets.shape ",
                    targets.sizes(), " must equal scores.shape ", scores.sizes());
  TORCH_CHECK_VALUE(scores.device() == targets.device(), "scores are on ",
                    scores.device(), " but targets are on ", targets.device());
  check_contiguous(scores, targets);
  (void)check_grouping(group_ids, scores, "sorted");
  if (!group_ids.has_value() && k.ranking_forward != nullptr) {
    TORCH_CHECK_TYPE(at::isFloatingType(scores.scalar_type()) &&
                         at::isFloatingType(targets.scalar_type()),
                     "scores and targets must be floating, got ",
                     scores.scalar_type(), " and ", targets.scalar_type());
    checks::check_delta_for_scores(scores.scalar_type(), delta);
    RankingOutputs out = k.ranking_forward(
        {scores.view({-1}), targets.view({-1}), LossKind::kRankSort, delta, false, at::Tensor()});
    return {out.loss, out.parts, out.state, out.offsets, empty_codes(scores),
            out.labels.defined() ? out.labels.view({-1})
                                 : at::empty({0}, scores.options().dtype(at::kChar)),
            out.positive_grads, out.classes};
  }
  // The int8 labels of the targets, flat: what pass 2 reads.
  const at::Tensor labels = labels_from_targets(targets);
  check_inputs(scores, labels, delta);
  const Ranking r = rank_entries(k, scores, labels, group_ids, delta, Method::kSorted);
  if (!r.has_positives()) {
    const at::Tensor zero = at::zeros({}, scores.options());
    return {zero, at::zeros({2}, scores.options()), empty_state(scores), empty_offsets(r, scores),
            r.codes, labels.view({-1}), empty_positive_grads(scores), no_classes(scores)};
  }
  const at::Tensor positive_targets =
      targets.view({-1}).index_select(0, r.pos.positions).to(at::kDouble);
  RankSortStage stage = rank_sort_positive_stage(k, r.pos, r.false_positives, positive_targets,
                                                 delta, scores.scalar_type());
  return {stage.loss, stage.parts, state_bytes(stage.state), r.pos.offsets, r.codes,
          labels.view({-1}), stage.positive_grads, no_classes(scores)};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>
alrp_forward(
    const Kernels& k, const at::Tensor& scores, const at::Tensor& labels,
    const at::Tensor& regression_losses, const std::optional<at::Tensor>& group_ids,
    double delta) {
  check_inputs(scores, labels, delta);
  check_contiguous(scores, labels);
  (void)check_grouping(group_ids, scores, "sorted");
  if (!group_ids.has_value() && k.ranking_forward != nullptr) {
    check_regression_losses_layout(regression_losses, scores);
    RankingOutputs out = k.ranking_forward({scores.view({-1}), labels.view({-1}), LossKind::kALRP,
                                            delta, false, regression_losses.contiguous()});
    return {out.loss, out.loc_weights, out.state, out.offsets, empty_codes(scores),
            out.positive_grads, out.classes};
  }
  const Ranking r = rank_entries(k, scores, labels, group_ids, delta, Method::kSorted);
  const int64_t num_pos = r.has_positives() ? r.pos.positives.size(1) : 0;
  check_regression_losses(regression_losses, num_pos, scores);
  if (!r.has_positives()) {
    return {at::zeros({}, scores.options()), at::zeros({0}, scores.options().dtype(at::kDouble)),
            empty_state(scores), empty_offsets(r, scores), r.codes, empty_positive_grads(scores),
            no_classes(scores)};
  }
  const at::Tensor positive_losses =
      regression_losses.index_select(0, r.pos.memory_rank).to(at::kDouble);
  ALRPStage stage = alrp_positive_stage(k, r.pos, r.false_positives, positive_losses, delta,
                                        scores.scalar_type());
  return {stage.cls_loss, stage.loc_weights, state_bytes(stage.state), r.pos.offsets, r.codes,
          stage.positive_grads, no_classes(scores)};
}

at::Tensor backward(const Kernels& k, const at::Tensor& grad_output, const at::Tensor& scores,
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
  check_inputs(scores, shaped, delta);
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
  aploss::pass2(k, entries(k, flat, scores, codes), rows, offsets.contiguous(), positive_grads,
                delta, scale, flat_grad, m);
  return grad;
}

at::Tensor gather(const Kernels& k, const at::Tensor& scores, const at::Tensor& labels,
                  const std::optional<at::Tensor>& codes) {
  check_inputs(scores, labels, 1.0);
  (void)check_grouping(codes, scores, "sorted");
  if (scores.numel() == 0) return at::empty({3, 0}, scores.options().dtype(at::kDouble));
  return aploss::gather(k, entries(k, flatten(scores, labels), scores, codes));
}

at::Tensor pass1(const Kernels& k, const at::Tensor& scores, const at::Tensor& labels,
                 const std::optional<at::Tensor>& codes, const at::Tensor& positives,
                 const at::Tensor& offsets, const at::Tensor& positive_group, double delta,
                 c10::string_view method) {
  check_inputs(scores, labels, delta);
  const Method m = check_grouping(codes, scores, method);
  Invariants inv;
  const Positives pos = checked_positives(inv, positives, offsets, positive_group, delta);
  TORCH_CHECK_VALUE(positives.device() == scores.device(), "positives are on ",
                    positives.device(), " but scores are on ", scores.device());
  inv.raise_if_broken();
  if (scores.numel() == 0) return at::zeros({positives.size(1)}, positives.options());
  return aploss::pass1(k, entries(k, flatten(scores, labels), scores, codes), pos, delta, m);
}

namespace {

// Positions fit a float64 exactly (positive_grads keeps them as float64).
constexpr int64_t kMaxPosition = int64_t(1) << 53;

}  // namespace

std::tuple<at::Tensor, at::Tensor, at::Tensor> positive_stage(
    const Kernels& k, const at::Tensor& positives, const at::Tensor& offsets,
    const at::Tensor& positive_group, const at::Tensor& positions,
    const at::Tensor& false_positives, double delta, bool interpolate, at::ScalarType loss_dtype,
    c10::string_view method) {
  check_delta(delta);
  TORCH_CHECK_TYPE(at::isFloatingType(loss_dtype), "loss_dtype must be floating, got ",
                   loss_dtype);
  const Method m = parse_method(method);
  Invariants inv;
  Positives pos = checked_positives(inv, positives, offsets, positive_group, delta);
  const int64_t num_pos = positives.size(1);
  checks::check_indices(inv, positions, "positions", num_pos, kMaxPosition, positives.device());
  checks::check_per_positive(inv, false_positives, "false_positives", num_pos, false,
                             positives.device());
  inv.raise_if_broken();
  pos.positions = positions.contiguous();
  auto [loss, state, positive_grads] = aploss::positive_stage(
      k, pos, false_positives.contiguous(), delta, interpolate, loss_dtype, m);
  return {loss, state_bytes(state), positive_grads};
}

namespace {

// The family's stage operators: positives as rank_positives returns them, and one
// float64 value per sorted positive (Rank & Sort's targets in (0, 1], aLRP's regression
// losses >= 0). memory_rank: each positive's rank by position, a permutation of [0, P).
Positives check_family_positives(Invariants& inv, const at::Tensor& positives,
                                 const at::Tensor& offsets, const at::Tensor& positive_group,
                                 const at::Tensor& positions, const at::Tensor* memory_rank,
                                 const at::Tensor& false_positives, const at::Tensor& values,
                                 const char* values_name, bool targets, double delta,
                                 at::ScalarType loss_dtype) {
  check_delta(delta);
  TORCH_CHECK_TYPE(at::isFloatingType(loss_dtype), "loss_dtype must be floating, got ",
                   loss_dtype);
  Positives pos = checked_positives(inv, positives, offsets, positive_group, delta);
  const int64_t num_pos = positives.size(1);
  const at::Device device = positives.device();
  checks::check_indices(inv, positions, "positions", num_pos, kMaxPosition, device);
  checks::check_per_positive(inv, false_positives, "false_positives", num_pos, false, device);
  checks::check_per_positive(inv, values, values_name, num_pos, targets, device);
  pos.positions = positions.contiguous();
  pos.memory_rank = pos.positions;
  if (memory_rank != nullptr) {
    checks::check_indices(inv, *memory_rank, "memory_rank", num_pos, num_pos, device);
    if (num_pos > 1) {
      inv.require(std::get<0>(memory_rank->sort()).diff() > 0,
                  "memory_rank must be a permutation of [0, P)");
    }
    pos.memory_rank = memory_rank->contiguous();
  }
  return pos;
}

}  // namespace

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> rank_sort_stage(
    const Kernels& k, const at::Tensor& positives, const at::Tensor& offsets,
    const at::Tensor& positive_group, const at::Tensor& positions,
    const at::Tensor& false_positives, const at::Tensor& targets, double delta,
    at::ScalarType loss_dtype) {
  Invariants inv;
  const Positives pos =
      check_family_positives(inv, positives, offsets, positive_group, positions, nullptr,
                             false_positives, targets, "targets", true, delta, loss_dtype);
  inv.raise_if_broken();
  RankSortStage stage = rank_sort_positive_stage(k, pos, false_positives.contiguous(),
                                                 targets.contiguous(), delta, loss_dtype);
  return {stage.loss, stage.parts, state_bytes(stage.state), stage.positive_grads};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> alrp_stage(
    const Kernels& k, const at::Tensor& positives, const at::Tensor& offsets,
    const at::Tensor& positive_group, const at::Tensor& positions, const at::Tensor& memory_rank,
    const at::Tensor& false_positives, const at::Tensor& regression_losses, double delta,
    at::ScalarType loss_dtype) {
  Invariants inv;
  const Positives pos = check_family_positives(
      inv, positives, offsets, positive_group, positions, &memory_rank, false_positives,
      regression_losses, "regression_losses", false, delta, loss_dtype);
  inv.raise_if_broken();
  ALRPStage stage = alrp_positive_stage(k, pos, false_positives.contiguous(),
                                        regression_losses.contiguous(), delta, loss_dtype);
  return {stage.cls_loss, stage.loc_weights, state_bytes(stage.state), stage.positive_grads};
}

}  // namespace ops

TORCH_LIBRARY(aploss, m) {
  m.def(
      "ap_loss_forward(Tensor scores, Tensor labels, Tensor? group_ids, float delta,"
      " bool interpolate, str method) -> (Tensor, Tensor, Tensor, Tensor, Tensor, Tensor)");
  m.def(
      "rank_sort_forward(Tensor scores, Tensor targets, Tensor? group_ids, float delta)"
      " -> (Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor)");
  m.def(
      "alrp_forward(Tensor scores, Tensor labels, Tensor regression_losses, Tensor? group_ids,"
      " float delta) -> (Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor)");
  // The backward of every loss.
  m.def(
      "pass2(Tensor grad_output, Tensor scores, Tensor labels, Tensor classes, Tensor? group_codes,"
      " Tensor state, Tensor offsets, Tensor positive_grads, float delta, str method) -> Tensor");
  // The stages, for aploss_cuda/distributed.py.
  m.def("gather(Tensor scores, Tensor labels, Tensor? codes) -> Tensor");
  m.def(
      "rank_positives(Tensor gathered, int num_groups, float delta)"
      " -> (Tensor, Tensor, Tensor, Tensor, Tensor)");
  m.def(
      "pass1(Tensor scores, Tensor labels, Tensor? codes, Tensor positives, Tensor offsets,"
      " Tensor positive_group, float delta, str method) -> Tensor");
  m.def(
      "positive_stage(Tensor positives, Tensor offsets, Tensor positive_group, Tensor positions,"
      " Tensor false_positives, float delta, bool interpolate, ScalarType loss_dtype,"
      " str method) -> (Tensor, Tensor, Tensor)");
  m.def(
      "rank_sort_stage(Tensor positives, Tensor offsets, Tensor positive_group, Tensor positions,"
      " Tensor false_positives, Tensor targets, float delta, ScalarType loss_dtype)"
      " -> (Tensor, Tensor, Tensor, Tensor)");
  m.def(
      "alrp_stage(Tensor positives, Tensor offsets, Tensor positive_group, Tensor positions,"
      " Tensor memory_rank, Tensor false_positives, Tensor regression_losses, float delta,"
      " ScalarType loss_dtype) -> (Tensor, Tensor, Tensor, Tensor)");
  m.def("rank_sort_labels(Tensor targets) -> Tensor");
}

TORCH_LIBRARY_IMPL(aploss, CPU, m) { ops::register_backend<&cpu_device_kernels>(m); }

namespace {

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> rank_positives_op(
    const at::Tensor& gathered, int64_t num_groups, double delta) {
  return ops::named<ops::kRankPositives>([&]() -> std::tuple<at::Tensor, at::Tensor, at::Tensor,
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

at::Tensor rank_sort_labels_op(const at::Tensor& targets) {
  return ops::named<ops::kRankSortLabels>([&] { return labels_from_targets(targets); });
}

}  // namespace

// Sorting P values and elementwise work: ATen ops only, the same code on every device.
TORCH_LIBRARY_IMPL(aploss, CompositeExplicitAutograd, m) {
  m.impl("rank_positives", &rank_positives_op);
  m.impl("rank_sort_labels", &rank_sort_labels_op);
}

}  // namespace aploss
