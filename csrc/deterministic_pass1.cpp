#include "deterministic_pass1.h"

#include <ATen/ATen.h>
#include <ATen/Context.h>
#include <torch/library.h>

#include <algorithm>

#include "ap_loss.h"
#include "aploss/kernels.h"

namespace aploss {

bool needs_deterministic_pass1(const Kernels& k) {
  return k.pass1_float_atomics && at::globalContext().deterministicAlgorithms();
}

at::Tensor deterministic_pass1(const Kernels& k, const at::Tensor& scores,
                               const at::Tensor& labels, const at::Tensor& codes,
                               const at::Tensor& positives, const at::Tensor& offsets,
                               double delta) {
  // 2^21 entries per chunk: 64 MiB of records.
  constexpr int64_t kChunk = int64_t(1) << 21;
  const int64_t n = scores.numel();
  at::Tensor hist = at::zeros({3, positives.size(1) + 1}, positives.options());
  at::Tensor d1 = hist[0], da = hist[1], db = hist[2];
  for (int64_t begin = 0; begin < n; begin += kChunk) {
    const int64_t m = std::min(kChunk, n - begin);
    const at::Tensor records =
        k.pass1_records(scores.narrow(0, begin, m), labels.narrow(0, begin, m),
                        codes.defined() ? codes.narrow(0, begin, m) : codes, positives, offsets,
                        delta);
    const at::Tensor first = records[0].to(at::kLong);
    const at::Tensor lo = records[1].to(at::kLong);
    const at::Tensor hi = records[2].to(at::kLong);
    const at::Tensor a = records[3];
    const at::Tensor full = (lo > first).to(at::kDouble);
    const at::Tensor linear = (hi > lo).to(at::kDouble);
    d1.index_add_(0, first, full).index_add_(0, lo, -full);
    da.index_add_(0, lo, a).index_add_(0, hi, -a);
    db.index_add_(0, lo, linear).index_add_(0, hi, -linear);
  }
  return hist;
}

namespace {

// Test-only: pass 1's difference arrays from the backend's own kernel (atomics on CUDA)
// or from the deterministic reduction, on 1-D contiguous inputs, so the tests can hold
// the two against each other on any device.
at::Tensor pass1_histograms(const at::Tensor& scores, const at::Tensor& labels,
                            const c10::optional<at::Tensor>& codes, const at::Tensor& positives,
                            const c10::optional<at::Tensor>& offsets, double delta,
                            bool deterministic) {
  TORCH_CHECK(scores.dim() == 1 && scores.is_contiguous() && labels.is_contiguous() &&
                  labels.sizes() == scores.sizes(),
              "_pass1_histograms: 1-D contiguous scores and labels");
  TORCH_CHECK(codes.has_value() == offsets.has_value(), "_pass1_histograms: codes with offsets");
  const Kernels& k = kernels_for(scores);
  const at::Tensor c = codes.has_value() ? codes->contiguous() : at::Tensor();
  const at::Tensor o = offsets.has_value() ? offsets->contiguous() : at::Tensor();
  const at::Tensor pos = positives.contiguous();
  if (deterministic) return deterministic_pass1(k, scores, labels, c, pos, o, delta);
  return c.defined() ? k.grouped_pass1(scores, labels, c, pos, o, delta)
                     : k.sorted_pass1(scores, labels, pos, delta);
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(aploss, m) {
  m.def(
      "_pass1_histograms(Tensor scores, Tensor labels, Tensor? codes, Tensor positives,"
      " Tensor? offsets, float delta, bool deterministic) -> Tensor");
}

TORCH_LIBRARY_IMPL(aploss, CompositeExplicitAutograd, m) {
  m.impl("_pass1_histograms", &pass1_histograms);
}

}  // namespace aploss
