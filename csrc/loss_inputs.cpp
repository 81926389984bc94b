#include "loss_inputs.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <type_traits>
#include <vector>

#include "aploss/errors.h"
#include "aploss/host_reads.h"
#include "cpu/chunks.h"
#include "op_checks.h"

namespace aploss {

void check_labels_like_scores(const at::Tensor& scores, const at::Tensor& labels, double delta) {
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

void check_row_major(const at::Tensor& scores, const at::Tensor& other) {
  TORCH_CHECK_VALUE(scores.is_contiguous() && other.is_contiguous(),
                    "scores and labels/targets must be contiguous (the Python API makes them so)");
}

void check_targets_like_scores(const at::Tensor& scores, const at::Tensor& targets,
                               double delta) {
  TORCH_CHECK_VALUE(scores.sizes() == targets.sizes(), "targets.shape ", targets.sizes(),
                    " must equal scores.shape ", scores.sizes());
  TORCH_CHECK_VALUE(scores.device() == targets.device(), "scores are on ", scores.device(),
                    " but targets are on ", targets.device());
  check_row_major(scores, targets);
  TORCH_CHECK_TYPE(
      at::isFloatingType(scores.scalar_type()) && at::isFloatingType(targets.scalar_type()),
      "scores and targets must be floating, got ", scores.scalar_type(), " and ",
      targets.scalar_type());
  checks::check_delta_for_scores(scores.scalar_type(), delta);
}

at::Tensor no_extra(const at::TensorOptions& options) { return at::empty({0}, options); }

namespace {

// The chunk [begin, end): its labels, and whether a target in it is invalid. Restrict
// pointers and an int reduction, so that the compiler vectorizes it (int8 stores may
// alias anything).
template <typename T, typename Value>
bool labels_of_chunk(const T* __restrict targets, int8_t* __restrict labels, int64_t begin,
                     int64_t end) {
  constexpr int64_t kStep = 64, kAhead = 1024;  // entries
  int any_invalid = 0;
  for (int64_t from = begin; from < end; from += kStep) {
    // By hand: the hardware's stream prefetch alone leaves the loop waiting on loads.
    const char* ahead = reinterpret_cast<const char*>(targets + from + kAhead);
    for (size_t line = 0; line < kStep * sizeof(T); line += 64) __builtin_prefetch(ahead + line);
    for (int64_t i = from, to = std::min(end, from + kStep); i < to; ++i) {
      const Value t = static_cast<Value>(targets[i]);
      const int8_t positive = t > Value(0), negative = t < Value(0);
      labels[i] = static_cast<int8_t>(positive - negative);
      any_invalid |= !(t <= Value(1));
    }
  }
  return any_invalid != 0;
}

// Host memory: the labels and the first invalid target (NaN or above 1; -1 if none) in
// one pass over the targets, where ATen takes three (a maximum, sign, a narrowing copy):
// about 4 ms of a 33 ms Rank & Sort call at N = 4M on one thread. float16 and bfloat16
// targets compare as their exact float values.
template <typename T>
int64_t labels_on_host(const T* targets, int8_t* labels, int64_t n) {
  using Value = std::conditional_t<std::is_same<T, double>::value, double, float>;
  const cpu::Chunks chunks = cpu::split_into_chunks(n, 0);
  std::vector<int64_t> invalid(chunks.count, -1);
  cpu::for_each_chunk(chunks, n, [&](int64_t c, int64_t begin, int64_t end) {
    if (!labels_of_chunk<T, Value>(targets, labels, begin, end)) return;
    int64_t i = begin;
    while (static_cast<Value>(targets[i]) <= Value(1)) ++i;
    invalid[c] = i;
  });
  return cpu::first_flagged(invalid.data(), chunks.count);
}

}  // namespace

at::Tensor labels_from_targets(const at::Tensor& targets) {
  TORCH_CHECK_TYPE(at::isFloatingType(targets.scalar_type()),
                   "targets must be a floating dtype, got ",
                   targets.scalar_type());
  at::Tensor labels = at::empty(targets.sizes(), targets.options().dtype(at::kChar));
  if (targets.numel() == 0) return labels;
  const auto type = targets.scalar_type();
  if (targets.is_cpu() && targets.is_contiguous() &&
      (type == at::kFloat || type == at::kDouble || type == at::kHalf || type == at::kBFloat16)) {
    int64_t invalid = -1;
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, type, "aploss_labels_from_targets",
                                    [&] {
      invalid = labels_on_host(targets.const_data_ptr<scalar_t>(),
                               labels.data_ptr<int8_t>(), targets.numel());
    });
    if (invalid >= 0) throw_invalid_target(targets.reshape({-1}), invalid);
    return labels;
  }
  // One reduction finds both errors (the maximum is NaN if any target is); the forward
  // syncs with the host at the gather anyway.
  const double largest = read_to_host(targets.max()).item<double>();
  if (std::isnan(largest) || largest > 1.0) {
    const at::Tensor flat = targets.reshape({-1});
    const int64_t index = at::nonzero(flat.isnan() | (flat > 1.0))[0][0].item<int64_t>();
    throw_invalid_target(flat, index);
  }
  return labels.copy_(targets.sign());
}

void check_regression_losses_layout(const at::Tensor& losses, const at::Tensor& like) {
  TORCH_CHECK_TYPE(at::isFloatingType(losses.scalar_type()),
                   "regression_losses must be a floating dtype, got ",
                   losses.scalar_type());
  TORCH_CHECK_VALUE(losses.device() == like.device(), "regression_losses are on ",
                    losses.device(), " but scores are on ", like.device());
  TORCH_CHECK_VALUE(losses.dim() == 1,
                    "regression_losses must be 1-D (one value per positive), got shape ",
                    losses.sizes());
}

void check_regression_losses(const at::Tensor& losses, int64_t num_pos, const at::Tensor& like) {
  check_regression_losses_layout(losses, like);
  TORCH_CHECK_VALUE(losses.dim() == 1 && losses.numel() == num_pos,
                    "regression_losses must be 1-D with one value per positive (",
                    num_pos, " positives), got shape ", losses.sizes());
  if (num_pos == 0) return;
  const at::Tensor holds = (at::isfinite(losses) & (losses >= 0)).all();
  if (!read_to_host(holds).item<bool>()) throw_invalid_regression_losses(losses);
}

}  // namespace aploss
