// Pairwise (direct O(P * N)) evaluation on the CPU: an independent check of the
// sorted kernels. No P x N matrix: each chunk of entries keeps a P-sized partial.
#include <ATen/ATen.h>

#include <vector>

#include "../aploss/dispatch.h"
#include "../aploss/errors.h"
#include "../aploss/kernels.h"
#include "../aploss/math.h"
#include "chunks.h"
#include "cpu_kernels.h"

namespace aploss {
namespace cpu {

at::Tensor pairwise_pass1(const at::Tensor& scores, const at::Tensor& labels,
                          const at::Tensor& positives, double delta) {
  const int64_t n = scores.numel();
  const int64_t num_pos = positives.size(1);
  const double* qp = positives.const_data_ptr<double>();
  const StepParams params = make_step_params(delta, qp[0], qp + num_pos, num_pos);
  const Chunks chunks = split_into_chunks(n, num_pos);
  at::Tensor partials = at::zeros({chunks.count, num_pos}, positives.options());
  double* acc = partials.data_ptr<double>();
  std::vector<int64_t> bad_score(chunks.count, -1);

  APLOSS_DISPATCH_SCORES_AND_LABELS(scores.scalar_type(), labels.scalar_type(),
                                    "aploss_pairwise_pass1_cpu", [&] {
    const scalar_t* s = scores.const_data_ptr<scalar_t>();
    const label_t* y = labels.const_data_ptr<label_t>();
    for_each_chunk(chunks, n, [&](int64_t c, int64_t begin, int64_t end) {
      double* fp = acc + c * num_pos;
      int64_t bad = -1;
      for (int64_t j = begin; j < end; ++j) {
        if (classify_label(y[j]) != kNegative) continue;
        const double v = static_cast<double>(s[j]);
        if (!is_finite_score(v)) {
          if (bad < 0) bad = j;
          continue;
        }
        for (int64_t i = 0; i < num_pos; ++i) fp[i] += step(v - qp[i], params);
      }
      bad_score[c] = bad;
    });
  });

  const int64_t first_bad = first_flagged(bad_score.data(), chunks.count);
  if (first_bad >= 0) throw_non_finite_score(scores, first_bad);
  return chunks.count == 1 ? partials[0] : partials.sum(0);
}

void pairwise_pass2(const at::Tensor& scores, const at::Tensor& labels, const at::Tensor& state,
                    double delta, const at::Tensor& grad_output, at::Tensor& grad) {
  const int64_t n = scores.numel();
  const StateView st = view_state(state);
  const int64_t num_pos = st.num_pos;
  const double* qp = st.q;
  const double* weight = st.w;
  const StepParams params = make_step_params(delta, qp[0], st.shift, num_pos);
  const double scale = grad_output.item<double>();

  APLOSS_DISPATCH_SCORES_AND_LABELS(scores.scalar_type(), labels.scalar_type(),
                                    "aploss_pairwise_pass2_cpu", [&] {
    const scalar_t* s = scores.const_data_ptr<scalar_t>();
    const label_t* y = labels.const_data_ptr<label_t>();
    scalar_t* g = grad.data_ptr<scalar_t>();
    at::parallel_for(0, n, 256, [&](int64_t begin, int64_t end) {
      for (int64_t j = begin; j < end; ++j) {
        const int cls = classify_label(y[j]);
        double value = 0.0;
        if (cls == kNegative) {
          const double v = static_cast<double>(s[j]);
          for (int64_t i = 0; i < num_pos; ++i) value += step(v - qp[i], params) * weight[i];
        }
        g[j] = static_cast<scalar_t>(scale * value);
      }
    });
  });
}

}  // namespace cpu
}  // namespace aploss
