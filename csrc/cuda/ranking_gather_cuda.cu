// The gather of one ranking (ranking_cuda.cuh): one read of the labels, a read of the
// positives' scores only, one write of the entries' classes (2 bits per entry), and the
// positives' sort keys appended to the workspace with a warp-aggregated atomic counter.
// A label that is not a label and a non-finite positive score are flagged (first in
// memory order) for the host, which reads them after the positive stage; the negatives'
// scores are checked by pass 1, which reads them anyway.
#include <ATen/ATen.h>

#include <climits>
#include <type_traits>

#include "../aploss/dispatch.h"
#include "../aploss/math.h"
#include "ranking_cuda.cuh"

namespace aploss {
namespace gpu {
namespace {

constexpr int kGatherBlock = 256;  // a multiple of the warp size (the warp-aligned loop needs it)

// The label rules: the class of an entry and, for targets, the value a positive carries.
struct LabelClasses {
  template <typename T>
  __device__ static int classify(T v) {
    return classify_label(v);
  }
  template <typename T>
  __device__ static double value(T) {
    return 0.0;
  }
};
struct TargetClasses {
  // Rank & Sort's targets: (0, 1] a positive, 0 a negative, < 0 ignored; NaN and > 1 are
  // invalid.
  template <typename T>
  __device__ static int classify(T t) {
    const float v = static_cast<float>(t);
    if (v > 1.0f || v != v) return kInvalid;
    return v > 0.0f ? kPositive : (v == 0.0f ? kNegative : kIgnored);
  }
  template <typename T>
  __device__ static double value(T t) {
    return static_cast<double>(t);
  }
};
// float64 targets compare in float64 (a target of 1 + 1e-12 is invalid).
template <>
__device__ int TargetClasses::classify<double>(double v) {
  if (v > 1.0 || v != v) return kInvalid;
  return v > 0.0 ? kPositive : (v == 0.0 ? kNegative : kIgnored);
}

__global__ void init_meta_kernel(long long* meta) {
  const int k = static_cast<int>(threadIdx.x);
  if (k < kMetaWords) meta[k] = (k == kMetaBadLabel || k == kMetaBadPositive ||
                                 k == kMetaBadNegative || k == kMetaBadValue)
                                    ? LLONG_MAX
                                    : 0;
}

template <typename scalar_t, typename label_t, typename Rule,
          typename K = typename ScoreKey<scalar_t>::type>
__global__ void __launch_bounds__(kGatherBlock)
    gather_kernel(const scalar_t* __restrict__ scores, const label_t* __restrict__ labels,
                  int64_t n, RankingBuffers<K> r, bool position_in_key,
                  unsigned long long* __restrict__ classes) {
  const int lane = static_cast<int>(threadIdx.x & 31);
  // Warp-aligned grid-stride loop: every lane of a warp runs the same iterations, so the
  // full-mask warp intrinsics below are legal; lanes past n hold an ignored entry.
  const int64_t stride = grid_threads();
  long long bad_label = LLONG_MAX;  // this thread's first (= smallest) bad indices
  long long bad_positive = LLONG_MAX;
  for (int64_t base = global_thread_index() - lane; base < n; base += stride) {
    const int64_t i = base + lane;
    int cls = kIgnored;
    label_t label{};
    if (i < n) {
      label = labels[i];
      cls = Rule::classify(label);
      if (cls == kInvalid && bad_label == LLONG_MAX) bad_label = i;
    }
    const unsigned negatives = __ballot_sync(kFullMask, cls == kNegative);
    const unsigned positives = __ballot_sync(kFullMask, cls == kPositive);
    if (lane == 0) {
      classes[base >> 5] = (static_cast<unsigned long long>(positives) << 32) | negatives;
    }
    if (positives == 0u) continue;
    const int leader = __ffs(static_cast<int>(positives)) - 1;
    unsigned long long start = 0;
    if (lane == leader) {
      start = atomicAdd(reinterpret_cast<unsigned long long*>(r.meta + kMetaCount),
                        static_cast<unsigned long long>(__popc(positives)));
    }
    start = __shfl_sync(kFullMask, start, leader);
    if (cls != kPositive) continue;
    // -0.0 + 0.0 is +0.0: equal scores share one sort key.
    const K key = static_cast<K>(scores[i]) + K(0);
    if (!(key == key && key - key == K(0)) && bad_positive == LLONG_MAX) bad_positive = i;
    const unsigned long long slot =
        start + static_cast<unsigned long long>(__popc(positives & ((1u << lane) - 1u)));
    if (slot < static_cast<unsigned long long>(r.capacity)) {
      const unsigned long long bits = sort_bits(key);
      r.raw_key[slot] = position_in_key ? (bits << 32) | static_cast<unsigned long long>(i) : bits;
      r.raw_position[slot] = i;
      r.raw_value[slot] = Rule::value(label);
    }
  }
  if (bad_label != LLONG_MAX) atomicMin(r.meta + kMetaBadLabel, bad_label);
  if (bad_positive != LLONG_MAX) atomicMin(r.meta + kMetaBadPositive, bad_positive);
}

template <typename Rule>
void gather_with(const at::Tensor& scores, const at::Tensor& labels, const at::Tensor& workspace,
                 const at::Tensor& classes, int device, cudaStream_t stream) {
  const int64_t n = scores.numel();
  APLOSS_DISPATCH_SCORES(scores.scalar_type(), "aploss_ranking_gather", [&] {
    using K = typename ScoreKey<scalar_t>::type;
    const RankingBuffers<K> r = ranking_buffers<K>(workspace);
    APLOSS_LAUNCH(init_meta_kernel, 1, 32, 0, stream)(r.meta);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    if (n == 0) return;
    // Float keys carry the position in their low half when it fits (ranking_cuda.cuh).
    const bool position_in_key = sizeof(K) == 4 && n <= (int64_t(1) << 32);
    const auto launch = [&](auto gather, auto* labels_ptr) {
      const int per_sm = blocks_per_sm(reinterpret_cast<const void*>(gather), kGatherBlock, 0);
      const int64_t grid = grid_size(device, per_sm, n, kGatherBlock);
      APLOSS_LAUNCH(gather, static_cast<unsigned>(grid), kGatherBlock, 0, stream)(
          scores.const_data_ptr<scalar_t>(), labels_ptr, n, r, position_in_key,
          reinterpret_cast<unsigned long long*>(classes.data_ptr()));
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    };
    using score_t = scalar_t;
    if constexpr (std::is_same<Rule, TargetClasses>::value) {
      // Targets are floats like scores.
      APLOSS_DISPATCH_SCORES(labels.scalar_type(), "aploss_ranking_gather_targets", [&] {
        launch(gather_kernel<score_t, scalar_t, Rule>, labels.const_data_ptr<scalar_t>());
      });
    } else {
      APLOSS_DISPATCH_LABELS(labels.scalar_type(), "aploss_ranking_gather", [&] {
        launch(gather_kernel<score_t, label_t, Rule>, labels.const_data_ptr<label_t>());
      });
    }
  });
}

}  // namespace

void launch_gather(const at::Tensor& scores, const at::Tensor& labels, LabelRule rule,
                   const at::Tensor& workspace, const at::Tensor& classes) {
  check_flat_inputs(scores, labels, "aploss gather");
  TORCH_CHECK(classes.numel() * 32 >= scores.numel() && classes.is_contiguous() &&
                  classes.element_size() == 8,
              "aploss gather: classes must hold one 64-bit word per 32 entries");
  const c10::cuda::CUDAGuard guard(scores.device());
  const int device = kernel_device_index(scores);
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream(device).stream();
  if (rule == LabelRule::kTargets) {
    gather_with<TargetClasses>(scores, labels, workspace, classes, device, stream);
  } else {
    gather_with<LabelClasses>(scores, labels, workspace, classes, device, stream);
  }
}

}  // namespace gpu
}  // namespace aploss
