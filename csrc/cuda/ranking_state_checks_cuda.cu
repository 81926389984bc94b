// What pass 2 of one ranking requires of a workspace it did not see built (kernels.h,
// check_ranking_state): ATen ops over views of the workspace, evaluated on the device and
// read back with the caller's other invariants. Pass 2 reads P index thresholds, the
// buckets' records, 2P + 1 pieces, the entries' classes and the positives' gradients:
// these checks keep every index it derives from them in bounds, and every entry's
// gradient written exactly once.
#include <ATen/ATen.h>

#include <climits>
#include <limits>
#include <string>

#include "../aploss/intervals.h"
#include "../aploss/invariants.h"
#include "ranking_cuda.cuh"

namespace aploss {
namespace gpu {
namespace {

// Bytes [offset, offset + count * elements of `dtype`) of the workspace, as `dtype`.
at::Tensor region(const at::Tensor& workspace, int64_t offset, int64_t count,
                  at::ScalarType dtype) {
  return workspace.narrow(0, offset, count * static_cast<int64_t>(c10::elementSize(dtype)))
      .view(dtype);
}

// The number of set bits of each byte.
at::Tensor popcounts(const at::Tensor& bytes) {
  at::Tensor table = at::empty({256}, at::TensorOptions().dtype(at::kLong));
  int64_t* t = table.data_ptr<int64_t>();
  for (int v = 0; v < 256; ++v) t[v] = __builtin_popcount(static_cast<unsigned>(v));
  return table.to(bytes.device()).index_select(0, bytes.to(at::kLong));
}

}  // namespace

void check_ranking_state(Invariants& inv, const at::Tensor& scores, const at::Tensor& classes,
                         const at::Tensor& state, const at::Tensor& positive_grads) {
  const bool double_keys = scores.scalar_type() == at::kDouble;
  const int64_t key_bytes = double_keys ? 8 : 4;
  const at::ScalarType key_type = double_keys ? at::kDouble : at::kFloat;
  const at::ScalarType first_type = double_keys ? at::kLong : at::kInt;
  const int64_t n = scores.numel();
  const int64_t num_pos = positive_grads.size(0);

  // The sizes, on the host: a workspace of some capacity C >= P.
  int64_t capacity = 0;
  while (ranking_layout(capacity, key_bytes).bytes < state.numel()) {
    capacity = capacity == 0 ? 1 : 2 * capacity;
  }
  for (int64_t lo = capacity / 2; lo < capacity;) {  // the least capacity that holds it
    const int64_t mid = lo + (capacity - lo) / 2;
    if (ranking_layout(mid, key_bytes).bytes < state.numel()) lo = mid + 1; else capacity = mid;
  }
  const RankingLayout l = ranking_layout(capacity, key_bytes);
  TORCH_CHECK_VALUE(l.bytes == state.numel(),
                    "state must be the workspace that the forward returned; its ",
                    state.numel(), " bytes fit no capacity");
  TORCH_CHECK_VALUE(num_pos <= capacity, "positive_grads holds ", num_pos,
                    " positives, more than the state's capacity, ", capacity);

  const at::Tensor ws = state.contiguous();
  const at::Tensor meta = region(ws, l.meta, kMetaWords, at::kLong);
  inv.require(meta.select(0, kMetaCount) == num_pos,
              "state must hold the forward's " + std::to_string(num_pos) + " positives");
  inv.require(meta.select(0, kMetaRanked) == 1, "state must hold the forward's index");
  for (int word : {kMetaBadLabel, kMetaBadPositive, kMetaBadNegative, kMetaBadValue}) {
    inv.require(meta.select(0, word) == LLONG_MAX, "state must come from a forward that passed");
  }

  // The index: 2P thresholds, not decreasing, padded with +inf; every bucket's first
  // threshold in [0, 2P], not decreasing, the last 2P; each record's candidates the
  // thresholds it stands for.
  const int64_t count = 2 * num_pos;
  const at::Tensor thresholds = region(ws, l.thresholds, count + kThresholdPadding, key_type);
  const at::Tensor own = thresholds.narrow(0, 0, count);
  inv.require(own == own, "state's index thresholds must not be NaN");
  inv.require(own.diff() >= 0, "state's index thresholds must not decrease");
  inv.require(thresholds.narrow(0, count, kThresholdPadding) ==
                  std::numeric_limits<double>::infinity(),
              "state's index thresholds must end with +inf");
  const int64_t buckets = index_buckets(num_pos);
  const at::Tensor records = region(ws, l.records, 4 * (buckets + 1), key_type).view({-1, 4});
  const at::Tensor first =  // BucketRecord<K>: three keys, then `first` in a word of their size
      region(ws, l.records, 4 * (buckets + 1), first_type).view({-1, 4}).select(1, 3).to(at::kLong);
  inv.require((first >= 0) & (first <= count), "state's index records must point into it");
  inv.require(first.diff() >= 0, "state's index records must not decrease");
  inv.require(first.select(0, buckets) == count, "state's last index record must end it");
  const at::Tensor clamped = first.narrow(0, 0, buckets).clamp(0, count);
  for (int c = 0; c <= kIntervalCandidates; ++c) {
    inv.require(records.narrow(0, 0, buckets).select(1, c) ==
                    thresholds.index_select(0, (clamped + c).clamp_max(count + kThresholdPadding - 1)),
                "state's index records must repeat its thresholds");
  }

  // The pieces of the 2P + 1 intervals: finite.
  inv.require(at::isfinite(region(ws, l.pieces, 4 * (count + 1), key_type)),
              "state's gradient pieces must be finite");

  // The classes: exactly P positives, at positive_grads' positions.
  const at::Tensor high_halves = classes.view(at::kInt).view({-1, 2}).select(1, 1).contiguous();
  inv.require(popcounts(high_halves.view(at::kByte)).sum() == num_pos,
              "classes must mark the " + std::to_string(num_pos) + " positives of the state");
  const at::Tensor position = positive_grads.select(1, 0).clamp(0, n - 1).to(at::kLong);
  const at::Tensor word = classes.index_select(0, at::floor_divide(position, 32));
  inv.require(word.bitwise_right_shift(position.remainder(32) + 32).bitwise_and(1) == 1,
              "classes must mark positive_grads' positions as positives");
}

}  // namespace gpu
}  // namespace aploss
