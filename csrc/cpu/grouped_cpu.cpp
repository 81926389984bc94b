// Grouped rankings on the CPU: sorted pass 1 and pass 2 with each entry ranked against
// its own group's segment of the positives (../aploss/segments.h). The structure is
// that of sorted_cpu.cpp (private per-chunk accumulators merged in chunk order, so the
// result is bitwise reproducible), with one window index per segment.
#include <ATen/ATen.h>

#include <vector>

#include "../aploss/dispatch.h"
#include "../aploss/errors.h"
#include "../aploss/kernels.h"
#include "../aploss/segments.h"
#include "chunks.h"
#include "cpu_kernels.h"
#include "window_index_cpu.h"

namespace aploss {
namespace cpu {
namespace {

// As in sorted_cpu.cpp: the bucket-table entry an entry's window search will read is
// pulled in this many entries ahead (the tables are larger than L1 and read at random).
constexpr int64_t kPrefetchDistance = 16;

template <typename scalar_t>
void prefetch(const OwnedSegmentedWindowIndex& index, int32_t code, scalar_t score) {
  const SegmentSearch& group = index.group(code);
  if (!group.seg.empty()) __builtin_prefetch(window_entry(group.index, static_cast<double>(score)));
}

}  // namespace

at::Tensor grouped_pass1(const at::Tensor& scores, const at::Tensor& labels,
                         const at::Tensor& codes, const at::Tensor& positives,
                         const at::Tensor& offsets, double delta) {
  static constexpr int64_t kSlot = 4;  // {d1, da, db, pad} per index, as in sorted_cpu.cpp
  const int64_t n = scores.numel();
  const int64_t num_pos = positives.size(1);
  const int64_t width = num_pos + 1;
  const int64_t num_groups = offsets.numel() - 1;
  const double* qp = positives.const_data_ptr<double>();
  const double* shift = qp + num_pos;
  const int64_t* off = offsets.const_data_ptr<int64_t>();
  const int32_t* g = codes.const_data_ptr<int32_t>();
  const OwnedSegmentedWindowIndex index(qp, shift, off, num_groups, delta);
  const Chunks chunks = split_into_chunks(n, kSlot * width);
  at::Tensor partials = at::zeros({chunks.count, width, kSlot}, positives.options());
  double* acc = partials.data_ptr<double>();
  std::vector<int64_t> bad_score(chunks.count, -1);

  APLOSS_DISPATCH_SCORES_AND_LABELS(scores.scalar_type(), labels.scalar_type(),
                                    "aploss_grouped_pass1_cpu", [&] {
    const scalar_t* s = scores.const_data_ptr<scalar_t>();
    const label_t* y = labels.const_data_ptr<label_t>();
    for_each_chunk(chunks, n, [&](int64_t c, int64_t begin, int64_t end) {
      double* slots = acc + c * width * kSlot;
      const auto add = [slots](int array, int64_t at, double v) { slots[at * kSlot + array] += v; };
      int64_t bad = -1;
      for (int64_t i = begin; i < end; ++i) {
        if (i + kPrefetchDistance < end) prefetch(index, g[i + kPrefetchDistance], s[i + kPrefetchDistance]);
        if (classify_label(y[i]) != kNegative) continue;
        const double v = static_cast<double>(s[i]);
        if (!is_finite_score(v)) {  // checked before the segment: every group is validated
          if (bad < 0) bad = i;
          continue;
        }
        const SegmentSearch& group = index.group(g[i]);
        if (group.seg.empty()) continue;  // a group without positives ranks nothing
        if (is_pruned(v, group.params)) continue;
        accumulate_segment_window(find_window(group.index, v, group.params), group.seg, add);
      }
      bad_score[c] = bad;
    });
  });

  const int64_t first_bad = first_flagged(bad_score.data(), chunks.count);
  if (first_bad >= 0) throw_non_finite_score(scores, first_bad);
  const at::Tensor merged = chunks.count == 1 ? partials[0] : partials.sum(0);
  return merged.narrow(1, 0, 3).t().contiguous();
}

void grouped_pass2(const at::Tensor& scores, const at::Tensor& labels, const at::Tensor& codes,
                   const at::Tensor& state, const at::Tensor& offsets, double delta,
                   const at::Tensor& grad_output, at::Tensor& grad) {
  const int64_t n = scores.numel();
  const StateView st = view_state(state);
  const int64_t num_groups = offsets.numel() - 1;
  const int64_t* off = offsets.const_data_ptr<int64_t>();
  const int32_t* gc = codes.const_data_ptr<int32_t>();
  const double scale = grad_output.item<double>();
  const OwnedSegmentedWindowIndex index(st.q, st.shift, off, num_groups, delta);

  APLOSS_DISPATCH_SCORES_AND_LABELS(scores.scalar_type(), labels.scalar_type(),
                                    "aploss_grouped_pass2_cpu", [&] {
    const scalar_t* s = scores.const_data_ptr<scalar_t>();
    const label_t* y = labels.const_data_ptr<label_t>();
    scalar_t* g = grad.data_ptr<scalar_t>();
    at::parallel_for(0, n, 1 << 14, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) {
        if (i + kPrefetchDistance < end) prefetch(index, gc[i + kPrefetchDistance], s[i + kPrefetchDistance]);
        const int cls = classify_label(y[i]);
        double value = 0.0;
        if (cls == kNegative || cls == kPositive) {
          const SegmentSearch& group = index.group(gc[i]);
          const double v = static_cast<double>(s[i]);
          if (group.seg.empty()) {
            // a group without positives ranks nothing
          } else if (cls == kPositive) {
            value = segment_positive_gradient(st.q, group.seg, st.pos_grad, v);
          } else if (!is_pruned(v, group.params)) {
            value = segment_window_gradient(find_window(group.index, v, group.params), group.seg,
                                            st.prefix_w, st.prefix_q, group.params);
          }
        }
        g[i] = static_cast<scalar_t>(scale * value);
      }
    });
  });
}

}  // namespace cpu
}  // namespace aploss
