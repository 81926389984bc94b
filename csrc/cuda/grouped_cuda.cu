// Grouped rankings on the GPU: pass 1 and pass 2 over the grouped interval index
// (../aploss/grouped_intervals.h), built on the device (grouped_index_cuda.cuh). Each entry
// reads its group code as code_layout.h lays them out (no N-sized code tensor for ids
// broadcast over the scores), finds its interval through its group's frame, and then
// works as one ranking's entry does:
//
//   pass 1   per interval, the count of its negatives and the sum of their offsets from
//            its left end in fixed point, as integers (sorted_pass1_cuda.cu: the same in
//            every run); then each column of the (3, P+1) float64 difference arrays gathers
//            what the intervals add there (accumulate_interval), in a fixed order: the same
//            in every run, without atomics
//   pass 2   each negative's gradient from its interval's piece (interval_gradient with
//            W at its segment's first positive), in the key type
//
// A non-finite negative (rejected by the gather before pass 1 runs) is flagged by pass 1
// and turns d1[0] into NaN, a second line of defence.
#include <ATen/ATen.h>
#include <ATen/Context.h>

#include <math_constants.h>

#include <algorithm>

#include "../aploss/code_layout.h"
#include "../aploss/dispatch.h"
#include "../aploss/kernels.h"
#include "grouped_index_cuda.cuh"
#include "interval_sums_cuda.cuh"
#include "positive_stage_cuda.cuh"

namespace aploss {
namespace gpu {
namespace {

constexpr int kPass1Block = 1024;
constexpr int kPass2Block = 256;
constexpr int kGatherBlock = 256;

template <typename scalar_t, typename label_t, typename K = typename ScoreKey<scalar_t>::type>
__global__ void __launch_bounds__(kPass1Block)
    grouped_pass1_kernel(const scalar_t* __restrict__ scores, const label_t* __restrict__ labels,
                         CodeLayout codes, int64_t n, GroupedBuffers<K> g, K inv_delta,
                         bool in_shared) {
  APLOSS_EXTERN_SHARED(unsigned long long, smem);
  const BlockIntervalSums sums(smem, g.size.intervals, in_shared, g.sums);
  const GroupedIntervalIndex<K> index = g.index();
  bool non_finite = false;
  const int64_t stride = grid_threads();
  for (int64_t i = global_thread_index(); i < n; i += stride) {
    if (classify_label(labels[i]) != kNegative) continue;
    const K key = static_cast<K>(scores[i]);
    if (!(key == key && key - key == K(0))) {
      non_finite = true;
      continue;
    }
    const IntervalIndex<K> frame =
        frame_index(index, in_range_code(codes.at(i), index.num_groups));
    // Below its group's first threshold a key's window is empty: it counts nothing, and
    // would otherwise add to that group's first interval, with every other such negative
    // of the group (in a trained network, almost all of them) on one address.
    if (!(key >= frame.origin)) continue;
    const int64_t m = interval_of(frame, key);
    if (m == 0) continue;  // no group: counts nothing
    sums.add(m, fixed_offset(
                    offset_in_interval(key, interval_anchor(g.thresholds[m - 1]), inv_delta)));
  }
  if (non_finite) g.meta[kGroupedNonFinite] = 1;
  sums.flush();
}

// The first interval m in [1, intervals) with of[m] >= k (of: monotone over the intervals,
// which run group by group, each group's by threshold).
__device__ __forceinline__ int64_t first_interval(const int32_t* of, int64_t intervals,
                                                  int64_t k) {
  int64_t lo = 1, count = intervals - 1;
  while (count > 0) {
    const int64_t half = count / 2;
    if (of[lo + half] < k) {
      lo += half + 1;
      count -= half + 1;
    } else {
      count = half;
    }
  }
  return lo;
}

// The sum of interval m's window offsets a = (s - shift) / (2 delta) + 1/2 (math.h): each
// fixed-point offset is (s - left) / (2 delta).
template <typename K>
__device__ __forceinline__ double interval_sum_a(const GroupedBuffers<K>& g, int64_t m,
                                                 double count, double inv_2delta) {
  const double left = static_cast<double>(interval_anchor(g.thresholds[m - 1]));
  return count * (scaled_difference(left, g.shift[m], inv_2delta) + 0.5) +
         fixed_sum(g.sums[m], FixedPoint<K>::kBits);
}

// The difference arrays (3, P+1) from the intervals' negatives, one warp per column k:
// what accumulate_interval adds at k, gathered from the runs of intervals whose window
// starts (lo), ends (hi) or whose segment starts (begin) at k, each summed by the warp's
// lanes in a fixed order: the same sums in every run, without atomics.
template <typename K>
__global__ void __launch_bounds__(kGatherBlock)
    gather_differences_kernel(GroupedBuffers<K> g, double delta, double* __restrict__ out) {
  const int64_t width = g.size.num_pos + 1;
  const int64_t intervals = g.meta[kGroupedIntervals];
  const double inv_2delta = 0.5 / delta;
  const int lane = static_cast<int>(threadIdx.x & 31);
  const int64_t warps = grid_threads() >> 5;
  for (int64_t k = global_thread_index() >> 5; k < width; k += warps) {
    double d1 = 0.0, da = 0.0, db = 0.0;
    // Windows that start at k: +a and +1 inside, -1 in the segment's full part.
    const int64_t lo_end = first_interval(g.lo, intervals, k + 1);
    for (int64_t m = first_interval(g.lo, intervals, k) + lane; m < lo_end; m += 32) {
      const double count = static_cast<double>(g.sums[m].count);
      if (count == 0.0) continue;
      if (g.hi[m] > g.lo[m]) {
        da += interval_sum_a(g, m, count, inv_2delta);
        db += count;
      }
      if (g.lo[m] > g.begin[m]) d1 -= count;
    }
    // Windows that end at k.
    const int64_t hi_end = first_interval(g.hi, intervals, k + 1);
    for (int64_t m = first_interval(g.hi, intervals, k) + lane; m < hi_end; m += 32) {
      const double count = static_cast<double>(g.sums[m].count);
      if (count == 0.0 || g.hi[m] <= g.lo[m]) continue;
      da -= interval_sum_a(g, m, count, inv_2delta);
      db -= count;
    }
    // Segments that start at k: their negatives above a window's full part.
    const int64_t begin_end = first_interval(g.begin, intervals, k + 1);
    for (int64_t m = first_interval(g.begin, intervals, k) + lane; m < begin_end; m += 32) {
      if (g.lo[m] > g.begin[m]) d1 += static_cast<double>(g.sums[m].count);
    }
    d1 = warp_sum(d1);
    da = warp_sum(da);
    db = warp_sum(db);
    if (lane == 0) {
      if (k == 0 && g.meta[kGroupedNonFinite] != 0) d1 = CUDART_NAN;
      out[kD1 * width + k] = d1;
      out[kDA * width + k] = da;
      out[kDB * width + k] = db;
    }
  }
}

template <typename scalar_t, typename label_t, typename K = typename ScoreKey<scalar_t>::type>
__global__ void __launch_bounds__(kPass2Block)
    grouped_pass2_kernel(const scalar_t* __restrict__ scores, const label_t* __restrict__ labels,
                         CodeLayout codes, int64_t n, GroupedBuffers<K> g, bool in_shared,
                         scalar_t* __restrict__ grad) {
  APLOSS_EXTERN_SHARED(unsigned long long, smem);  // in_shared: every interval's piece
  const IntervalGradient<K>* piece = g.pieces;
  if (in_shared) {
    IntervalGradient<K>* staged = reinterpret_cast<IntervalGradient<K>*>(smem);
    const int64_t intervals = g.meta[kGroupedIntervals];
    for (int64_t m = threadIdx.x; m < intervals; m += blockDim.x) staged[m] = g.pieces[m];
    __syncthreads();
    piece = staged;
  }
  const GroupedIntervalIndex<K> index = g.index();
  const int64_t stride = grid_threads();
  for (int64_t i = global_thread_index(); i < n; i += stride) {
    scalar_t value = scalar_t(0);
    if (classify_label(labels[i]) == kNegative) {
      const K key = static_cast<K>(scores[i]);
      const double v = static_cast<double>(key);
      // Not finite: never after a forward (it rejects such scores); -inf is below every
      // window, anything else has no gradient.
      if (is_finite_score(v)) {
        const int64_t m =
            grouped_interval_of(index, in_range_code(codes.at(i), index.num_groups), key);
        value = static_cast<scalar_t>(gradient_in_interval(piece[m], key));
      } else {
        value = static_cast<scalar_t>(v < 0 ? 0.0 : v - v);
      }
    }
    grad[i] = value;
  }
}

CodeLayout check_groups(const at::Tensor& codes, int64_t code_repeat, const at::Tensor& offsets,
                        const at::Tensor& scores, const char* what) {
  TORCH_CHECK(codes.scalar_type() == at::kInt && codes.device() == scores.device() &&
                  codes.is_contiguous() && codes.numel() >= 1 && code_repeat >= 1 &&
                  (scores.numel() == 0 || codes.numel() * code_repeat <= scores.numel() ||
                   codes.numel() == scores.numel()),
              what, ": codes must be contiguous int32 on the scores' device, broadcast over "
              "them (kernels.h)");
  TORCH_CHECK(offsets.scalar_type() == at::kLong && offsets.device() == scores.device() &&
                  offsets.is_contiguous() && offsets.dim() == 1 && offsets.numel() >= 1,
              what, ": offsets must be a contiguous 1-D int64 tensor on ", scores.device());
  return {codes.const_data_ptr<int32_t>(), codes.numel(), code_repeat};
}

at::ScalarType key_dtype_of(const at::Tensor& scores) {
  return scores.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
}

// Shared bytes for `bytes` wanted by `kernel` at `block` threads, or 0 when they do not fit.
size_t shared_bytes(const void* kernel, int device, int block, int64_t bytes) {
  if (bytes > static_cast<int64_t>(max_dynamic_smem(kernel, device))) return 0;
  return blocks_per_sm(kernel, block, static_cast<size_t>(bytes)) > 0 ? static_cast<size_t>(bytes)
                                                                      : 0;
}

}  // namespace

at::Tensor grouped_pass1(const at::Tensor& scores, const at::Tensor& labels,
                         const at::Tensor& codes, int64_t code_repeat, const at::Tensor& positives,
                         const at::Tensor& offsets, double delta) {
  check_flat_inputs(scores, labels, "aploss grouped_pass1");
  check_positives(positives, scores, "aploss grouped_pass1");
  const CodeLayout layout =
      check_groups(codes, code_repeat, offsets, scores, "aploss grouped_pass1");
  const c10::cuda::CUDAGuard guard(scores.device());
  const int device = kernel_device_index(scores);
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream(device).stream();

  const int64_t n = scores.numel();
  const int64_t num_pos = positives.size(1);
  const int64_t num_groups = offsets.numel() - 1;
  if (n == 0) return at::zeros({3, num_pos + 1}, positives.options());
  at::Tensor out = at::empty({3, num_pos + 1}, positives.options());
  const at::ScalarType key_dtype = key_dtype_of(scores);
  const at::Tensor workspace = grouped_workspace(positives.options(), num_pos, num_groups,
                                                 at::elementSize(key_dtype));
  const double* qp = positives.const_data_ptr<double>();
  const GroupedPositives pos{qp, qp + num_pos, offsets.const_data_ptr<int64_t>()};
  APLOSS_DISPATCH_SCORES_AND_LABELS(scores.scalar_type(), labels.scalar_type(),
                                    "aploss_grouped_pass1_cuda", [&] {
    using K = typename ScoreKey<scalar_t>::type;
    const GroupedBuffers<K> g = grouped_buffers<K>(workspace, num_pos, num_groups);
    GroupedExtras extras;
    extras.pass1_sums = true;
    build_grouped_index<K>(g, pos, delta, extras, device, stream);

    const auto pass1 = grouped_pass1_kernel<scalar_t, label_t>;
    const size_t smem = shared_bytes(reinterpret_cast<const void*>(pass1), device, kPass1Block,
                                     g.size.intervals * kSharedIntervalBytes);
    const int per_sm = blocks_per_sm(reinterpret_cast<const void*>(pass1), kPass1Block, smem);
    // Enough entries per block that its flush (one per interval it saw) stays small.
    const int64_t grid = grid_size(device, per_sm, n, smem > 0 ? int64_t(1) << 15 : kPass1Block);
    APLOSS_LAUNCH(pass1, static_cast<unsigned>(grid), kPass1Block, smem, stream)(
        scores.const_data_ptr<scalar_t>(), labels.const_data_ptr<label_t>(), layout, n, g,
        static_cast<K>(1.0 / delta), smem > 0);
    C10_CUDA_KERNEL_LAUNCH_CHECK();

    const auto gather = gather_differences_kernel<K>;
    const int gather_per_sm =
        blocks_per_sm(reinterpret_cast<const void*>(gather), kGatherBlock, 0);
    const int64_t gather_grid =
        grid_size(device, gather_per_sm, 32 * (num_pos + 1), kGatherBlock);
    APLOSS_LAUNCH(gather, static_cast<unsigned>(gather_grid), kGatherBlock, 0,
                  stream)(g, delta, out.data_ptr<double>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return out;
}

void grouped_pass2(const at::Tensor& scores, const at::Tensor& labels, const at::Tensor& codes,
                   int64_t code_repeat, const at::Tensor& state, const at::Tensor& offsets,
                   double delta, const at::Tensor& grad_output, at::Tensor& grad) {
  const at::Tensor scale =
      check_pass2_and_scale(scores, labels, state, grad_output, grad, "aploss grouped_pass2");
  const CodeLayout layout =
      check_groups(codes, code_repeat, offsets, scores, "aploss grouped_pass2");
  const c10::cuda::CUDAGuard guard(scores.device());
  const int device = kernel_device_index(scores);
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream(device).stream();

  const int64_t n = scores.numel();
  const int64_t num_pos = state.size(1) - 1;
  if (n == 0) return;
  if (num_pos == 0) {  // no positive: no negative has a window
    grad.zero_();
    return;
  }
  const int64_t num_groups = offsets.numel() - 1;
  const at::ScalarType key_dtype = key_dtype_of(scores);
  const at::Tensor workspace = grouped_workspace(state.options(), num_pos, num_groups,
                                                 at::elementSize(key_dtype));
  const int64_t width = num_pos + 1;
  const double* st = state.const_data_ptr<double>();
  const GroupedPositives pos{st + kRowQ * width, st + kRowShift * width,
                             offsets.const_data_ptr<int64_t>()};
  APLOSS_DISPATCH_SCORES_AND_LABELS(scores.scalar_type(), labels.scalar_type(),
                                    "aploss_grouped_pass2_cuda", [&] {
    using K = typename ScoreKey<scalar_t>::type;
    const GroupedBuffers<K> g = grouped_buffers<K>(workspace, num_pos, num_groups);
    GroupedExtras extras;
    extras.prefix_w = st + kRowPrefixW * width;
    extras.prefix_q = st + kRowPrefixQ * width;
    extras.grad_output = scale.const_data_ptr<double>();
    build_grouped_index<K>(g, pos, delta, extras, device, stream);

    const auto pass2 = grouped_pass2_kernel<scalar_t, label_t>;
    const size_t smem =
        shared_bytes(reinterpret_cast<const void*>(pass2), device, kPass2Block,
                     g.size.intervals * static_cast<int64_t>(sizeof(IntervalGradient<K>)));
    const int per_sm = blocks_per_sm(reinterpret_cast<const void*>(pass2), kPass2Block, smem);
    const int64_t grid = grid_size(device, per_sm, n,
                                   smem > 0 ? std::max<int64_t>(kPass2Block, g.size.intervals)
                                            : kPass2Block);
    APLOSS_LAUNCH(pass2, static_cast<unsigned>(grid), kPass2Block, smem, stream)(
        scores.const_data_ptr<scalar_t>(), labels.const_data_ptr<label_t>(), layout, n, g,
        smem > 0, grad.data_ptr<scalar_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

}  // namespace gpu
}  // namespace aploss
