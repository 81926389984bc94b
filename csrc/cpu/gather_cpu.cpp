// Gather pass on the CPU: validate every label, collect the positives' scores, group
// codes and positions. One read of the labels; scores and codes are read at positives
// only.
#include <ATen/ATen.h>

#include <vector>

#include "../aploss/dispatch.h"
#include "../aploss/errors.h"
#include "../aploss/math.h"
#include "chunks.h"
#include "cpu_kernels.h"

namespace aploss {
namespace cpu {
namespace {

// (3, P) [scores; codes; positions] in memory order. `codes`: one per entry, or `period`
// of them repeating (../aploss/kernels.h); nullptr: code 0.
at::Tensor gather_rows(const at::Tensor& scores, const at::Tensor& labels, const int32_t* codes,
                       int64_t period) {
  const int64_t n = scores.numel();
  const Chunks chunks = split_into_chunks(n, 0);
  std::vector<std::vector<double>> found(chunks.count), found_codes(chunks.count),
      found_positions(chunks.count);
  std::vector<int64_t> bad_label(chunks.count, -1), bad_score(chunks.count, -1);

  APLOSS_DISPATCH_SCORES_AND_LABELS(scores.scalar_type(), labels.scalar_type(),
                                    "aploss_gather_cpu", [&] {
    const scalar_t* s = scores.const_data_ptr<scalar_t>();
    const label_t* y = labels.const_data_ptr<label_t>();
    for_each_chunk(chunks, n, [&](int64_t c, int64_t begin, int64_t end) {
      std::vector<double>& out = found[c];
      for (int64_t i = begin; i < end; ++i) {
        const int cls = classify_label(y[i]);
        if (cls == kPositive) {
          const double v = static_cast<double>(s[i]);
          if (!is_finite_score(v) && bad_score[c] < 0) bad_score[c] = i;
          out.push_back(v);
          found_codes[c].push_back(
              codes != nullptr ? static_cast<double>(codes[period > 0 ? i % period : i]) : 0.0);
          found_positions[c].push_back(static_cast<double>(i));
        } else if (cls == kInvalid && bad_label[c] < 0) {
          bad_label[c] = i;
        }
      }
    });
  });

  const int64_t first_bad_label = first_flagged(bad_label.data(), chunks.count);
  if (first_bad_label >= 0) throw_invalid_label(labels, first_bad_label);
  const int64_t first_bad_score = first_flagged(bad_score.data(), chunks.count);
  if (first_bad_score >= 0) throw_non_finite_score(scores, first_bad_score);

  int64_t num_pos = 0;
  for (const auto& v : found) num_pos += static_cast<int64_t>(v.size());
  at::Tensor out = at::empty({3, num_pos}, scores.options().dtype(at::kDouble));
  double* dst = out.data_ptr<double>();
  for (const auto& v : found) dst = std::copy(v.begin(), v.end(), dst);
  for (const auto& v : found_codes) dst = std::copy(v.begin(), v.end(), dst);
  for (const auto& v : found_positions) dst = std::copy(v.begin(), v.end(), dst);
  return out;
}

}  // namespace

at::Tensor gather(const at::Tensor& scores, const at::Tensor& labels, const at::Tensor& codes) {
  if (!codes.defined()) return gather_rows(scores, labels, nullptr, 0);
  const int64_t period = codes.numel() < scores.numel() ? codes.numel() : 0;
  return gather_rows(scores, labels, codes.const_data_ptr<int32_t>(), period);
}

}  // namespace cpu
}  // namespace aploss
