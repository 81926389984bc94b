#include "deterministic_pass1.h"

#include <ATen/ATen.h>
#include <ATen/Context.h>

#include <algorithm>

#include "aploss/kernels.h"

namespace aploss {

bool needs_deterministic_pass1(const Kernels& k) {
  return k.pass1_float_atomics && at::globalContext().deterministicAlgorithms();
}

at::Tensor deterministic_pass1(const Kernels& k, const at::Tensor& scores,
                               const at::Tensor& labels, const at::Tensor& positives,
                               double delta) {
  // 2^21 entries per chunk: 48 MiB of records.
  constexpr int64_t kChunk = int64_t(1) << 21;
  const int64_t n = scores.numel();
  at::Tensor hist = at::zeros({3, positives.size(1) + 1}, positives.options());
  at::Tensor d1 = hist[0], da = hist[1], db = hist[2];
  for (int64_t begin = 0; begin < n; begin += kChunk) {
    const int64_t m = std::min(kChunk, n - begin);
    const at::Tensor records = k.pass1_records(scores.narrow(0, begin, m),
                                               labels.narrow(0, begin, m), positives, delta);
    const at::Tensor lo = records[0].to(at::kLong);
    const at::Tensor hi = records[1].to(at::kLong);
    const at::Tensor a = records[2];
    // d1 adds `full` at index 0 and subtracts it at lo: the first half is one sum.
    const at::Tensor full = (lo > 0).to(at::kDouble);
    const at::Tensor linear = (hi > lo).to(at::kDouble);
    d1.narrow(0, 0, 1).add_(full.sum());
    d1.index_add_(0, lo, -full);
    da.index_add_(0, lo, a).index_add_(0, hi, -a);
    db.index_add_(0, lo, linear).index_add_(0, hi, -linear);
  }
  return hist;
}

}  // namespace aploss
