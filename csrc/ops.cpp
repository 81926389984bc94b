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
#include "family_inputs.h"
#include "rank_sort_stage.h"
#include "stages.h"

namespace aploss {
namespace ops {
namespace {

Method parse_method(c10::string_view method) {
  if (method == "sorted" || method == "auto") return Method::kSorted;
  if (method == "pairwise") return Method::kPairwise;
  TORCH_CHECK_VALUE(false, "ap_loss: method must be one of 'auto', 'sorted', 'pairwise'; got '",
                    std::string(method), "'");
}

void check_delta(double delta) {
  TORCH_CHECK_VALUE(std::isfinite(delta) && delta > 0.0,
                    "ap_loss: delta must be finite and > 0, got ", delta);
}

// ValueError / TypeError naming the problem (shapes, devices, dtypes, delta).
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
  check_delta(delta);
}

Method check_grouping(const std::optional<at::Tensor>& codes, const at::Tensor& scores,
                      c10::string_view method) {
  const Method m = parse_method(method);
  if (codes.has_value()) {
    check_group_ids(*codes, scores);
    TORCH_CHECK_VALUE(m == Method::kSorted,
                      "ap_loss: group_ids work with method 'sorted' or 'auto', not '",
                      std::string(method), "'");
  }
  return m;
}

void check_state(const at::Tensor& state, const at::Tensor& offsets,
                 const at::Tensor& positive_grads, const char* what) {
  TORCH_CHECK(state.dim() == 1 && state.scalar_type() == at::kByte, what, ": malformed state");
  TORCH_CHECK(offsets.dim() == 1 && offsets.numel() >= 1 && offsets.scalar_type() == at::kLong,
              what, ": malformed offsets");
  TORCH_CHECK(positive_grads.dim() == 2 && positive_grads.size(1) == 2 &&
                  positive_grads.scalar_type() == at::kDouble &&
                  positive_grads.device() == state.device(),
              what, ": malformed positive_grads");
}

// The operators' state: the stages' (kStateRows, P+1) float64 as bytes, or what a
// backend's ranking_forward keeps (opaque to everything but its ranking_backward).
at::Tensor state_bytes(const at::Tensor& rows) { return rows.view(at::kByte).view({-1}); }
at::Tensor state_rows(const at::Tensor& bytes) {
  return bytes.view(at::kDouble).view({kStateRows, -1});
}

Positives check_positives(const at::Tensor& positives, const at::Tensor& offsets,
                          const at::Tensor& positive_group, const char* what) {
  TORCH_CHECK(positives.dim() == 2 && positives.size(0) == 2 && positives.size(1) >= 1 &&
                  positives.scalar_type() == at::kDouble,
              what, ": malformed positives");
  TORCH_CHECK(offsets.dim() == 1 && offsets.numel() >= 2 && offsets.scalar_type() == at::kLong &&
                  offsets.device() == positives.device(),
              what, ": malformed offsets");
  TORCH_CHECK(positive_group.dim() == 1 && positive_group.numel() == positives.size(1) &&
                  positive_group.scalar_type() == at::kLong,
              what, ": malformed positive_group");
  return {positives.contiguous(), offsets.contiguous(), positive_group.contiguous()};
}

// The stages' view of the N-sized inputs; codes (int32) broadcast to scores' shape,
// as one period when the backend reads them so (kernels.h), else one per entry.
Entries entries(const Kernels& k, const FlatInputs& in, const at::Tensor& scores,
                const std::optional<at::Tensor>& codes) {
  if (!codes.has_value()) return {in.scores, in.labels, {}};
  TORCH_CHECK(codes->scalar_type() == at::kInt, "aploss: codes must be int32");
  if (k.periodic_codes && scores.numel() > 0) {
    at::Tensor period = periodic_codes(*codes, scores, in);
    if (period.defined()) return {in.scores, in.labels, period};
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
    const GroupCodes groups = dense_group_codes(k, *group_ids);
    codes = groups.codes;
    r.num_groups = groups.num_groups;
  }
  r.codes = codes.value_or(empty_codes(scores));
  if (scores.numel() == 0) return r;
  const FlatInputs flat = flatten(scores, labels);
  const Entries in = entries(k, flat, scores, codes);
  const at::Tensor gathered = aploss::gather(k, in);
  const int64_t num_pos = gathered.size(1);
  if (num_pos == 0) return r;
  TORCH_CHECK_VALUE(num_pos <= std::numeric_limits<int32_t>::max(),
                    "ap_loss: at most 2^31 - 1 positives, got ", num_pos);
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
void check_contiguous(const at::Tensor& scores, const at::Tensor& other, const char* what) {
  TORCH_CHECK(scores.is_contiguous() && other.is_contiguous(), what,
              ": scores and labels/targets must be contiguous (the Python API makes them so)");
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
  TORCH_CHECK_VALUE(scores.sizes() == targets.sizes(), "rank_sort_loss: targets.shape ",
                    targets.sizes(), " must equal scores.shape ", scores.sizes());
  TORCH_CHECK_VALUE(scores.device() == targets.device(), "rank_sort_loss: scores are on ",
                    scores.device(), " but targets are on ", targets.device());
  check_contiguous(scores, targets, "rank_sort_forward");
  (void)check_grouping(group_ids, scores, "sorted");
  if (!group_ids.has_value() && k.ranking_forward != nullptr) {
    TORCH_CHECK_TYPE(at::isFloatingType(scores.scalar_type()) &&
                         at::isFloatingType(targets.scalar_type()),
                     "rank_sort_loss: scores and targets must be floating, got ",
                     scores.scalar_type(), " and ", targets.scalar_type());
    check_delta(delta);
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
  check_contiguous(scores, labels, "alrp_forward");
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
  check_state(state, offsets, positive_grads, "aploss::pass2");
  if (classes.numel() > 0) {
    // A backend's ranking_forward ran: its entry classes stand for the labels.
    TORCH_CHECK(k.ranking_backward != nullptr && !codes.has_value() && m == Method::kSorted,
                "aploss::pass2: entry classes come from an ungrouped sorted forward on a backend "
                "that evaluates it as a whole");
    TORCH_CHECK_VALUE(classes.scalar_type() == at::kLong && classes.dim() == 1 &&
                          classes.numel() == (scores.numel() + 31) / 32,
                      "aploss::pass2: classes must be one int64 word per 32 entries");
    // The forward's flat order: that of scores with its labels (Rank & Sort's are not kept:
    // its inputs are contiguous).
    const FlatInputs flat = flatten(scores, labels.sizes() == scores.sizes() ? labels : scores);
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
  const FlatInputs flat = flatten(scores, shaped);
  auto [grad, flat_grad] = gradient_like(scores, flat);
  if (scores.numel() == 0) return grad;
  const at::Tensor rows = state_rows(state);
  if (rows.size(1) == 1) return grad.zero_();
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
  const Positives pos = check_positives(positives, offsets, positive_group, "aploss::pass1");
  if (scores.numel() == 0) return at::zeros({positives.size(1)}, positives.options());
  return aploss::pass1(k, entries(k, flatten(scores, labels), scores, codes), pos, delta, m);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> positive_stage(
    const Kernels& k, const at::Tensor& positives, const at::Tensor& offsets,
    const at::Tensor& positive_group, const at::Tensor& positions,
    const at::Tensor& false_positives, double delta, bool interpolate, at::ScalarType loss_dtype,
    c10::string_view method) {
  Positives pos = check_positives(positives, offsets, positive_group, "aploss::positive_stage");
  TORCH_CHECK(positions.dim() == 1 && positions.numel() == positives.size(1) &&
                  positions.scalar_type() == at::kLong,
              "aploss::positive_stage: malformed positions");
  TORCH_CHECK(false_positives.dim() == 1 && false_positives.numel() == positives.size(1) &&
                  false_positives.scalar_type() == at::kDouble,
              "aploss::positive_stage: malformed false_positives");
  pos.positions = positions.contiguous();
  auto [loss, state, positive_grads] = aploss::positive_stage(
      k, pos, false_positives.contiguous(), delta, interpolate, loss_dtype, parse_method(method));
  return {loss, state_bytes(state), positive_grads};
}

namespace {

// The family's stage operators: positives as rank_positives returns them, and one
// float64 value per sorted positive.
Positives check_family_positives(const at::Tensor& positives, const at::Tensor& offsets,
                                 const at::Tensor& positive_group, const at::Tensor& positions,
                                 const at::Tensor& memory_rank,
                                 const at::Tensor& false_positives, const at::Tensor& values,
                                 const char* what) {
  Positives pos = check_positives(positives, offsets, positive_group, what);
  const int64_t num_pos = positives.size(1);
  for (const at::Tensor* t : {&positions, &memory_rank}) {
    TORCH_CHECK(t->dim() == 1 && t->numel() == num_pos && t->scalar_type() == at::kLong, what,
                ": malformed positions / memory_rank");
  }
  for (const at::Tensor* t : {&false_positives, &values}) {
    TORCH_CHECK(t->dim() == 1 && t->numel() == num_pos && t->scalar_type() == at::kDouble, what,
                ": malformed false_positives / per-positive values");
  }
  pos.positions = positions.contiguous();
  pos.memory_rank = memory_rank.contiguous();
  return pos;
}

}  // namespace

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> rank_sort_stage(
    const Kernels& k, const at::Tensor& positives, const at::Tensor& offsets,
    const at::Tensor& positive_group, const at::Tensor& positions,
    const at::Tensor& false_positives, const at::Tensor& targets, double delta,
    at::ScalarType loss_dtype) {
  const Positives pos =
      check_family_positives(positives, offsets, positive_group, positions, positions,
                             false_positives, targets, "aploss::rank_sort_stage");
  RankSortStage stage = rank_sort_positive_stage(k, pos, false_positives.contiguous(),
                                                 targets.contiguous(), delta, loss_dtype);
  return {stage.loss, stage.parts, state_bytes(stage.state), stage.positive_grads};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> alrp_stage(
    const Kernels& k, const at::Tensor& positives, const at::Tensor& offsets,
    const at::Tensor& positive_group, const at::Tensor& positions, const at::Tensor& memory_rank,
    const at::Tensor& false_positives, const at::Tensor& regression_losses, double delta,
    at::ScalarType loss_dtype) {
  const Positives pos =
      check_family_positives(positives, offsets, positive_group, positions, memory_rank,
                             false_positives, regression_losses, "aploss::alrp_stage");
  ALRPStage stage = alrp_positive_stage(k, pos, false_positives.contiguous(),
                                        regression_losses.contiguous(), delta, loss_dtype);
  return {stage.cls_loss, stage.loc_weights, state_bytes(stage.state), stage.positive_grads};
}

at::Tensor pass1_histograms(const Kernels& k, const at::Tensor& scores, const at::Tensor& labels,
                            const std::optional<at::Tensor>& codes, const at::Tensor& positives,
                            const std::optional<at::Tensor>& offsets, double delta,
                            bool deterministic) {
  TORCH_CHECK(scores.dim() == 1 && scores.is_contiguous() && labels.is_contiguous() &&
                  labels.sizes() == scores.sizes(),
              "_pass1_histograms: 1-D contiguous scores and labels");
  TORCH_CHECK(codes.has_value() == offsets.has_value(), "_pass1_histograms: codes with offsets");
  const Entries in{scores, labels, codes.has_value() ? codes->contiguous() : at::Tensor()};
  const Positives pos{positives.contiguous(),
                      offsets.has_value() ? offsets->contiguous() : at::Tensor(), {}};
  return aploss::pass1_histograms(k, in, pos, delta, deterministic);
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
  m.def(
      "_pass1_histograms(Tensor scores, Tensor labels, Tensor? codes, Tensor positives,"
      " Tensor? offsets, float delta, bool deterministic) -> Tensor");
}

TORCH_LIBRARY_IMPL(aploss, CPU, m) { ops::register_backend<&cpu_device_kernels>(m); }

namespace {

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> rank_positives_op(
    const at::Tensor& gathered, int64_t num_groups, double delta) {
  TORCH_CHECK(gathered.dim() == 2 && gathered.size(0) == 3 && gathered.size(1) >= 1 &&
                  gathered.scalar_type() == at::kDouble,
              "aploss::rank_positives: expected (3, P) float64 [scores; codes; positions], P >= 1");
  TORCH_CHECK(num_groups >= 1, "aploss::rank_positives: num_groups must be >= 1");
  const Positives pos = rank_positives(gathered, num_groups, delta);
  return {pos.positives, pos.offsets, pos.positive_group, pos.positions, pos.memory_rank};
}

}  // namespace

// Sorting P values and elementwise work: ATen ops only, the same code on every device.
TORCH_LIBRARY_IMPL(aploss, CompositeExplicitAutograd, m) {
  m.impl("rank_positives", &rank_positives_op);
  m.impl("rank_sort_labels", &labels_from_targets);
}

}  // namespace aploss
