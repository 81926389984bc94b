// The CPU backend's kernels (see ../aploss/kernels.h for the contract).
#pragma once

#include <ATen/core/Tensor.h>

#include <tuple>

#include "../aploss/kernels.h"

namespace aploss {
namespace cpu {

at::Tensor gather(const at::Tensor& scores, const at::Tensor& labels, const at::Tensor& codes,
                  int64_t code_repeat);
at::Tensor sorted_pass1(const at::Tensor& scores, const at::Tensor& labels,
                        const at::Tensor& positives, double delta);
void sorted_pass2(const at::Tensor& scores, const at::Tensor& labels, const at::Tensor& state,
                  double delta, const at::Tensor& grad_output, at::Tensor& grad);
at::Tensor pairwise_pass1(const at::Tensor& scores, const at::Tensor& labels,
                          const at::Tensor& positives, double delta);
void pairwise_pass2(const at::Tensor& scores, const at::Tensor& labels, const at::Tensor& state,
                    double delta, const at::Tensor& grad_output, at::Tensor& grad);
at::Tensor grouped_pass1(const at::Tensor& scores, const at::Tensor& labels,
                         const at::Tensor& codes, int64_t code_repeat, const at::Tensor& positives,
                         const at::Tensor& offsets, double delta);
void grouped_pass2(const at::Tensor& scores, const at::Tensor& labels, const at::Tensor& codes,
                   int64_t code_repeat, const at::Tensor& state, const at::Tensor& offsets,
                   double delta, const at::Tensor& grad_output, at::Tensor& grad);
at::Tensor positive_window_sums(const at::Tensor& positives, const at::Tensor& offsets,
                                const at::Tensor& keys, const at::Tensor& values, double delta,
                                bool below, bool transpose);
at::Tensor pass1_records(const at::Tensor& scores, const at::Tensor& labels,
                         const at::Tensor& codes, const at::Tensor& positives,
                         const at::Tensor& offsets, double delta);

// For one ranking's P sorted positives (q, cluster shifts) and each of `rows` value rows
// (`stride` apart, as the outputs): the sum over the positives m with keys[m] < keys[x] of
// H(q_m - q_x) (transpose: H(q_x - q_m)) times the value at m (positive_sums_cpu.cpp);
// window_lo, window_hi: each positive's window among them (math.h, find_window).
void key_window_sums(const double* q, const double* shift, const int32_t* window_lo,
                     const int32_t* window_hi, int64_t num_pos, const double* keys,
                     const double* values, int rows, int64_t stride, double delta,
                     bool transpose, double* out);

// One ungrouped ranking by the sorted method as a whole (ranking_cpu.cpp).
RankingOutputs ranking_forward(const RankingInputs& in);

// Dense int32 codes of arbitrary non-negative ids (contiguous, shaped like ids), and
// how many distinct ids there are.
std::tuple<at::Tensor, int64_t> dense_codes(const at::Tensor& ids);

}  // namespace cpu
}  // namespace aploss
