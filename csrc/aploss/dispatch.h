// Dtype dispatch for the kernels: scores in their own floating dtype (scalar_t),
// labels in their own dtype (label_t). No conversion copies of N-sized inputs.
#pragma once

#include <ATen/Dispatch.h>

#define APLOSS_LABEL_CASE(ENUM, ...) AT_PRIVATE_CASE_TYPE_USING_HINT(ENUM, label_t, __VA_ARGS__)

// Label dtypes accepted by every kernel; keep in sync with LABEL_DTYPES in
// aploss_cuda/_contract.py and check_inputs in csrc/ops.cpp.
#if !defined(APLOSS_SIMT_FEW_DTYPES)
#define APLOSS_DISPATCH_LABELS(TYPE, NAME, ...)                            \
  AT_DISPATCH_SWITCH(TYPE, NAME,                                           \
                     APLOSS_LABEL_CASE(at::ScalarType::Bool, __VA_ARGS__)  \
                     APLOSS_LABEL_CASE(at::ScalarType::Char, __VA_ARGS__)  \
                     APLOSS_LABEL_CASE(at::ScalarType::Byte, __VA_ARGS__)  \
                     APLOSS_LABEL_CASE(at::ScalarType::Int, __VA_ARGS__)   \
                     APLOSS_LABEL_CASE(at::ScalarType::Long, __VA_ARGS__)  \
                     APLOSS_LABEL_CASE(at::ScalarType::Float, __VA_ARGS__) \
                     APLOSS_LABEL_CASE(at::ScalarType::Double, __VA_ARGS__))

#define APLOSS_DISPATCH_SCORES(TYPE, NAME, ...)                                              \
  AT_DISPATCH_FLOATING_TYPES_AND2(at::ScalarType::Half, at::ScalarType::BFloat16, TYPE, NAME, \
                                  __VA_ARGS__)
#else
// The emulated device of the tests (tests/simt) compiles a few dtypes, to keep its build
// short: every other pair raises "not implemented" there.
#define APLOSS_DISPATCH_LABELS(TYPE, NAME, ...)                           \
  AT_DISPATCH_SWITCH(TYPE, NAME,                                          \
                     APLOSS_LABEL_CASE(at::ScalarType::Bool, __VA_ARGS__) \
                     APLOSS_LABEL_CASE(at::ScalarType::Char, __VA_ARGS__) \
                     APLOSS_LABEL_CASE(at::ScalarType::Long, __VA_ARGS__))

#define APLOSS_DISPATCH_SCORES(TYPE, NAME, ...) \
  AT_DISPATCH_FLOATING_TYPES_AND(at::ScalarType::Half, TYPE, NAME, __VA_ARGS__)
#endif

// Both at once: scalar_t for scores, label_t for labels.
#define APLOSS_DISPATCH_SCORES_AND_LABELS(SCORE_TYPE, LABEL_TYPE, NAME, ...) \
  APLOSS_DISPATCH_SCORES(SCORE_TYPE, NAME, [&] {                             \
    APLOSS_DISPATCH_LABELS(LABEL_TYPE, NAME, __VA_ARGS__);                   \
  })
