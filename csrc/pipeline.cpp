#include "pipeline.h"

#include <ATen/ATen.h>

#include <limits>

#include "group_codes.h"
#include "loss_inputs.h"

namespace aploss {

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

bool records_intervals(const Kernels& k, const at::Tensor& group_ids, const at::Tensor& scores,
                       Method method) {
  return k.grouped_pass1_recording != nullptr && method == Method::kSorted &&
         group_ids.numel() == scores.numel();
}

Entries backward_entries(const Kernels& k, const FlatInputs& in, const at::Tensor& scores,
                         const std::optional<at::Tensor>& codes) {
  if (!codes.has_value() || codes->scalar_type() != at::kUInt32) {
    return entries(k, in, scores, codes);
  }
  TORCH_CHECK_VALUE(k.recorded_pass2 != nullptr && codes->numel() == scores.numel(),
                    "uint32 group codes are the intervals that a CPU forward recorded, one per "
                    "entry (", scores.numel(), "); got ", codes->numel(), " on ",
                    codes->device(), k.recorded_pass2 == nullptr ? ", which records none" : "");
  Entries out{in.scores, in.labels, flatten_like(codes->view(at::kInt), scores, in)};
  out.role = CodesRole::kIntervals;
  return out;
}

at::Tensor state_bytes(const at::Tensor& rows) { return rows.view(at::kByte).view({-1}); }
at::Tensor state_rows(const at::Tensor& bytes) {
  return bytes.view(at::kDouble).view({kStateRows, -1});
}

namespace {

at::Tensor empty_codes(const at::Tensor& scores) {
  return at::empty({0}, scores.options().dtype(at::kInt));
}

// Everything before the positive stage: group codes, gather, rank_positives, pass 1.
// `pos.positives` stays undefined when there is no positive.
struct Ranking {
  at::Tensor codes;  // dense int32 group codes (empty without group_ids), for the backward
  int64_t num_groups = 1;
  Positives pos;
  at::Tensor false_positives;
  bool has_positives() const { return pos.positives.defined(); }
};

// Recorded intervals (flat, in the order of `in`) as the codes were: shaped like the ids,
// contiguous, in their logical order (a view where the codes were read in place), so
// that the backward flattens them as it would the codes.
at::Tensor as_ids_were(const at::Tensor& flat, const at::Tensor& scores, const FlatInputs& in,
                       at::IntArrayRef ids_shape) {
  const at::Tensor shaped =
      in.scores_layout ? flat.as_strided(scores.sizes(), scores.strides(), flat.storage_offset())
                       : flat.view(scores.sizes());
  return shaped.reshape(ids_shape).contiguous();
}

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
  const bool record = group_ids.has_value() && records_intervals(k, *group_ids, scores, method);
  // Whatever happens below, the backward gets uint32 codes (what the operator's fake
  // promises); without a pass 1 (no entry, no positive) it never reads them.
  if (record) r.codes = r.codes.view(at::kUInt32);
  if (scores.numel() == 0) return r;
  const FlatInputs flat = flatten(scores, labels);
  Entries in = entries(k, flat, scores, codes);
  if (record) in.role = CodesRole::kRecordIntervals;
  at::Tensor gathered;
  try {
    gathered = gather(k, in);
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
  r.false_positives = pass1(k, in, r.pos, delta, method);
  if (record) r.codes = as_ids_were(in.codes, scores, flat, codes->sizes()).view(at::kUInt32);
  return r;
}

// One ungrouped sorted ranking on a backend that evaluates it as a whole.
ForwardOutputs whole_ranking(const Kernels& k, const LossDef& loss, const at::Tensor& scores,
                             const at::Tensor& labels, const at::Tensor& values, double delta,
                             bool interpolate) {
  const FlatInputs flat = flatten(scores, labels);
  RankingOutputs out = k.ranking_forward(
      {flat.scores, flat.labels, *loss.kind, delta, interpolate,
       values.defined() ? values.contiguous() : at::Tensor()});
  const at::TensorOptions f64 = scores.options().dtype(at::kDouble);
  at::Tensor extra = out.parts.defined()         ? out.parts
                     : out.loc_weights.defined() ? out.loc_weights
                                                 : no_extra(f64);
  return {out.loss,
          extra,
          out.state,
          out.offsets,
          empty_codes(scores),
          out.labels.defined() ? out.labels.view({-1})
                               : at::empty({0}, scores.options().dtype(at::kChar)),
          out.positive_grads,
          out.classes};
}

}  // namespace

ForwardOutputs run_forward(const Kernels& k, const LossDef& loss, const at::Tensor& scores,
                           const at::Tensor& labels, const at::Tensor& values,
                           const std::optional<at::Tensor>& group_ids, double delta,
                           bool interpolate, Method method) {
  if (!group_ids.has_value() && method == Method::kSorted && k.ranking_forward != nullptr &&
      loss.kind.has_value()) {
    return whole_ranking(k, loss, scores, labels, values, delta, interpolate);
  }
  const at::Tensor converted =
      loss.pass_labels != nullptr ? loss.pass_labels(labels) : at::Tensor();
  const at::Tensor& pass_labels = converted.defined() ? converted : labels;
  const Ranking r = rank_entries(k, scores, pass_labels, group_ids, delta, method);
  const at::Tensor out_labels = converted.defined()
                                    ? converted.view({-1})
                                    : at::empty({0}, scores.options().dtype(at::kChar));
  const at::Tensor no_classes = at::empty({0}, scores.options().dtype(at::kLong));
  const at::TensorOptions f64 = scores.options().dtype(at::kDouble);
  at::Tensor values_sorted;
  if (loss.positive_values != nullptr && r.has_positives()) {
    values_sorted =
        loss.positive_values(labels, values, r.pos.positions, r.pos.memory_rank, scores);
  } else if (loss.positive_values != nullptr) {  // checks its input against P = 0
    const at::Tensor none = at::empty({0}, scores.options().dtype(at::kLong));
    loss.positive_values(labels, values, none, none, scores);
  }
  if (!r.has_positives()) {
    return {at::zeros({}, scores.options()),
            loss.no_positive_extra(f64),
            state_bytes(at::zeros({kStateRows, 1}, f64)),
            at::zeros({r.num_groups + 1}, scores.options().dtype(at::kLong)),
            r.codes,
            out_labels,
            at::empty({0, 2}, f64),
            no_classes};
  }
  StageOutputs stage = loss.stage({k, r.pos, r.false_positives, values_sorted, delta, interpolate,
                                   scores.scalar_type(), method});
  return {stage.loss,    stage.extra, state_bytes(stage.state), r.pos.offsets, r.codes,
          out_labels,    stage.positive_grads, no_classes};
}

}  // namespace aploss
