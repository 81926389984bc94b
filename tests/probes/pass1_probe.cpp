// The pass 1 probe (pass1_probe.h): the choice that csrc/stages.cpp's pass1_differences
// makes, given the table and the choice.
#include "pass1_probe.h"

#include <c10/util/Exception.h>

#include <cmath>

#include "aploss/kernels.h"
#include "deterministic_pass1.h"

namespace aploss {
namespace probes {

at::Tensor pass1_differences(const Kernels& k, const at::Tensor& scores, const at::Tensor& labels,
                            const std::optional<at::Tensor>& codes, const at::Tensor& positives,
                            const std::optional<at::Tensor>& offsets, double delta,
                            bool deterministic) {
  // The kernels trust their inputs: the shapes they index by are checked here.
  TORCH_CHECK(scores.dim() == 1 && scores.is_contiguous() && labels.is_contiguous() &&
                  labels.sizes() == scores.sizes(),
              "scores and labels: 1-D, contiguous, of one size");
  TORCH_CHECK(positives.dim() == 2 && positives.size(0) == 2 && positives.size(1) >= 1 &&
                  positives.scalar_type() == at::kDouble && positives.is_contiguous(),
              "positives: (2, P) float64, contiguous, P >= 1");
  TORCH_CHECK(codes.has_value() == offsets.has_value(), "codes go with offsets");
  if (codes.has_value()) {
    TORCH_CHECK(codes->scalar_type() == at::kInt && codes->sizes() == scores.sizes() &&
                    codes->is_contiguous(),
                "codes: int32, contiguous, one per entry");
    TORCH_CHECK(offsets->dim() == 1 && offsets->numel() >= 2 &&
                    offsets->scalar_type() == at::kLong,
                "offsets: (U+1,) int64, U >= 1");
  }
  TORCH_CHECK(std::isfinite(delta) && delta > 0, "delta: finite and positive");
  for (const at::Tensor& t : {labels, positives, codes.value_or(labels), offsets.value_or(labels)}) {
    TORCH_CHECK(t.device() == scores.device(), "every tensor on the scores' device");
  }
  if (deterministic) {
    TORCH_CHECK(!codes.has_value(), "the deterministic records cover one ranking only");
    return deterministic_pass1(k, scores, labels, positives, delta);
  }
  return codes.has_value()
             ? k.grouped_pass1(scores, labels, *codes, 1, positives, *offsets, delta)
             : k.sorted_pass1(scores, labels, positives, delta);
}

}  // namespace probes
}  // namespace aploss
