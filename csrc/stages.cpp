#include "stages.h"

#include <ATen/ATen.h>

#include <limits>

#include "aploss/kernels.h"
#include "aploss/math.h"
#include "deterministic_pass1.h"

namespace aploss {

at::Tensor gather(const Kernels& k, const Entries& in) {
  return k.gather(in.scores, in.labels, in.codes, in.code_repeat);
}

namespace {

// Whether the positions ascend: checked in host memory only (elsewhere it would cost a
// host sync; those gathers need not keep memory order anyway).
bool in_memory_order(const at::Tensor& position) {
  const int64_t n = position.numel();
  if (!position.is_cpu()) return false;
  return n < 2 || (position.narrow(0, 1, n - 1) > position.narrow(0, 0, n - 1)).all().item<bool>();
}

// Applies a stable sort by `key` to the permutation `order`.
at::Tensor stable_sort_by(const at::Tensor& order, const at::Tensor& key) {
  return order.index_select(0, std::get<1>(key.index_select(0, order).sort(true, 0, false)));
}

// Finite float64 scores as int64 keys in the same order, ties included (-0.0 becomes
// +0.0): ATen sorts int64 by radix on the CPU, 4x faster than float64 at 40,000 values.
at::Tensor order_keys(const at::Tensor& score) {
  const at::Tensor bits = (score + 0.0).view(at::kLong);
  return at::where(bits < 0, bits.bitwise_xor(std::numeric_limits<int64_t>::max()), bits);
}

}  // namespace

at::Tensor make_positives(const at::Tensor& sorted_q, double delta,
                          const at::Tensor& positive_group) {
  const int64_t num_pos = sorted_q.numel();
  // A cluster starts at 0, after every gap of at least kClusterGap * delta and (grouped)
  // at every group's first positive; each positive's shift is the score where its
  // cluster starts.
  const at::Tensor starts = at::ones({num_pos}, sorted_q.options().dtype(at::kBool));
  if (num_pos > 1) {
    at::Tensor after_gap = sorted_q.diff() >= kClusterGap * delta;
    if (positive_group.defined()) after_gap.logical_or_(positive_group.diff() != 0);
    starts.narrow(0, 1, num_pos - 1).copy_(after_gap);
  }
  const at::Tensor index = at::arange(num_pos, sorted_q.options().dtype(at::kLong));
  const at::Tensor start_of_cluster = std::get<0>(at::where(starts, index, 0).cummax(0));
  at::Tensor positives = at::empty({2, num_pos}, sorted_q.options());
  positives[0].copy_(sorted_q);
  at::Tensor shifts = positives[1];
  at::index_select_out(shifts, sorted_q, 0, start_of_cluster);
  return positives;
}

Positives rank_positives(const at::Tensor& gathered, int64_t num_groups, double delta) {
  const at::Tensor score = gathered[0];
  const at::Tensor position = gathered[2].to(at::kLong);
  // Column order by position = memory order: the rank of each column among the positives.
  // The CPU gather returns the columns in that order already (no sort, and each column's
  // memory rank is its index).
  at::Tensor order, memory_rank;
  if (in_memory_order(position)) {
    order = std::get<1>(order_keys(score).sort(true, 0, false));
  } else {
    const at::Tensor by_position = std::get<1>(position.sort(true, 0, false));
    order = stable_sort_by(by_position, order_keys(score));
    memory_rank = at::empty_like(by_position).index_put_(
        {by_position}, at::arange(by_position.numel(), by_position.options()));
  }
  at::Tensor group, offsets;
  if (num_groups > 1) {
    const at::Tensor code = gathered[1].to(at::kLong);
    order = stable_sort_by(order, code);
    group = code.index_select(0, order);
    // Group u's segment starts at the count of positives in earlier groups: a search of the
    // sorted codes (bincount would read their maximum on the host).
    offsets = at::searchsorted(group, at::arange(num_groups + 1, group.options()));
  } else {
    group = at::zeros_like(position);
    offsets = at::zeros({num_groups + 1}, position.options());
    offsets.narrow(0, 1, 1).fill_(position.numel());
  }
  const at::Tensor q = score.index_select(0, order);
  return {make_positives(q, delta, num_groups == 1 ? at::Tensor() : group), offsets, group,
          position.index_select(0, order),
          memory_rank.defined() ? memory_rank.index_select(0, order) : order};
}

at::Tensor pass1_differences(const Kernels& k, const Entries& in, const Positives& pos,
                             double delta, bool deterministic) {
  // Only the single ranking's pass 1 may add with float atomics (kernels.h).
  if (deterministic && !in.codes.defined()) {
    return deterministic_pass1(k, in.scores, in.labels, pos.positives, delta);
  }
  if (!in.codes.defined()) return k.sorted_pass1(in.scores, in.labels, pos.positives, delta);
  if (in.role == CodesRole::kRecordIntervals) {
    return k.grouped_pass1_recording(in.scores, in.labels, in.codes, pos.positives, pos.offsets,
                                     delta);
  }
  return k.grouped_pass1(in.scores, in.labels, in.codes, in.code_repeat, pos.positives,
                         pos.offsets, delta);
}

namespace {

// fp(i) (or sum_k H(q_k - q_i) when the differences came from the positives themselves)
// from pass 1's (3, P+1) difference arrays.
at::Tensor sums_from_differences(const at::Tensor& positives, const at::Tensor& differences,
                                 double delta) {
  const int64_t num_pos = positives.size(1);
  const at::Tensor prefix = differences.cumsum(1).narrow(1, 0, num_pos);
  // fp(i) = C1(i) + A(i) - B(i) * (q_i - shift_i) / (2 delta)  (math.h, accumulate_negative).
  const at::Tensor local = positives[0] - positives[1];
  return prefix[0] + prefix[1] - prefix[2] * local * (0.5 / delta);
}

}  // namespace

at::Tensor pass1(const Kernels& k, const Entries& in, const Positives& pos, double delta,
                 Method method) {
  if (method == Method::kPairwise) {
    return k.pairwise_pass1(in.scores, in.labels, pos.positives, delta);
  }
  const bool deterministic = needs_deterministic_pass1(k);
  return sums_from_differences(pos.positives,
                               pass1_differences(k, in, pos, delta, deterministic), delta);
}

void pass2(const Kernels& k, const Entries& in, const at::Tensor& state,
           const at::Tensor& offsets, const at::Tensor& positive_grads, double delta,
           const at::Tensor& grad_output, at::Tensor& grad, Method method) {
  if (method == Method::kPairwise) {
    k.pairwise_pass2(in.scores, in.labels, state, delta, grad_output, grad);
  } else if (in.role == CodesRole::kIntervals) {
    k.recorded_pass2(in.scores, in.codes, state, offsets, delta, grad_output, grad);
  } else if (in.codes.defined()) {
    k.grouped_pass2(in.scores, in.labels, in.codes, in.code_repeat, state, offsets, delta,
                    grad_output, grad);
  } else {
    k.sorted_pass2(in.scores, in.labels, state, delta, grad_output, grad);
  }
  const int64_t num_pos = positive_grads.size(0);
  if (num_pos == 0) return;
  if (k.host_memory && grad.is_contiguous() && positive_grads.is_contiguous()) {
    // A loop: P writes, no ATen ops (at small N, a call costs what it issues).
    const double* pg = positive_grads.const_data_ptr<double>();
    const double scale = grad_output.item<double>();
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, grad.scalar_type(),
                                    "aploss_positive_grads", [&] {
      scalar_t* g = grad.data_ptr<scalar_t>();
      for (int64_t i = 0; i < num_pos; ++i) {
        g[static_cast<int64_t>(pg[2 * i])] = static_cast<scalar_t>(pg[2 * i + 1] * scale);
      }
    });
    return;
  }
  grad.index_copy_(0, positive_grads.select(1, 0).to(at::kLong),
                   (positive_grads.select(1, 1) * grad_output).to(grad.scalar_type()));
}

}  // namespace aploss
