// Gather pass on the CPU: validate every label, collect the positives' scores, group
// codes and positions. One read of the labels (in AVX2 lanes where the CPU has them);
// scores and codes are read at positives only.
#include <ATen/ATen.h>

#include <vector>

#include "../aploss/code_layout.h"
#include "../aploss/dispatch.h"
#include "../aploss/errors.h"
#include "../aploss/math.h"
#include "chunks.h"
#include "cpu_kernels.h"
#include "interval_lanes_cpu.h"

namespace aploss {
namespace cpu {
namespace {

// Positives whose scores are read this many positives ahead of use: they lie far apart
// in memory, which the sweep over the labels has not brought into cache.
constexpr int64_t kScoreReadAhead = 16;

// (3, P) [scores; codes; positions] in memory order. `codes`: laid out as
// ../aploss/code_layout.h says; codes.codes null: code 0. Each chunk first finds its
// positives' positions (and its first invalid label), then reads their scores and codes.
at::Tensor gather_rows(const at::Tensor& scores, const at::Tensor& labels,
                       const CodeLayout& codes) {
  const int64_t n = scores.numel();
  const Chunks chunks = split_into_chunks(n, 0);
  std::vector<std::vector<int64_t>> positions(chunks.count);
  std::vector<int64_t> bad_label(chunks.count, -1);
  const bool lanes = cpu_vector_lanes() && cpu_has_avx2();

  APLOSS_DISPATCH_LABELS(labels.scalar_type(), "aploss_gather_cpu", [&] {
    const label_t* y = labels.const_data_ptr<label_t>();
    for_each_chunk(chunks, n, [&](int64_t c, int64_t begin, int64_t end) {
      std::vector<int64_t>& found = positions[c];
      const auto entry = [&](int64_t i) {
        const int cls = classify_label(y[i]);
        if (cls == kPositive) {
          found.push_back(i);
        } else if (cls == kInvalid && bad_label[c] < 0) {
          bad_label[c] = i;
        }
      };
      int64_t i = begin;
#ifdef APLOSS_AVX2_LANES
      // The lanes find the positives and invalid labels of a block; only those entries
      // take the scalar path.
      if (lanes) {
        for (; end - i >= kBlock; i += kBlock) {
          uint64_t positive[kBlock / 64] = {}, invalid[kBlock / 64] = {};
          gather_lanes(y + i, kBlock, positive, invalid);
          for (int64_t w = 0; w < kBlock / 64; ++w) {
            for (uint64_t bits = positive[w] | invalid[w]; bits != 0; bits &= bits - 1) {
              entry(i + 64 * w + __builtin_ctzll(bits));
            }
          }
        }
      }
#endif
      for (; i < end; ++i) entry(i);
    });
  });
  const int64_t first_bad_label = first_flagged(bad_label.data(), chunks.count);
  if (first_bad_label >= 0) throw_invalid_label(labels, first_bad_label);

  std::vector<int64_t> first_column(chunks.count + 1, 0);
  for (int64_t c = 0; c < chunks.count; ++c) {
    first_column[c + 1] = first_column[c] + static_cast<int64_t>(positions[c].size());
  }
  const int64_t num_pos = first_column[chunks.count];
  at::Tensor out = at::empty({3, num_pos}, scores.options().dtype(at::kDouble));
  double* score_row = out.data_ptr<double>();
  double* code_row = score_row + num_pos;
  double* position_row = code_row + num_pos;
  std::vector<int64_t> bad_score(chunks.count, -1);
  APLOSS_DISPATCH_SCORES(scores.scalar_type(), "aploss_gather_scores_cpu", [&] {
    const scalar_t* s = scores.const_data_ptr<scalar_t>();
    at::parallel_for(0, chunks.count, 1, [&](int64_t first, int64_t last) {
      for (int64_t c = first; c < last; ++c) {
        const std::vector<int64_t>& found = positions[c];
        const int64_t count = static_cast<int64_t>(found.size());
        const int64_t column = first_column[c];
        for (int64_t k = 0; k < count; ++k) {
          if (k + kScoreReadAhead < count) {
            const int64_t ahead = found[k + kScoreReadAhead];
            __builtin_prefetch(s + ahead);
            if (codes.codes != nullptr && codes.period == n) {
              __builtin_prefetch(codes.codes + ahead);
            }
          }
          const int64_t i = found[k];
          const double v = static_cast<double>(s[i]);
          if (!is_finite_score(v) && bad_score[c] < 0) bad_score[c] = i;
          score_row[column + k] = v;
          code_row[column + k] = codes.codes != nullptr ? static_cast<double>(codes.at(i)) : 0.0;
          position_row[column + k] = static_cast<double>(i);
        }
      }
    });
  });
  const int64_t first_bad_score = first_flagged(bad_score.data(), chunks.count);
  if (first_bad_score >= 0) throw_non_finite_score(scores, first_bad_score);
  return out;
}

}  // namespace

at::Tensor gather(const at::Tensor& scores, const at::Tensor& labels, const at::Tensor& codes,
                  int64_t code_repeat) {
  if (!codes.defined()) return gather_rows(scores, labels, {nullptr, 1, 1});
  return gather_rows(scores, labels, {codes.const_data_ptr<int32_t>(), codes.numel(), code_repeat});
}

}  // namespace cpu
}  // namespace aploss
