// Deterministic pass 1's records on the CPU (pass1_record.h). The CPU's own pass 1 is
// already bitwise reproducible; this kernel exists so that the CPU test suite checks the
// record math and the ATen reduction the CUDA backend uses under
// torch.use_deterministic_algorithms(True).
#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include "../aploss/dispatch.h"
#include "../aploss/pass1_record.h"
#include "cpu_kernels.h"

namespace aploss {
namespace cpu {

at::Tensor pass1_records(const at::Tensor& scores, const at::Tensor& labels,
                         const at::Tensor& positives, double delta) {
  const int64_t n = scores.numel();
  const int64_t num_pos = positives.size(1);
  const double* q = positives.const_data_ptr<double>();
  at::Tensor records = at::empty({3, n}, positives.options());
  double* out = records.data_ptr<double>();

  APLOSS_DISPATCH_SCORES_AND_LABELS(scores.scalar_type(), labels.scalar_type(),
                                    "aploss_pass1_records_cpu", [&] {
    const scalar_t* s = scores.const_data_ptr<scalar_t>();
    const label_t* y = labels.const_data_ptr<label_t>();
    at::parallel_for(0, n, 1 << 14, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) {
        const PassOneRecord r =
            pass1_record(y[i], static_cast<double>(s[i]), q, q + num_pos, num_pos, delta);
        out[i] = r.lo;
        out[n + i] = r.hi;
        out[2 * n + i] = r.a;
      }
    });
  });
  return records;
}

}  // namespace cpu
}  // namespace aploss
