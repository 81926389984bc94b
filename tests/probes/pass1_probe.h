// Pass 1's difference arrays by one kernel table, from its own kernel or from the
// deterministic per-entry records (csrc/deterministic_pass1.cpp), so that the tests can
// hold the two against each other on every backend.
#pragma once

#include <ATen/core/Tensor.h>

#include <optional>

namespace aploss {

struct Kernels;

namespace probes {

// The (3, P+1) float64 difference arrays d1, da, db (kernels.h, sorted_pass1) of 1-D
// contiguous scores and labels against `positives` ((2, P) float64, as rank_positives
// returns them). With `codes` (int32, one per entry) and `offsets` (int64, U+1): each
// entry against its own group's segment (grouped_pass1). `deterministic` (one ranking
// only, as in the library): summed from k.pass1_records instead.
at::Tensor pass1_differences(const Kernels& k, const at::Tensor& scores, const at::Tensor& labels,
                            const std::optional<at::Tensor>& codes, const at::Tensor& positives,
                            const std::optional<at::Tensor>& offsets, double delta,
                            bool deterministic);

}  // namespace probes
}  // namespace aploss
