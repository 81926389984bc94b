// User-facing errors raised by the kernels once a pass has flagged a bad entry.
// They surface in Python as ValueError (TORCH_CHECK_VALUE).
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include "host_reads.h"

namespace aploss {

// `labels` is the flat view the kernel read; `index` its first invalid entry.
[[noreturn]] inline void throw_invalid_label(const at::Tensor& labels, int64_t index) {
  const double value = read_to_host(labels[index]).item<double>();
  TORCH_CHECK_VALUE(false, "ap_loss: labels must be 1 (positive), 0 (negative) or -1 (ignored)",
                    labels.scalar_type() == at::kByte ? " (uint8 labels cannot hold -1)" : "",
                    "; found ", value, " at flat index ", index, " (memory order)");
  __builtin_unreachable();
}

[[noreturn]] inline void throw_non_finite_score(const at::Tensor& scores, int64_t index) {
  const double value = read_to_host(scores[index]).item<double>();
  TORCH_CHECK_VALUE(false, "ap_loss: scores must be finite; found ", value, " at flat index ",
                    index, " (memory order)");
  __builtin_unreachable();
}

// Rank & Sort loss's targets (../family_inputs.cpp has the same rule).
[[noreturn]] inline void throw_invalid_target(const at::Tensor& targets, int64_t index) {
  const double value = read_to_host(targets[index]).item<double>();
  TORCH_CHECK_VALUE(false,
                    "rank_sort_loss: targets must be in (0, 1] for a positive, 0 for a "
                    "negative, < 0 (e.g. -1) for an ignored entry; found ",
                    value, " at flat index ", index, " (memory order)");
  __builtin_unreachable();
}

}  // namespace aploss
