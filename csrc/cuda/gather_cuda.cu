// Gather pass on the GPU: validate every label, collect the positives' scores, group codes
// (0 for a single ranking) and positions into the three rows of the output.
//
// One read of the labels and of the scores of the non-ignored entries (every score that
// takes part is checked for NaN/Inf here, so that pass 1, which runs after the sync,
// never has to report an error), and exactly ONE device-to-host copy per call: a
// 5-entry int64 buffer {P, first invalid label, first non-finite positive, first
// non-finite negative, lowest negative group code} copied with a single .cpu(). That copy
// is the one host sync of the forward (it is where P is learned). Errors are reported as
// on the CPU: a negative group id first, then an invalid label, then a non-finite
// positive, then a non-finite negative, each the first in memory order. Group codes are
// read as code_layout.h lays them out (broadcast ids: no N-sized codes).
//
// Positives are appended to a buffer of a guessed capacity with a warp-aggregated
// atomic counter (one global atomic per warp and iteration with a positive). If the
// count exceeds the capacity, the kernel is run once more into a buffer of the exact
// size: P is deterministic, so that rerun needs no second copy; it only costs a second
// read of the labels, in the rare case P > capacity. The order of the positives in the
// buffer is not deterministic; the driver sorts them (by position where the order of
// ties matters), so q is.
#include <ATen/ATen.h>

#include <algorithm>
#include <climits>
#include <limits>

#include "../aploss/code_layout.h"
#include "../aploss/dispatch.h"
#include "../aploss/errors.h"
#include "../aploss/math.h"
#include "cuda_common.cuh"

namespace aploss {
namespace gpu {
namespace {

constexpr int kGatherBlock = 256;  // a multiple of the warp size (the warp-aligned loop needs it)
constexpr int64_t kMinCapacity = int64_t(1) << 16;

enum Meta : int {
  kMetaCount = 0,
  kMetaBadLabel = 1,
  kMetaBadPositive = 2,
  kMetaBadNegative = 3,
  kMetaLowestCode = 4,  // the lowest group code when one is negative (else 0)
  kMetaSize = 5,
};

__global__ void init_meta_kernel(long long* meta) {
  meta[kMetaCount] = 0;
  meta[kMetaBadLabel] = LLONG_MAX;
  meta[kMetaBadPositive] = LLONG_MAX;
  meta[kMetaBadNegative] = LLONG_MAX;
  meta[kMetaLowestCode] = 0;
}

template <typename scalar_t, typename label_t>
__global__ void __launch_bounds__(kGatherBlock)
    gather_kernel(const scalar_t* __restrict__ scores, const label_t* __restrict__ labels,
                  CodeLayout codes, int64_t n, double* __restrict__ out,
                  int64_t capacity, long long* meta) {
  const int lane = static_cast<int>(threadIdx.x & 31);
  // Warp-aligned grid-stride loop: every lane of a warp runs the same iterations, so the
  // full-mask warp intrinsics below are legal; lanes past n just hold no positive.
  const int64_t stride = grid_threads();
  long long bad_label = LLONG_MAX;  // this thread's first (= smallest) bad indices
  long long bad_positive = LLONG_MAX;
  long long bad_negative = LLONG_MAX;
  long long lowest_code = 0;
  for (int64_t base = global_thread_index() - lane; base < n; base += stride) {
    const int64_t i = base + lane;
    bool positive = false;
    double v = 0.0;
    if (i < n) {
      // A negative code stands for a negative group id (../group_codes.cpp): checked here,
      // where the call reads the device anyway.
      const int32_t code = codes.codes != nullptr ? codes.at(i) : 0;
      lowest_code = code < lowest_code ? code : lowest_code;
      const int cls = classify_label(labels[i]);
      if (cls == kPositive) {
        positive = true;
        v = static_cast<double>(scores[i]);
        if (!is_finite_score(v) && bad_positive == LLONG_MAX) bad_positive = i;
      } else if (cls == kNegative) {
        // Validated here, in the pass that ends in the call's one host sync, so that a
        // non-finite negative raises ValueError as on the CPU (pass 1 comes after the sync).
        if (!is_finite_score(static_cast<double>(scores[i])) && bad_negative == LLONG_MAX) {
          bad_negative = i;
        }
      } else if (cls == kInvalid && bad_label == LLONG_MAX) {
        bad_label = i;
      }
    }
    const unsigned mask = __ballot_sync(kFullMask, positive);
    if (mask != 0u) {
      const int leader = __ffs(static_cast<int>(mask)) - 1;
      unsigned long long start = 0;
      if (lane == leader) {
        start = atomicAdd(reinterpret_cast<unsigned long long*>(meta + kMetaCount),
                          static_cast<unsigned long long>(__popc(mask)));
      }
      start = __shfl_sync(kFullMask, start, leader);
      if (positive) {
        const unsigned long long slot =
            start + static_cast<unsigned long long>(__popc(mask & ((1u << lane) - 1u)));
        if (slot < static_cast<unsigned long long>(capacity)) {
          out[slot] = v;
          out[capacity + slot] = codes.codes != nullptr ? static_cast<double>(codes.at(i)) : 0.0;
          out[2 * capacity + slot] = static_cast<double>(i);
        }
      }
    }
  }
  if (bad_label != LLONG_MAX) atomicMin(meta + kMetaBadLabel, bad_label);
  if (bad_positive != LLONG_MAX) atomicMin(meta + kMetaBadPositive, bad_positive);
  if (bad_negative != LLONG_MAX) atomicMin(meta + kMetaBadNegative, bad_negative);
  if (lowest_code < 0) atomicMin(meta + kMetaLowestCode, lowest_code);
}

// One run of the gather into `out` ((3, capacity)); meta is reset first.
void launch_gather(const at::Tensor& scores, const at::Tensor& labels, const CodeLayout& codes,
                   at::Tensor& out, at::Tensor& meta, int device, cudaStream_t stream) {
  const int64_t n = scores.numel();
  long long* meta_ptr = reinterpret_cast<long long*>(meta.data_ptr<int64_t>());
  APLOSS_LAUNCH(init_meta_kernel, 1, 1, 0, stream)(meta_ptr);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  APLOSS_DISPATCH_SCORES_AND_LABELS(scores.scalar_type(), labels.scalar_type(),
                                    "aploss_gather_cuda", [&] {
    const auto kernel = gather_kernel<scalar_t, label_t>;
    const int per_sm = blocks_per_sm(reinterpret_cast<const void*>(kernel), kGatherBlock, 0);
    const int64_t grid = grid_size(device, per_sm, n, kGatherBlock);
    APLOSS_LAUNCH(kernel, static_cast<unsigned>(grid), kGatherBlock, 0, stream)(
        scores.const_data_ptr<scalar_t>(), labels.const_data_ptr<label_t>(), codes, n,
        out.data_ptr<double>(), out.size(1), meta_ptr);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

// (3, P) [scores; codes; positions].
at::Tensor gather_rows(const at::Tensor& scores, const at::Tensor& labels,
                       const CodeLayout& codes) {
  check_flat_inputs(scores, labels, "aploss gather");
  const c10::cuda::CUDAGuard guard(scores.device());
  const int device = kernel_device_index(scores);
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream(device).stream();
  const auto f64 = scores.options().dtype(at::kDouble);
  const int64_t n = scores.numel();
  const int64_t rows = 3;
  if (n == 0) return at::empty({rows, 0}, f64);

  // Capacity guess: detection batches have far fewer positives than 1 in 256 entries.
  const int64_t capacity = std::min(n, std::max(kMinCapacity, n / 256));
  at::Tensor out = at::empty({rows, capacity}, f64);
  at::Tensor meta = at::empty({kMetaSize}, scores.options().dtype(at::kLong));
  launch_gather(scores, labels, codes, out, meta, device, stream);

  // The single device-to-host copy of the call (synchronises with the stream).
  const at::Tensor host = meta.cpu();
  const int64_t* h = host.const_data_ptr<int64_t>();
  const int64_t num_pos = h[kMetaCount];
  if (h[kMetaLowestCode] < 0) {
    // Codes below int32's range are clamped to its lowest value.
    const bool clamped = h[kMetaLowestCode] == std::numeric_limits<int32_t>::min();
    TORCH_CHECK_VALUE(false, "group_ids must be >= 0, found ", h[kMetaLowestCode],
                      clamped ? " or less" : "");
  }
  if (h[kMetaBadLabel] != LLONG_MAX) throw_invalid_label(labels, h[kMetaBadLabel]);
  if (h[kMetaBadPositive] != LLONG_MAX) throw_non_finite_score(scores, h[kMetaBadPositive]);
  if (h[kMetaBadNegative] != LLONG_MAX) throw_non_finite_score(scores, h[kMetaBadNegative]);
  TORCH_INTERNAL_ASSERT(num_pos >= 0 && num_pos <= n, "aploss: bad positive count ", num_pos);

  if (num_pos > capacity) {
    // Rare: more positives than the guess. Redo into the exact size; the count cannot
    // change, so no second copy is needed.
    out = at::empty({rows, num_pos}, f64);
    launch_gather(scores, labels, codes, out, meta, device, stream);
  } else {
    out = out.narrow(1, 0, num_pos);
  }
  return out;
}

}  // namespace

at::Tensor gather(const at::Tensor& scores, const at::Tensor& labels, const at::Tensor& codes,
                  int64_t code_repeat) {
  if (!codes.defined()) return gather_rows(scores, labels, CodeLayout{nullptr, 1, 1});
  TORCH_CHECK(on_kernel_device(codes) && codes.scalar_type() == at::kInt && codes.is_contiguous() &&
                  codes.numel() >= 1 && code_repeat >= 1 && codes.device() == scores.device(),
              "aploss gather: codes must be contiguous int32 on the scores' device, broadcast "
              "over them (kernels.h)");
  return gather_rows(scores, labels,
                     CodeLayout{codes.const_data_ptr<int32_t>(), codes.numel(), code_repeat});
}

}  // namespace gpu
}  // namespace aploss
