// One ungrouped ranking on the CPU by the sorted method, as a whole (../aploss/kernels.h,
// ranking_forward): the gather and pass 1 are the CPU kernels; everything P-sized between
// them (the sort, the cluster shifts, fp(i), the loss's positive stage, pass 2's state) is
// loops over raw arrays, with the stage shared with the GPU (../aploss/positive_stages.h).
// At small N a call costs what it issues: here a few allocations and no ATen compute op
// but the sort of large P. Pass 2 is the stages' (../stages.cpp), from the same state.
#include <ATen/ATen.h>

#include <algorithm>
#include <limits>
#include <memory>
#include <vector>

#include "../aploss/dispatch.h"
#include "../aploss/kernels.h"
#include "../aploss/math.h"
#include "../aploss/positive_stages.h"
#include "../loss_inputs.h"
#include "../aploss/intervals.h"
#include "cpu_kernels.h"
#include "interval_index_cpu.h"
#include "serial_block.h"
#include "stable_order.h"

namespace aploss {
namespace cpu {
namespace {

template <typename T>
void store_scalar(const at::Tensor& t, int64_t i, double v) {
  t.data_ptr<T>()[i] = static_cast<T>(v);
}

// t[i] = v in t's floating dtype.
void store(const at::Tensor& t, int64_t i, double v) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, t.scalar_type(), "aploss_store",
                                  [&] { store_scalar<scalar_t>(t, i, v); });
}

// Outputs of a call without positives.
RankingOutputs no_positives(const RankingInputs& in, const at::Tensor& labels) {
  const auto options = in.scores.options();
  RankingOutputs out;
  if (in.loss == LossKind::kRankSort) out.labels = labels;
  out.loss = at::zeros({}, options);
  if (in.loss == LossKind::kRankSort) out.parts = at::zeros({2}, options.dtype(at::kDouble));
  if (in.loss == LossKind::kALRP) {
    check_regression_losses(in.regression_losses, 0, in.scores);
    out.loc_weights = at::empty({0}, options.dtype(at::kDouble));
  }
  out.state = at::zeros({kStateRows * 8}, options.dtype(at::kByte));  // one zero column
  out.offsets = at::zeros({2}, options.dtype(at::kLong));
  out.positive_grads = at::empty({0, 2}, options.dtype(at::kDouble));
  out.classes = at::empty({0}, options.dtype(at::kLong));
  return out;
}

}  // namespace

RankingOutputs ranking_forward(const RankingInputs& in) {
  const at::Tensor& scores = in.scores;
  // Rank & Sort's targets as the labels the kernels read.
  const at::Tensor labels =
      in.loss == LossKind::kRankSort ? labels_from_targets(in.labels) : in.labels;
  const at::Tensor gathered = gather(scores, labels, {}, 1);
  const int64_t num_pos = gathered.size(1);
  if (num_pos == 0) return no_positives(in, labels);
  TORCH_CHECK_VALUE(num_pos <= std::numeric_limits<int32_t>::max(),
                    "at most 2^31 - 1 positives, got ", num_pos);
  if (in.loss == LossKind::kALRP && in.regression_losses.numel() != num_pos) {
    check_regression_losses(in.regression_losses, num_pos, scores);  // raises: the count
  }
  const double* score = gathered.const_data_ptr<double>();
  const double* position = score + 2 * num_pos;
  const std::vector<int64_t> order = stable_order(score, num_pos, /*descending=*/false);

  // Sorted positives (q and cluster shifts: math.h, kClusterGap), their positions and
  // values, and the stage's arrays, in one allocation.
  const int64_t p = num_pos, width = p + 1;
  const auto options = scores.options();
  at::Tensor positives = at::empty({2, p}, options.dtype(at::kDouble));
  // Not zeroed (at P = 40,000, 4 MB a call): every array is written before it is read, as
  // on the GPU, whose workspace is not zeroed either.
  const std::unique_ptr<double[]> work(new double[2 * p + 9 * width]);
  const std::unique_ptr<long long[]> positions(new long long[p]);
  const std::unique_ptr<int32_t[]> memory_rank(new int32_t[p]), window(new int32_t[2 * p]);
  double* q = positives.data_ptr<double>();
  double* shift = q + p;
  double* value = work.get();
  double* w = value + p;
  double* rows = w + p;
  for (int64_t i = 0; i < p; ++i) {
    const int64_t at = order[i];
    q[i] = score[at];
    positions[i] = static_cast<long long>(position[at]);
    memory_rank[i] = static_cast<int32_t>(at);  // the gather keeps memory order
  }
  for (int64_t i = 0, start = 0; i < p; ++i) {
    if (i > 0 && q[i] - q[i - 1] >= kClusterGap * in.delta) start = i;
    shift[i] = q[start];
  }
  if (in.loss == LossKind::kRankSort) {
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, in.labels.scalar_type(),
                                    "aploss_targets", [&] {
      const scalar_t* t = in.labels.const_data_ptr<scalar_t>();
      for (int64_t i = 0; i < p; ++i) value[i] = static_cast<double>(t[positions[i]]);
    });
  } else if (in.loss == LossKind::kALRP) {
    bool valid = true;  // finite and >= 0
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, in.regression_losses.scalar_type(),
                                    "aploss_regression_losses", [&] {
      const scalar_t* l = in.regression_losses.const_data_ptr<scalar_t>();
      for (int64_t i = 0; i < p; ++i) {
        value[i] = static_cast<double>(l[memory_rank[i]]);
        valid = valid && value[i] >= 0.0 && value[i] - value[i] == 0.0;
      }
    });
    if (!valid) check_regression_losses(in.regression_losses, num_pos, scores);  // raises
  }

  // fp(i) from pass 1's difference arrays (math.h, accumulate_negative).
  const at::Tensor differences = sorted_pass1(scores, labels, positives, in.delta);
  const double* d1 = differences.const_data_ptr<double>();
  const double* da = d1 + width;
  const double* db = da + width;
  double* fp = rows + 8 * width;
  double c1 = 0.0, a = 0.0, b = 0.0;
  for (int64_t i = 0; i < p; ++i) {
    c1 += d1[i], a += da[i], b += db[i];
    fp[i] = c1 + a - b * (q[i] - shift[i]) * (0.5 / in.delta);
  }
  // Each positive's window among the positives: its interval's in pass 1's index (its
  // score is a key of the index's type).
  int32_t* window_lo = window.get();
  int32_t* window_hi = window_lo + p;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, scores.scalar_type(),
                                  "aploss_positive_windows", [&] {
    using K = typename ScoreKey<scalar_t>::type;
    const auto index = interval_index<K>(q, shift, p, in.delta);
    const IntervalIndex<K>& ix = index->get();
    for (int64_t j = 0; j < p; ++j) {
      const int64_t m = interval_of(ix, static_cast<K>(q[j]));
      window_lo[j] = static_cast<int32_t>(index->lo(m));
      window_hi[j] = static_cast<int32_t>(index->hi(m));
    }
  });

  RankingOutputs out;
  out.positive_grads = at::empty({p, 2}, options.dtype(at::kDouble));
  if (in.loss == LossKind::kALRP) out.loc_weights = at::empty({p}, options.dtype(at::kDouble));
  const StageArrays arrays{p, in.delta, q, shift, positions.get(), window_lo, window_hi, value,
                           memory_rank.get(), fp,
                           {rows, rows + width, rows + 2 * width, rows + 3 * width,
                            rows + 4 * width, rows + 5 * width, rows + 6 * width,
                            rows + 7 * width},
                           w, out.positive_grads.data_ptr<double>(),
                           out.loc_weights.defined() ? out.loc_weights.data_ptr<double>()
                                                     : nullptr};
  const SerialBlock block;
  StageLosses losses;
  switch (in.loss) {
    case LossKind::kAP: losses = ap_stage(block, arrays, in.interpolate); break;
    case LossKind::kRankSort: losses = rank_sort_stage(block, arrays); break;
    case LossKind::kALRP: losses = alrp_stage(block, arrays); break;
  }
  out.loss = at::empty({}, options);
  store(out.loss, 0, losses.loss);
  if (in.loss == LossKind::kRankSort) {
    out.parts = at::tensor({losses.parts[0], losses.parts[1]}, options.dtype(at::kDouble));
  }

  // Pass 2's state (../aploss/kernels.h): q, shifts, w, and the prefix sums W and Q.
  at::Tensor state = at::empty({kStateRows, width}, options.dtype(at::kDouble));
  double* st = state.data_ptr<double>();
  double prefix_w = 0.0, prefix_q = 0.0;
  for (int64_t i = 0; i <= p; ++i) {
    const int64_t at = i < p ? i : p - 1;  // the padding column repeats the last positive
    st[kRowQ * width + i] = q[at];
    st[kRowShift * width + i] = shift[at];
    st[kRowW * width + i] = i < p ? w[i] : 0.0;
    st[kRowPrefixW * width + i] = prefix_w;
    st[kRowPrefixQ * width + i] = prefix_q;
    if (i < p) {
      prefix_w += w[i];
      prefix_q += (q[i] - shift[i]) * w[i];
    }
  }
  out.state = state.view(at::kByte).view({-1});
  out.offsets = at::empty({2}, options.dtype(at::kLong));
  out.offsets.data_ptr<int64_t>()[0] = 0;
  out.offsets.data_ptr<int64_t>()[1] = p;
  out.classes = at::empty({0}, options.dtype(at::kLong));  // pass 2 reads the labels
  if (in.loss == LossKind::kRankSort) out.labels = labels;
  return out;
}

}  // namespace cpu
}  // namespace aploss
