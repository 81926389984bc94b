// Test-only operators exposing the window searches: math.h's plain binary search (what the
// CUDA kernels use, with q in shared memory) and its bucket-indexed one (the grouped CPU
// kernels), and intervals.h's threshold count (the ungrouped CPU kernels), so the CPU
// test suite checks each against the definition.
#include <ATen/ATen.h>
#include <torch/library.h>

#include <tuple>

#include "../aploss/math.h"
#include "interval_index_cpu.h"
#include "window_index_cpu.h"

namespace aploss {
namespace {

// scores: (M,) float64; positives: (2, P) float64 (sorted q, cluster shifts), P >= 1.
// Returns lo, hi (int64) and a (float64) of every score's window.
std::tuple<at::Tensor, at::Tensor, at::Tensor> find_windows(const at::Tensor& scores,
                                                            const at::Tensor& positives,
                                                            double delta, bool indexed) {
  TORCH_CHECK(scores.dim() == 1 && scores.scalar_type() == at::kDouble, "scores: (M,) float64");
  TORCH_CHECK(positives.dim() == 2 && positives.size(0) == 2 && positives.size(1) >= 1 &&
                  positives.scalar_type() == at::kDouble,
              "positives: (2, P) float64, P >= 1");
  const at::Tensor s = scores.contiguous();
  const at::Tensor pos = positives.contiguous();
  const int64_t num_pos = pos.size(1);
  const double* q = pos.const_data_ptr<double>();
  const StepParams params = make_step_params(delta, q[0], q + num_pos, num_pos);
  const cpu::OwnedWindowIndex index(q, num_pos, delta);

  const int64_t m = s.numel();
  at::Tensor lo = at::empty({m}, s.options().dtype(at::kLong));
  at::Tensor hi = at::empty({m}, s.options().dtype(at::kLong));
  at::Tensor a = at::empty({m}, s.options());
  const double* sp = s.const_data_ptr<double>();
  for (int64_t i = 0; i < m; ++i) {
    const Window w = indexed ? find_window(index.get(), sp[i], params)
                             : find_window(q, num_pos, sp[i], params);
    lo.data_ptr<int64_t>()[i] = w.lo;
    hi.data_ptr<int64_t>()[i] = w.hi;
    a.data_ptr<double>()[i] = w.a;
  }
  return {lo, hi, a};
}

template <typename K>
std::tuple<at::Tensor, at::Tensor> find_intervals_of(const at::Tensor& s, const at::Tensor& pos,
                                                     double delta) {
  const int64_t num_pos = pos.size(1);
  const double* q = pos.const_data_ptr<double>();
  const cpu::OwnedIntervalIndex<K> index(q, q + num_pos, num_pos, delta);
  const int64_t m = s.numel();
  at::Tensor lo = at::empty({m}, s.options().dtype(at::kLong));
  at::Tensor hi = at::empty({m}, s.options().dtype(at::kLong));
  const K* sp = s.const_data_ptr<K>();
  for (int64_t i = 0; i < m; ++i) {
    const int64_t at = interval_of(index.get(), sp[i]);
    lo.data_ptr<int64_t>()[i] = index.lo(at);
    hi.data_ptr<int64_t>()[i] = index.hi(at);
  }
  return {lo, hi};
}

// scores: (M,) finite float32 or float64 keys; positives as above. Returns lo and hi
// (int64) of every score's interval.
std::tuple<at::Tensor, at::Tensor> find_intervals(const at::Tensor& scores,
                                                  const at::Tensor& positives, double delta) {
  TORCH_CHECK(scores.dim() == 1 && (scores.scalar_type() == at::kFloat ||
                                    scores.scalar_type() == at::kDouble),
              "scores: (M,) float32 or float64");
  TORCH_CHECK(positives.dim() == 2 && positives.size(0) == 2 && positives.size(1) >= 1 &&
                  positives.scalar_type() == at::kDouble,
              "positives: (2, P) float64, P >= 1");
  TORCH_CHECK(at::isfinite(scores).all().item<bool>(), "scores must be finite");
  const at::Tensor s = scores.contiguous();
  const at::Tensor pos = positives.contiguous();
  return scores.scalar_type() == at::kFloat ? find_intervals_of<float>(s, pos, delta)
                                            : find_intervals_of<double>(s, pos, delta);
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(aploss, m) {
  m.def("_find_windows(Tensor scores, Tensor positives, float delta, bool indexed)"
        " -> (Tensor, Tensor, Tensor)");
  m.def("_find_intervals(Tensor scores, Tensor positives, float delta) -> (Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(aploss, CPU, m) {
  m.impl("_find_windows", &find_windows);
  m.impl("_find_intervals", &find_intervals);
}

}  // namespace aploss
