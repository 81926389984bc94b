// A loss is its positive stage: everything else (group codes, gather, rank_positives,
// pass 1, pass 2) is the one pipeline (pipeline.h) that every loss runs. A loss supplies
// only what differs: the inputs it takes, the labels the passes read, one value per
// positive, its stage and the extra output of its stage. Adding one: docs/adding_a_loss.md.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/string_view.h>

#include <optional>

#include "aploss/kernels.h"
#include "stages.h"

namespace aploss {

// What a positive stage reads: the ranked positives, fp(i) from pass 1, and the loss's
// value per sorted positive (undefined for a loss without one).
struct StageInputs {
  const Kernels& k;
  const Positives& pos;
  const at::Tensor& false_positives;  // (P,) float64
  const at::Tensor& values;           // (P,) float64, sorted order, or undefined
  double delta;
  bool interpolate;
  at::ScalarType loss_dtype;
  Method method;
};

// What it returns.
struct StageOutputs {
  at::Tensor loss;            // 0-dim, loss_dtype
  at::Tensor extra;           // 1-D float64: the loss's other output (LossDef::extra)
  at::Tensor state;           // (kStateRows, P+1) float64 for pass 2 (kernels.h)
  at::Tensor positive_grads;  // (P, 2) float64 [position, gradient] (stages.h, pass2)
};

struct LossDef {
  const char* name;  // the Python function's name, in front of its errors
  // The loss on a backend's whole-ranking path (Kernels::ranking_forward), or none: the
  // pipeline's stages evaluate it on every backend.
  std::optional<LossKind> kind;
  bool pairwise;     // whether method 'pairwise' evaluates it
  // The extra output: "" (none: an empty tensor), or what it holds.
  const char* extra;
  // The per-positive values the stage reads, by name ("targets", "regression_losses"), or
  // nullptr; at_most_one: they lie in (0, 1], else >= 0.
  const char* values_name;
  bool values_at_most_one;

  // TypeError / ValueError unless scores, labels and values (undefined: not given) are
  // inputs of this loss.
  void (*check_inputs)(const at::Tensor& scores, const at::Tensor& labels,
                       const at::Tensor& values, double delta);
  // The labels (1 / 0 / -1) the passes read, from the loss's labels input; nullptr: the
  // input itself.
  at::Tensor (*pass_labels)(const at::Tensor& labels);
  // One float64 value per positive, in the order of `positions` (flat positions) and
  // `memory_rank` (each one's rank by position); nullptr: the loss has none.
  at::Tensor (*positive_values)(const at::Tensor& labels, const at::Tensor& values,
                                const at::Tensor& positions, const at::Tensor& memory_rank,
                                const at::Tensor& scores);
  StageOutputs (*stage)(const StageInputs& in);
  // The extra output of a call without positives (options: float64 on the device).
  at::Tensor (*no_positive_extra)(const at::TensorOptions& options);
};

// The loss named `name` (losses.cpp holds the list); ValueError naming the known ones otherwise.
const LossDef& find_loss(c10::string_view name);

}  // namespace aploss
