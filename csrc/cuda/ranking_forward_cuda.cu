// One ungrouped sorted ranking on the GPU, forward and backward (ranking_cuda.cuh), with
// one host read: the kernels are queued back to back on the stream, sized for a capacity
// of positives (the shared-memory sort's, or N if smaller), and the host reads the meta
// words once, after the positive stage, to learn P and raise what the kernels flagged.
//
// More positives than the capacity (rare: P > 16,384 on an H100): the first round's
// rank_positives, pass 1 and positive stage find no index and do nothing (pass 1 still
// checks the negatives' scores); after the read, the gather runs again into a workspace
// of exactly P, ATen sorts the sort keys, and the one-block kernels run on the sorted
// positives.
#include <ATen/ATen.h>

#include <climits>
#include <limits>

#include "../aploss/errors.h"
#include "../aploss/host_reads.h"
#include "../aploss/intervals.h"
#include "../aploss/kernels.h"
#include "ranking_cuda.cuh"

namespace aploss {
namespace gpu {

void launch_pass2(const at::Tensor& scores, const at::Tensor& classes,
                  const at::Tensor& workspace, const at::Tensor& positive_grads,
                  const at::Tensor& grad_output, const at::Tensor& grad);

namespace {

at::ScalarType key_dtype_of(const at::Tensor& scores) {
  return scores.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
}

int64_t key_bytes_of(const at::Tensor& scores) {
  return key_dtype_of(scores) == at::kDouble ? 8 : 4;
}

// Float keys carry the position in their low 32 bits when every position fits.
bool position_in_key(const at::Tensor& scores) {
  return key_dtype_of(scores) == at::kFloat && scores.numel() <= (int64_t(1) << 32);
}

at::Tensor new_workspace(const at::Tensor& scores, int64_t capacity) {
  return at::empty({ranking_layout(capacity, key_bytes_of(scores)).bytes},
                   scores.options().dtype(at::kByte));
}

StageTensors run_stage(const RankingInputs& in, const at::Tensor& workspace, int64_t capacity) {
  const auto options = in.scores.options();
  StageTensors out{at::empty({}, options),
                   in.loss == LossKind::kRankSort ? at::empty({2}, options.dtype(at::kDouble))
                                                  : at::Tensor(),
                   at::empty({capacity, 2}, options.dtype(at::kDouble)),
                   in.loss == LossKind::kALRP ? at::empty({capacity}, options.dtype(at::kDouble))
                                              : at::Tensor(),
                   at::empty({2}, options.dtype(at::kLong))};
  launch_positive_stage(in, workspace, {}, out);
  return out;
}

// The region of the workspace of a capacity `num_pos` at `offset`, as int64.
at::Tensor int64_region(const at::Tensor& workspace, int64_t offset, int64_t num_pos) {
  return workspace.narrow(0, offset, num_pos * 8).view(at::kLong);
}

// For a workspace whose gather holds all its positives (P beyond the shared-memory sort):
// their order by key, ties by position, and their positions sorted (ATen's sorts, several
// launches each).
struct HostOrder {
  at::Tensor order, sorted_positions;
};

HostOrder sorted_order(const at::Tensor& workspace, const at::Tensor& scores, int64_t num_pos,
                       bool memory_ranks) {
  const RankingLayout l = ranking_layout(num_pos, key_bytes_of(scores));
  // The unsigned sort keys in signed order.
  const at::Tensor keys =
      int64_region(workspace, l.raw_key, num_pos).bitwise_xor(std::numeric_limits<int64_t>::min());
  HostOrder out;
  at::Tensor by_position;
  if (memory_ranks || !position_in_key(scores)) {
    auto [positions, permutation] = int64_region(workspace, l.raw_position, num_pos).sort(false);
    out.sorted_positions = positions;
    by_position = permutation;
  }
  if (position_in_key(scores)) {
    out.order = std::get<1>(keys.sort(/*stable=*/false));
  } else {  // by position first, then stably by key
    out.order = by_position.index_select(
        0, std::get<1>(keys.index_select(0, by_position).sort(/*stable=*/true, 0, false)));
  }
  return out;
}

// What the one host read says, raised in the order the CPU raises it.
void raise_flagged(const int64_t* m, const RankingInputs& in) {
  if (m[kMetaBadLabel] != LLONG_MAX) {
    if (in.loss == LossKind::kRankSort) throw_invalid_target(in.labels, m[kMetaBadLabel]);
    throw_invalid_label(in.labels, m[kMetaBadLabel]);
  }
  if (m[kMetaBadPositive] != LLONG_MAX) throw_non_finite_score(in.scores, m[kMetaBadPositive]);
  if (m[kMetaBadNegative] != LLONG_MAX) throw_non_finite_score(in.scores, m[kMetaBadNegative]);
  const int64_t num_pos = m[kMetaCount];
  TORCH_CHECK_VALUE(num_pos <= std::numeric_limits<int32_t>::max(),
                    "at most 2^31 - 1 positives, got ", num_pos);
  if (in.loss == LossKind::kALRP) {
    const at::Tensor& losses = in.regression_losses;
    TORCH_CHECK_VALUE(losses.numel() == num_pos,
                      "regression_losses must be 1-D with one value per positive (",
                      num_pos, " positives), got shape ", losses.sizes());
    if (m[kMetaBadValue] != LLONG_MAX) throw_invalid_regression_losses(losses);
  }
}

}  // namespace

RankingOutputs ranking_forward(const RankingInputs& in) {
  const at::Tensor& scores = in.scores;
  const at::Tensor& labels = in.labels;
  check_flat_inputs(scores, labels, "aploss ranking_forward");
  const c10::cuda::CUDAGuard guard(scores.device());
  const int device = kernel_device_index(scores);
  const int64_t n = scores.numel();
  const at::ScalarType key_dtype = key_dtype_of(scores);
  const LabelRule rule = in.loss == LossKind::kRankSort ? LabelRule::kTargets : LabelRule::kLabels;
  const bool memory_ranks = in.loss == LossKind::kALRP;

  RankingOutputs out;
  out.classes = at::empty({(n + 31) / 32}, scores.options().dtype(at::kLong));
  int64_t capacity = std::min(n, ranking_sort_capacity(device));
  out.state = new_workspace(scores, capacity);
  launch_gather(scores, labels, rule, out.state, out.classes);
  launch_rank_positives(out.state, key_dtype, in.delta, {}, position_in_key(scores), memory_ranks,
                        {});
  launch_pass1(scores, out.classes, out.state, in.delta);
  StageTensors stage = run_stage(in, out.state, capacity);

  // The one host read.
  const at::Tensor meta = read_to_host(out.state.narrow(0, 0, kMetaWords * 8).view(at::kLong));
  raise_flagged(meta.const_data_ptr<int64_t>(), in);
  const int64_t num_pos = meta.const_data_ptr<int64_t>()[kMetaCount];
  if (num_pos > capacity) {
    capacity = num_pos;
    out.state = new_workspace(scores, capacity);
    launch_gather(scores, labels, rule, out.state, out.classes);
    const HostOrder sorted = sorted_order(out.state, scores, num_pos, memory_ranks);
    launch_rank_positives(out.state, key_dtype, in.delta, sorted.order, position_in_key(scores),
                          memory_ranks, sorted.sorted_positions);
    launch_pass1(scores, out.classes, out.state, in.delta);
    stage = run_stage(in, out.state, capacity);
    // aLRP's regression losses are checked by its stage, which the first round skipped.
    if (memory_ranks) {
      raise_flagged(
          read_to_host(out.state.narrow(0, 0, kMetaWords * 8).view(at::kLong)).const_data_ptr<int64_t>(),
          in);
    }
  }
  out.loss = stage.loss;
  out.parts = stage.parts;
  if (stage.loc_weights.defined()) out.loc_weights = stage.loc_weights.narrow(0, 0, num_pos);
  out.offsets = stage.offsets;
  out.positive_grads = stage.positive_grads.narrow(0, 0, num_pos);
  return out;
}

void ranking_backward(const at::Tensor& scores, const at::Tensor& classes,
                      const at::Tensor& state, const at::Tensor& positive_grads,
                      const at::Tensor& grad_output, at::Tensor& grad) {
  TORCH_CHECK(on_kernel_device(scores) && scores.dim() == 1 && scores.is_contiguous() &&
                  grad.sizes() == scores.sizes() && grad.is_contiguous(),
              "aploss ranking_backward: expected 1-D contiguous scores and grad");
  if (positive_grads.size(0) == 0) {
    grad.zero_();
    return;
  }
  // grad_output as pass 2 reads it: one value of scores' dtype on their device (it is, from
  // autograd: no conversion).
  const at::Tensor scale =
      grad_output.to(scores.device(), scores.scalar_type(), /*non_blocking=*/true).contiguous();
  TORCH_CHECK(scale.numel() == 1, "aploss ranking_backward: grad_output must have one element");
  launch_pass2(scores, classes, state, positive_grads.contiguous(), scale, grad);
}

}  // namespace gpu
}  // namespace aploss
