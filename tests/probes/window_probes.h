// The window searches as functions of tensors, so that tests/test_math_header.py can hold
// each against the definition.
#pragma once

#include <ATen/core/Tensor.h>

#include <tuple>

namespace aploss {
namespace probes {

// math.h's window of every score: its plain binary search (what the CUDA kernels run)
// or, with `indexed`, its bucket-indexed one. scores: (M,) float64; positives: (2, P)
// float64 (sorted q, cluster shifts), P >= 1. Returns lo, hi (int64) and a (float64).
std::tuple<at::Tensor, at::Tensor, at::Tensor> find_windows(const at::Tensor& scores,
                                                            const at::Tensor& positives,
                                                            double delta, bool indexed);

// intervals.h's interval of every score (the CPU passes' threshold count), in the key
// type of the scores: (M,) finite float32 or float64; positives as above. Returns lo and
// hi (int64).
std::tuple<at::Tensor, at::Tensor> find_intervals(const at::Tensor& scores,
                                                  const at::Tensor& positives, double delta);

}  // namespace probes
}  // namespace aploss
