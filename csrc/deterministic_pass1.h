// Pass 1 with a deterministic reduction, for torch.use_deterministic_algorithms(True) on
// backends whose sorted_pass1 adds with float atomics (CUDA's stage path of one ranking).
#pragma once

#include <ATen/core/Tensor.h>

namespace aploss {

struct Kernels;

// Whether pass 1 must use deterministic_pass1 with the kernels `k`.
bool needs_deterministic_pass1(const Kernels& k);

// The (3, P+1) difference arrays of one ranking's sorted_pass1 (kernels.h), summed from
// per-entry records (aploss/pass1_record.h) with ATen's deterministic index_add, in
// chunks so that the records stay small. Equal to the atomics' result to rounding, and
// bitwise reproducible.
at::Tensor deterministic_pass1(const Kernels& k, const at::Tensor& scores,
                               const at::Tensor& labels, const at::Tensor& positives,
                               double delta);

}  // namespace aploss
