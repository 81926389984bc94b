// How the operators hand N-sized inputs to the kernels: as 1-D views in one common
// order, without copies where the layouts allow it.
#pragma once

#include <ATen/ATen.h>

namespace aploss {

// Both inputs can be read in memory order, with no copy, when they are dense and laid
// out alike (contiguous, channels-last, any permutation). Otherwise: one copy each.
inline bool same_dense_layout(const at::Tensor& a, const at::Tensor& b) {
  return a.is_non_overlapping_and_dense() && b.is_non_overlapping_and_dense() &&
         a.strides() == b.strides();
}

// A 1-D view of a dense tensor's storage, in memory order.
inline at::Tensor memory_order_view(const at::Tensor& t) {
  return t.as_strided({t.numel()}, {1}, t.storage_offset());
}

struct FlatInputs {
  at::Tensor scores;   // 1-D, memory order
  at::Tensor labels;   // 1-D, same order
  bool scores_layout;  // true: flat order is scores' own memory order
};

inline FlatInputs flatten(const at::Tensor& scores, const at::Tensor& labels) {
  if (same_dense_layout(scores, labels)) {
    return {memory_order_view(scores), memory_order_view(labels), true};
  }
  return {scores.contiguous().view({-1}), labels.contiguous().view({-1}), false};
}

// A tensor broadcast to scores' shape, materialised as a 1-D view in the flat order of
// `in` (scores' memory order, or row-major after a copy).
inline at::Tensor flatten_like(const at::Tensor& small, const at::Tensor& scores,
                               const FlatInputs& in) {
  if (small.sizes() == scores.sizes()) {  // already full size: a view when laid out alike
    if (in.scores_layout && same_dense_layout(small, scores)) return memory_order_view(small);
    if (!in.scores_layout && small.is_contiguous()) return small.view({-1});
  }
  at::Tensor full = in.scores_layout ? at::empty_like(scores, small.options())
                                     : at::empty(scores.sizes(), small.options());
  full.copy_(small.expand(scores.sizes()));
  return in.scores_layout ? memory_order_view(full) : full.view({-1});
}

// group codes broadcast to scores' shape as one period in the flat order of `in`, when
// they repeat with it: the flat order is row-major and the codes vary over trailing
// dims only (their leading dims are 1 or missing), e.g. one code per class of
// (B, A, C) scores. Entry i's code is then period[i % period.numel()]. Undefined when
// they do not repeat so.
inline at::Tensor periodic_codes(const at::Tensor& codes, const at::Tensor& scores,
                                 const FlatInputs& in) {
  if (in.scores_layout && !scores.is_contiguous()) return {};
  const int64_t lead = scores.dim() - codes.dim();
  bool varying = false;  // past the leading 1s: every dim must match scores'
  for (int64_t d = 0; d < codes.dim(); ++d) {
    const int64_t size = codes.size(d);
    if (!varying && size == 1) continue;
    varying = true;
    if (size != scores.size(lead + d)) return {};
  }
  if (codes.numel() >= scores.numel()) return {};  // full size: one code per entry
  return codes.contiguous().view({-1});
}

// A gradient tensor shaped like scores and its 1-D view in the flat order of `in`.
inline std::pair<at::Tensor, at::Tensor> gradient_like(const at::Tensor& scores,
                                                       const FlatInputs& in) {
  at::Tensor grad =
      in.scores_layout ? at::empty_like(scores) : at::empty(scores.sizes(), scores.options());
  at::Tensor flat = in.scores_layout ? memory_order_view(grad) : grad.view({-1});
  return {grad, flat};
}

}  // namespace aploss
