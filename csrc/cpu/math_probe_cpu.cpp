// A test-only operator exposing math.h's window search, both the plain binary search
// (what the CUDA kernels use, with q in shared memory) and the indexed one (what the CPU
// kernels use), so the CPU test suite checks the GPU's search code too.
#include <ATen/ATen.h>
#include <torch/library.h>

#include <tuple>

#include "../aploss/math.h"
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

}  // namespace

TORCH_LIBRARY_FRAGMENT(aploss, m) {
  m.def("_find_windows(Tensor scores, Tensor positives, float delta, bool indexed)"
        " -> (Tensor, Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(aploss, CPU, m) { m.impl("_find_windows", &find_windows); }

}  // namespace aploss
