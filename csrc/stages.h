// The stages of the two-pass evaluation (docs/algorithm.md), each written once for
// every kind of ranking and every loss (a loss is its positive stage, losses.h). A single
// ranking is the one-group case: without `codes` the stages call the ungrouped kernels,
// with them each entry is searched against its own group's segment of the positives
// (aploss/grouped_intervals.h). The pipeline (pipeline.cpp) strings the stages together;
// aploss_cuda/distributed.py calls them as operators with communication between them.
#pragma once

#include <ATen/core/Tensor.h>

#include <tuple>

namespace aploss {

struct Kernels;

enum class Method { kSorted, kPairwise };

// What codes of one per entry hold for the passes (kernels.h,
// APLOSS_RECORDED_INTERVAL_ENTRIES).
enum class CodesRole {
  kGroups,           // dense group codes
  kRecordIntervals,  // group codes, which pass 1 overwrites with each entry's interval
  kIntervals,        // pass 1's recorded intervals: pass 2 reads them
};

// N-sized inputs as the kernels read them: 1-D, one common order (flat_inputs.h).
struct Entries {
  at::Tensor scores;
  at::Tensor labels;
  at::Tensor codes;  // int32 dense group codes, one per entry or broadcast (kernels.h);
                     // undefined: the single ranking
  int64_t code_repeat = 1;  // broadcast codes: entry i's is codes[(i / repeat) % numel]
  CodesRole role = CodesRole::kGroups;
};

// The positives, sorted by (group, score, position), and where each group's segment lies.
struct Positives {
  at::Tensor positives;       // (2, P) float64: scores q; cluster shifts (math.h)
  at::Tensor offsets;         // (U+1) int64: group u owns columns [offsets[u], offsets[u+1])
  at::Tensor positive_group;  // (P,) int64, non-decreasing
  at::Tensor positions;       // (P,) int64: each one's index in the flat entries
  at::Tensor memory_rank;     // (P,) int64: each one's rank among the positives by position
  bool grouped() const { return offsets.numel() > 2; }
};

// Gather: validates every label and every score that takes part, collects the positives
// (3, P) float64 [score; code; position] in no particular order. The one host sync of a
// call.
at::Tensor gather(const Kernels& k, const Entries& in);

// Sorts the gathered positives by (group, score), ties by position (so that every
// device orders them alike): their cluster shifts and segments.
Positives rank_positives(const at::Tensor& gathered, int64_t num_groups, double delta);

// (2, P) float64: sorted q and each positive's cluster shift (math.h, StepParams).
// Grouped: q sorted within each group, `positive_group` (P,) the groups, sorted.
at::Tensor make_positives(const at::Tensor& sorted_q, double delta,
                          const at::Tensor& positive_group = {});

// Pass 1: fp(i), the sum over the negatives of H(s_j - q_i), for every positive.
// Float atomics (CUDA) give way to a deterministic reduction when torch asks for
// deterministic algorithms.
at::Tensor pass1(const Kernels& k, const Entries& in, const Positives& pos, double delta,
                 Method method);

// Pass 1's (3, P+1) difference arrays (sorted method), from the kernel or from the
// deterministic per-entry records.
at::Tensor pass1_differences(const Kernels& k, const Entries& in, const Positives& pos,
                             double delta, bool deterministic);

// Pass 2: writes grad_output * the error-driven gradient of every entry into `grad`:
// the kernels give every negative its gradient from the state and every other entry 0,
// then the positives' gradients, `positive_grads` (P, 2) float64 [position, gradient]
// from the positive stage, are written at their positions (P scattered writes instead of
// a search per positive).
void pass2(const Kernels& k, const Entries& in, const at::Tensor& state,
           const at::Tensor& offsets, const at::Tensor& positive_grads, double delta,
           const at::Tensor& grad_output, at::Tensor& grad, Method method);

}  // namespace aploss
