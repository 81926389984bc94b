// User-facing errors raised by the kernels once a pass has flagged a bad entry.
// They surface in Python as ValueError (TORCH_CHECK_VALUE).
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

namespace aploss {

// `labels` is the flat view the kernel read; `index` its first invalid entry.
[[noreturn]] inline void throw_invalid_label(const at::Tensor& labels, int64_t index) {
  const double value = labels[index].item<double>();
  TORCH_CHECK_VALUE(false, "ap_loss: labels must be 1 (positive), 0 (negative) or -1 (ignored)",
                    labels.scalar_type() == at::kByte ? " (uint8 labels cannot hold -1)" : "",
                    "; found ", value, " at flat index ", index, " (memory order)");
  __builtin_unreachable();
}

[[noreturn]] inline void throw_non_finite_score(const at::Tensor& scores, int64_t index) {
  const double value = scores[index].item<double>();
  TORCH_CHECK_VALUE(false, "ap_loss: scores must be finite; found ", value, " at flat index ",
                    index, " (memory order)");
  __builtin_unreachable();
}

}  // namespace aploss
