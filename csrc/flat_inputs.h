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

// Group codes broadcast to scores' shape, as code_layout.h reads them without an N-sized
// tensor: entry i's code is codes[(i / repeat) % codes.numel()]. That holds when the flat
// order is row-major and the codes vary over one run of dims: leading dims 1 (or
// missing), then dims equal to scores', then dims 1 (e.g. one code per class of
// (B, A, C) scores, or one per image: (B, 1, 1)). Undefined codes when they are full
// size or vary otherwise.
struct BroadcastCodes {
  at::Tensor codes;    // 1-D, contiguous
  int64_t repeat = 1;
};

inline BroadcastCodes broadcast_codes(const at::Tensor& codes, const at::Tensor& scores,
                                      const FlatInputs& in) {
  if (in.scores_layout && !scores.is_contiguous()) return {};
  if (codes.numel() >= scores.numel()) return {};  // full size: one code per entry
  const int64_t lead = scores.dim() - codes.dim();
  int64_t d = 0, repeat = 1;
  while (d < codes.dim() && codes.size(d) == 1) ++d;  // leading 1s
  for (; d < codes.dim() && codes.size(d) != 1; ++d) {  // the varying run
    if (codes.size(d) != scores.size(lead + d)) return {};
  }
  for (; d < codes.dim(); ++d) {  // trailing 1s: each code repeats over these dims
    if (codes.size(d) != 1) return {};
    repeat *= scores.size(lead + d);
  }
  if (repeat == 0) return {};
  return {codes.contiguous().view({-1}), repeat};
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
