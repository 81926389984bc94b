// The one pipeline every loss runs (losses.h): group codes, gather, rank_positives,
// pass 1, then the loss's positive stage; or, for one ungrouped ranking by the sorted
// method, a backend's whole-ranking path (Kernels::ranking_forward) when it has one.
// Pass 2 (stages.h) is every loss's backward.
#pragma once

#include <ATen/core/Tensor.h>

#include <optional>

#include "flat_inputs.h"
#include "losses.h"
#include "stages.h"

namespace aploss {

// What the forward returns; the backward reads all but loss and extra.
struct ForwardOutputs {
  at::Tensor loss;            // 0-dim, scores' dtype
  at::Tensor extra;           // 1-D float64 (LossDef::extra)
  at::Tensor state;           // 1-D bytes: the stages' (kStateRows, P+1) float64 rows, or
                              // what a backend's ranking_forward keeps
  at::Tensor offsets;         // (U+1) int64: each group's segment of the positives
  at::Tensor codes;           // group_ids as dense int32 codes (empty without group_ids),
                              // or as the uint32 intervals pass 1 recorded (records_intervals)
  at::Tensor labels;          // the labels pass 2 reads where they are not the input's
                              // (N int8), else empty
  at::Tensor positive_grads;  // (P, 2) float64 [position, gradient]
  at::Tensor classes;         // the entries' packed classes from ranking_forward, or empty
};

ForwardOutputs run_forward(const Kernels& k, const LossDef& loss, const at::Tensor& scores,
                           const at::Tensor& labels, const at::Tensor& values,
                           const std::optional<at::Tensor>& group_ids, double delta,
                           bool interpolate, Method method);

// The stages' view of the N-sized inputs; codes (int32) broadcast to scores' shape, as
// code_layout.h lays them out when the backend reads them so (kernels.h), else one per
// entry.
Entries entries(const Kernels& k, const FlatInputs& in, const at::Tensor& scores,
                const std::optional<at::Tensor>& codes);

// Whether the forward's pass 1 records each entry's interval over its codes (one id per
// entry, on a backend that records them): its codes output is then those intervals, as
// uint32, which loss_backward's pass 2 reads instead of finding them again. A rule of
// shapes alone, which the operator's fake follows (aploss_cuda/_ops.py).
bool records_intervals(const Kernels& k, const at::Tensor& group_ids, const at::Tensor& scores,
                       Method method);

// entries() for pass 2: uint32 codes are recorded intervals (ValueError where the
// backend records none, or their count is not one per entry).
Entries backward_entries(const Kernels& k, const FlatInputs& in, const at::Tensor& scores,
                         const std::optional<at::Tensor>& codes);

// The stages' (kStateRows, P+1) float64 state as 1-D bytes, and back.
at::Tensor state_bytes(const at::Tensor& rows);
at::Tensor state_rows(const at::Tensor& bytes);

}  // namespace aploss
