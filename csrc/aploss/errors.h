// User-facing errors raised by the kernels once a pass has flagged a bad entry. They
// surface in Python as ValueError (TORCH_CHECK_VALUE), without the name of the function
// the user called: each operator puts its own in front (../ops.h).
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include <cstdio>
#include <cstdlib>
#include <string>

#include "host_reads.h"

namespace aploss {

// The shortest decimal form that reads back as `value` (as Python's repr of a float).
inline std::string exact_repr(double value) {
  char text[32];
  for (int digits = 1; digits <= 17; ++digits) {
    std::snprintf(text, sizeof text, "%.*g", digits, value);
    if (std::strtod(text, nullptr) == value || value != value) break;
  }
  return text;
}

// Element `index` of a 1-D tensor as text, exactly: integers as integers, floats as
// exact_repr of their value.
inline std::string element_repr(const at::Tensor& flat, int64_t index) {
  const at::Tensor value = read_to_host(flat[index]);
  if (at::isFloatingType(value.scalar_type())) return exact_repr(value.item<double>());
  if (value.scalar_type() == at::kBool) return value.item<bool>() ? "True" : "False";
  return std::to_string(value.item<int64_t>());
}

// `labels` is the flat view the kernel read; `index` its first invalid entry.
[[noreturn]] inline void throw_invalid_label(const at::Tensor& labels, int64_t index) {
  TORCH_CHECK_VALUE(false, "labels must be 1 (positive), 0 (negative) or -1 (ignored)",
                    labels.scalar_type() == at::kByte ? " (uint8 labels cannot hold -1)" : "",
                    "; found ", element_repr(labels, index), " at flat index ", index,
                    " (memory order)");
  __builtin_unreachable();
}

[[noreturn]] inline void throw_non_finite_score(const at::Tensor& scores, int64_t index) {
  TORCH_CHECK_VALUE(false, "scores must be finite; found ", element_repr(scores, index),
                    " at flat index ", index, " (memory order)");
  __builtin_unreachable();
}

// Rank & Sort loss's targets (../loss_inputs.cpp has the same rule).
[[noreturn]] inline void throw_invalid_target(const at::Tensor& targets, int64_t index) {
  TORCH_CHECK_VALUE(false,
                    "targets must be in (0, 1] for a positive, 0 for a negative, < 0 (e.g. -1) "
                    "for an ignored entry; found ",
                    element_repr(targets, index), " at flat index ", index, " (memory order)");
  __builtin_unreachable();
}

// aLRP loss's regression losses: one of them is not finite or is negative.
[[noreturn]] inline void throw_invalid_regression_losses(const at::Tensor& losses) {
  const at::Tensor flat = losses.reshape({-1});
  const at::Tensor bad = flat.isfinite().logical_and(flat.ge(0)).logical_not();
  const int64_t index = read_to_host(bad.to(at::kByte).argmax()).item<int64_t>();
  TORCH_CHECK_VALUE(false, "regression_losses must be finite and >= 0; found ",
                    element_repr(flat, index), " at index ", index);
  __builtin_unreachable();
}

}  // namespace aploss
