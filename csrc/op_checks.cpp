#include "op_checks.h"

#include <ATen/ATen.h>

#include <cmath>
#include <limits>
#include <string>

#include "aploss/errors.h"
#include "aploss/kernels.h"
#include "stages.h"

namespace aploss {
namespace checks {

void check_delta(double delta) {
  TORCH_CHECK_VALUE(std::isfinite(delta) && delta >= std::numeric_limits<double>::min(),
                    "delta must be finite and >= 2.2250738585072014e-308 (the smallest normal "
                    "float64), got ",
                    exact_repr(delta));
}

void check_delta_for_scores(at::ScalarType scores_dtype, double delta) {
  check_delta(delta);
  TORCH_CHECK_VALUE(scores_dtype == at::kDouble || delta >= std::numeric_limits<float>::min(),
                    "delta must be >= 1.1754943508222875e-38 (the smallest normal float32) for ",
                    scores_dtype, " scores, which are compared in float32; got ",
                    exact_repr(delta), " (float64 scores take a smaller delta)");
}

void expect_tensor(const at::Tensor& t, const char* name, at::ScalarType dtype, int64_t rank,
                   const at::Device& device) {
  TORCH_CHECK_TYPE(t.scalar_type() == dtype, name, " must be ", dtype, ", got ", t.scalar_type());
  TORCH_CHECK_VALUE(t.dim() == rank, name, " must have ", rank, " dimension(s), got shape ",
                    t.sizes());
  TORCH_CHECK_VALUE(t.device() == device, name, " must be on ", device, " with the scores, got ",
                    t.device());
}

namespace {

std::string text(const char* name, const char* rule) { return std::string(name) + rule; }

// q (P) finite and sorted within each segment, `shift` the cluster shifts of q under
// delta; `segment` (P) non-decreasing, changing exactly where a segment starts.
void check_scores_and_shifts(Invariants& inv, const at::Tensor& q, const at::Tensor& shift,
                             const at::Tensor& segment, double delta, const char* what) {
  inv.require(at::isfinite(q) & at::isfinite(shift), text(what, " must be finite"));
  if (q.numel() > 1) {
    inv.require((q.diff() >= 0) | (segment.diff() != 0),
                text(what, "' scores must be sorted ascending within each group"));
  }
  inv.require(make_positives(q, delta, segment)[1] == shift,
              text(what, "' cluster shifts must be those of their scores under delta (as "
                         "rank_positives computes them)"));
}

}  // namespace

void check_offsets(Invariants& inv, const at::Tensor& offsets, int64_t num_pos) {
  const int64_t last = offsets.numel() - 1;
  inv.require(offsets.select(0, 0) == 0, "offsets must start at 0");
  inv.require(offsets.select(0, last) == num_pos,
              "offsets must end at the number of positives, " + std::to_string(num_pos));
  inv.require(offsets.diff() >= 0, "offsets must not decrease");
}

void check_positives(Invariants& inv, const Positives& pos, double delta) {
  const at::Device device = pos.positives.device();
  expect_tensor(pos.positives, "positives", at::kDouble, 2, device);
  TORCH_CHECK_VALUE(pos.positives.size(0) == 2 && pos.positives.size(1) >= 1,
                    "positives must have shape (2, P) with P >= 1 ([scores; cluster shifts], "
                    "as rank_positives returns them), got ",
                    pos.positives.sizes());
  const int64_t num_pos = pos.positives.size(1);
  expect_tensor(pos.offsets, "offsets", at::kLong, 1, device);
  TORCH_CHECK_VALUE(pos.offsets.numel() >= 2,
                    "offsets must hold U + 1 >= 2 values (one segment per group), got ",
                    pos.offsets.numel());
  expect_tensor(pos.positive_group, "positive_group", at::kLong, 1, device);
  TORCH_CHECK_VALUE(pos.positive_group.numel() == num_pos,
                    "positive_group must hold one value per positive (", num_pos, "), got ",
                    pos.positive_group.numel());
  check_offsets(inv, pos.offsets, num_pos);
  const int64_t num_groups = pos.offsets.numel() - 1;
  const at::Tensor& group = pos.positive_group;
  const at::Tensor clamped = group.clamp(0, num_groups - 1);
  const at::Tensor column = at::arange(num_pos, group.options());
  inv.require((group >= 0) & (group < num_groups) &
                  (pos.offsets.index_select(0, clamped) <= column) &
                  (column < pos.offsets.index_select(0, clamped + 1)),
              "positive_group must give each positive the group whose offsets hold its column");
  check_scores_and_shifts(inv, pos.positives[0], pos.positives[1], group, delta, "positives");
}

void check_indices(Invariants& inv, const at::Tensor& t, const char* name, int64_t num_pos,
                   int64_t bound, const at::Device& device) {
  expect_tensor(t, name, at::kLong, 1, device);
  TORCH_CHECK_VALUE(t.numel() == num_pos, name, " must hold one value per positive (", num_pos,
                    "), got ", t.numel());
  inv.require((t >= 0) & (t < bound),
              std::string(name) + " must lie in [0, " + std::to_string(bound) + ")");
}

void check_per_positive(Invariants& inv, const at::Tensor& t, const char* name,
                        int64_t num_pos, bool at_most_one, const at::Device& device) {
  expect_tensor(t, name, at::kDouble, 1, device);
  TORCH_CHECK_VALUE(t.numel() == num_pos, name, " must hold one value per positive (", num_pos,
                    "), got ", t.numel());
  if (at_most_one) {
    inv.require((t > 0) & (t <= 1), text(name, " must lie in (0, 1]"));
  } else {
    inv.require(at::isfinite(t) & (t >= 0), text(name, " must be finite and >= 0"));
  }
}

void check_positive_grads(Invariants& inv, const at::Tensor& positive_grads, int64_t n,
                          const at::Device& device) {
  expect_tensor(positive_grads, "positive_grads", at::kDouble, 2, device);
  TORCH_CHECK_VALUE(positive_grads.size(1) == 2,
                    "positive_grads must have shape (P, 2) [position, gradient], got ",
                    positive_grads.sizes());
  const at::Tensor position = positive_grads.select(1, 0);
  inv.require((position >= 0) & (position < static_cast<double>(n)) &
                  (position == position.floor()),
              "positive_grads' positions must be integers in [0, " + std::to_string(n) + ")");
  if (positive_grads.size(0) > 1) {
    inv.require(std::get<0>(position.sort()).diff() > 0,
                "positive_grads' positions must be distinct");
  }
  inv.require(at::isfinite(positive_grads.select(1, 1)),
              "positive_grads' gradients must be finite");
}

void check_state_rows(Invariants& inv, const at::Tensor& rows, const at::Tensor& offsets,
                      const at::Tensor& positive_grads, int64_t n, double delta) {
  const int64_t num_pos = rows.size(1) - 1;
  check_positive_grads(inv, positive_grads, n, rows.device());
  check_offsets(inv, offsets, num_pos);
  inv.require(at::isfinite(rows), "state must be finite");
  // Segment k's columns: a segment starts at each offset.
  const at::Tensor starts = at::zeros({num_pos + 1}, offsets.options().dtype(at::kLong));
  starts.index_fill_(0, offsets.clamp(0, num_pos), 1);
  const at::Tensor segment = starts.narrow(0, 0, num_pos).cumsum(0);
  check_scores_and_shifts(inv, rows[kRowQ].narrow(0, 0, num_pos),
                          rows[kRowShift].narrow(0, 0, num_pos), segment, delta, "state's positives");
  inv.require(rows[kRowW] >= 0, "state's weights must be >= 0");
  inv.require((rows[kRowPrefixW].select(0, 0) == 0) & (rows[kRowPrefixW].diff() >= 0).all(),
              "state's prefix sums of the weights must start at 0 and not decrease");
}

namespace {
thread_local bool trusted = false;
}  // namespace

TrustForwardOutputs::TrustForwardOutputs() : previous_(trusted) { trusted = true; }
TrustForwardOutputs::~TrustForwardOutputs() { trusted = previous_; }
bool forward_outputs_trusted() { return trusted; }
bool set_forward_outputs_trusted(bool value) {
  const bool previous = trusted;
  trusted = value;
  return previous;
}

}  // namespace checks
}  // namespace aploss
