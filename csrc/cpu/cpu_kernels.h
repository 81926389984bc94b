// The CPU backend's kernels (see ../aploss/kernels.h for the contract).
#pragma once

#include <ATen/core/Tensor.h>

#include "../aploss/kernels.h"

namespace aploss {
namespace cpu {

// The table's entry points (signatures and contract: ../aploss/kernels.h). The CPU
// provides no ranking_backward: its ranking_forward returns no entry classes.
APLOSS_KERNEL_ENTRIES(APLOSS_DECLARE_KERNEL)
APLOSS_RECORDED_INTERVAL_ENTRIES(APLOSS_DECLARE_KERNEL)

// For one ranking's P sorted positives (q, cluster shifts) and each of `rows` value rows
// (`stride` apart, as the outputs): the sum over the positives m with keys[m] < keys[x] of
// H(q_m - q_x) (transpose: H(q_x - q_m)) times the value at m (positive_sums_cpu.cpp);
// window_lo, window_hi: each positive's window among them (math.h, find_window).
void key_window_sums(const double* q, const double* shift, const int32_t* window_lo,
                     const int32_t* window_hi, int64_t num_pos, const double* keys,
                     const double* values, int rows, int64_t stride, double delta,
                     bool transpose, double* out);

}  // namespace cpu
}  // namespace aploss
