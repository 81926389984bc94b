// The window probes (window_probes.h).
#include "window_probes.h"

#include <ATen/ops/empty.h>
#include <ATen/ops/isfinite.h>
#include <c10/util/Exception.h>

#include "aploss/math.h"
#include "cpu/interval_index_cpu.h"
#include "window_index.h"

namespace aploss {
namespace probes {
namespace {

void check_positives(const at::Tensor& positives) {
  TORCH_CHECK(positives.is_cpu(), "positives must be on the CPU");
  TORCH_CHECK(positives.dim() == 2 && positives.size(0) == 2 && positives.size(1) >= 1 &&
                  positives.scalar_type() == at::kDouble,
              "positives: (2, P) float64, P >= 1");
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

}  // namespace

std::tuple<at::Tensor, at::Tensor, at::Tensor> find_windows(const at::Tensor& scores,
                                                            const at::Tensor& positives,
                                                            double delta, bool indexed) {
  TORCH_CHECK(scores.is_cpu() && scores.dim() == 1 && scores.scalar_type() == at::kDouble,
              "scores: (M,) float64 on the CPU");
  check_positives(positives);
  const at::Tensor s = scores.contiguous();
  const at::Tensor pos = positives.contiguous();
  const int64_t num_pos = pos.size(1);
  const double* q = pos.const_data_ptr<double>();
  const StepParams params = make_step_params(delta, q[0], q + num_pos, num_pos);
  const OwnedWindowIndex index(q, num_pos, delta);

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

std::tuple<at::Tensor, at::Tensor> find_intervals(const at::Tensor& scores,
                                                  const at::Tensor& positives, double delta) {
  TORCH_CHECK(scores.is_cpu() && scores.dim() == 1 &&
                  (scores.scalar_type() == at::kFloat || scores.scalar_type() == at::kDouble),
              "scores: (M,) float32 or float64 on the CPU");
  check_positives(positives);
  TORCH_CHECK(at::isfinite(scores).all().item<bool>(), "scores must be finite");
  const at::Tensor s = scores.contiguous();
  const at::Tensor pos = positives.contiguous();
  return scores.scalar_type() == at::kFloat ? find_intervals_of<float>(s, pos, delta)
                                            : find_intervals_of<double>(s, pos, delta);
}

}  // namespace probes
}  // namespace aploss
