// AP-loss (docs/algorithm.md): its inputs and its positive stage, from the ranks among the
// positives (pass 1 with the positives as the entries) and fp(i).
#include <ATen/ATen.h>

#include "loss_inputs.h"
#include "losses.h"
#include "op_checks.h"
#include "stage_common.h"

namespace aploss {
namespace {

void check_inputs(const at::Tensor& scores, const at::Tensor& labels, const at::Tensor& values,
                  double delta) {
  TORCH_CHECK_VALUE(!values.defined(), "ap_loss takes no per-positive values");
  check_labels_like_scores(scores, labels, delta);
}

// The positives' scores as the entries of the ranking among them: in the scores' dtype
// where they are exact in it (they are, when they come from those scores), else float64.
// On the CPU that pass then reuses the interval index that pass 1 built for the keys of
// that dtype (cpu/interval_index_cpu.h) instead of building one for float64 keys; other
// devices keep float64 (the check would cost them a host sync).
at::Tensor positives_as_entries(const at::Tensor& q, at::ScalarType scores_dtype) {
  if (!q.is_cpu() || scores_dtype == at::kDouble) return q;
  const at::Tensor in_dtype = q.to(scores_dtype);
  return at::equal(in_dtype.to(at::kDouble), q) ? in_dtype : q;
}

// Running maximum within each group of `values` (non-negative float64; `group` ascending),
// in a constant number of ATen ops (ATen has no segmented scan): each value's rank among
// all of them, offset by its group times P, so that one cummax over the whole sequence
// carries no maximum into the next group. Exact: the ranks index the sorted values. A
// non-negative double's bits sort as an int64, which takes a radix sort.
at::Tensor segmented_cummax(const at::Tensor& values, const at::Tensor& group) {
  const int64_t n = values.numel();
  const auto [sorted_bits, order] = values.view(at::kLong).sort(/*stable=*/true, 0, false);
  const at::Tensor rank =
      at::empty_like(order).scatter_(0, order, at::arange(n, order.options()));
  const at::Tensor base = group.to(at::kLong) * n;
  const at::Tensor top = std::get<0>((base + rank).cummax(0)) - base;
  return sorted_bits.view(at::kDouble).index_select(0, top);
}

StageOutputs stage(const StageInputs& in) {
  const Positives& pos = in.pos;
  const at::Tensor q = pos.positives[0];
  const Entries among_positives{
      positives_as_entries(q, in.loss_dtype), at::zeros({q.numel()}, q.options().dtype(at::kChar)),
      pos.grouped() ? pos.positive_group.to(at::kInt) : at::Tensor()};
  // sum_k H(q_k - q_i) over the positives, self included (H(0) = 1/2).
  const at::Tensor positive_sums = pass1(in.k, among_positives, pos, in.delta, in.method);
  const int64_t num_pos = q.numel();
  const at::Tensor inv_num_pos = loss_weights(pos);

  const at::Tensor rank_pos = positive_sums + 0.5;  // 1 + sum over k != i
  const at::Tensor rank = rank_pos + in.false_positives;
  const at::Tensor prec = rank_pos / rank;
  // Interpolated precision: running max from the lowest-scored positive upward.
  const at::Tensor ip = !in.interpolate ? prec
                        : pos.grouped() ? segmented_cummax(prec, pos.positive_group)
                                        : std::get<0>(prec.cummax(0));
  // at::rsub: one kernel, where `1.0 - t` fills a tensor with 1 first.
  const at::Tensor one_minus_ip = at::rsub(ip, 1.0);
  const at::Tensor c = at::where(ip > prec, one_minus_ip / at::rsub(prec, 1.0), 1.0);
  const at::Tensor w = c / rank * inv_num_pos;

  const at::Tensor loss =
      // Grouped: sum of (1 - ip) / (G P_g), exactly 0 when every ip is 1 (1 minus a sum of
      // G P_g weights would leave rounding behind).
      (pos.grouped() ? (one_minus_ip * inv_num_pos).sum()
                     : 1.0 - ip.sum() / static_cast<double>(num_pos))
          .to(in.loss_dtype);
  return {loss, no_extra(q.options()), pass2_state(pos.positives, w),
          positive_gradients(pos.positions, one_minus_ip * -inv_num_pos)};
}

}  // namespace

extern const LossDef kApLossDef{
    "ap_loss", LossKind::kAP, /*pairwise=*/true, /*extra=*/"", /*values_name=*/nullptr,
    /*values_at_most_one=*/false, check_inputs, /*pass_labels=*/nullptr,
    /*positive_values=*/nullptr, stage, no_extra};

}  // namespace aploss
