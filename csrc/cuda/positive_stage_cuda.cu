// The positive stage on the GPU, one block (ranking_cuda.cuh): from pass 1's interval sums
// (or fp(i) given, for a ranking across processes) through the loss's stage
// (../aploss/positive_stages.h, on the block's threads) to pass 2's pieces. float64 here
// is P-sized work only.
#include <ATen/ATen.h>

#include <climits>

#include "../aploss/dispatch.h"
#include "../aploss/window_sums.h"
#include "positive_stage_cuda.cuh"

namespace aploss {
namespace gpu {
namespace {

// Where each stage writes, sized for the workspace's capacity.
template <typename loss_t>
struct StageOut {
  loss_t* loss;             // 0-dim
  double* parts;            // Rank & Sort: ranking, sorting
  double* positive_grads;   // (C, 2): [position, gradient]
  double* loc_weights;      // aLRP: (C,) in the positives' memory order
  long long* offsets;       // [0, P]
};

// aLRP's regression losses, in the positives' memory order, into r.value (sorted order);
// an invalid one (negative, not finite, or past the end) is flagged for the host.
struct RegressionLosses {
  const void* data;
  int dtype;  // 0 float32, 1 float64, 2 float16, 3 bfloat16
  int64_t length;
};

template <typename T>
__device__ __forceinline__ double read_value(const void* base, int64_t k) {
  return static_cast<double>(static_cast<const T*>(base)[k]);
}

template <typename K>
__device__ void read_regression_losses(const CudaBlock& b, const RankingBuffers<K>& r,
                                       int64_t num_pos, RegressionLosses losses) {
  long long bad = LLONG_MAX;
  b.for_each(num_pos, [&](int64_t i) {
    const int64_t k = r.memory_rank[i];
    double v = 0.0;
    if (k < losses.length) {
      switch (losses.dtype) {
        case 0: v = read_value<float>(losses.data, k); break;
        case 1: v = read_value<double>(losses.data, k); break;
        case 2: v = read_value<c10::Half>(losses.data, k); break;
        default: v = read_value<c10::BFloat16>(losses.data, k); break;
      }
    }
    if (k >= losses.length || !(v >= 0.0 && v - v == 0.0)) {
      if (k < bad) bad = k;
      v = 0.0;
    }
    r.value[i] = v;
  });
  if (bad != LLONG_MAX) atomicMin(r.meta + kMetaBadValue, bad);
}

// One block: the loss's stage between fp(i) (from pass 1's sums, or `given_fp`) and pass
// 2's pieces; no ranking (no positive, an input error, or more positives than the
// workspace holds) writes a zero loss and offsets [0, 0].
template <LossKind kind, typename scalar_t, typename K = typename ScoreKey<scalar_t>::type>
__global__ void __launch_bounds__(kStageBlock)
    positive_stage_kernel(RankingBuffers<K> r, double delta, bool interpolate,
                          const double* __restrict__ given_fp, RegressionLosses losses,
                          StageOut<scalar_t> out) {
  APLOSS_SHARED_ARRAY(long long, ints, kScanScratch);
  APLOSS_SHARED_ARRAY(double, reals, kScanScratch);
  constexpr int kKeyScratchRow = kStageRows - kKeyScratchRows;
  static_assert(kKeyScratchRow >= 9, "the stage's own rows come first");
  const CudaBlock b{ints, reals, stage_row(r, kKeyScratchRow), r.capacity + 1};
  const bool ranked = r.meta[kMetaRanked] != 0;
  const int64_t num_pos = r.meta[kMetaCount];
  if (threadIdx.x == 0) {
    out.offsets[0] = 0;
    out.offsets[1] = ranked ? num_pos : 0;
    if (!ranked) {
      *out.loss = scalar_t(0);
      if (out.parts != nullptr) out.parts[0] = out.parts[1] = 0.0;
    }
  }
  if (!ranked) return;  // uniform over the block

  double* const fp = stage_row(r, 2);
  if (given_fp != nullptr) {
    b.for_each(num_pos, [fp, given_fp](int64_t i) { fp[i] = given_fp[i]; });
  } else {
    false_positives(b, r, num_pos, delta, fp);
  }
  // Each positive's window among the positives: its interval's (its score is a key).
  const IntervalIndex<K> ix = device_index(r, num_pos);
  b.for_each(num_pos, [&r, &ix](int64_t j) {
    const int64_t m = interval_of(ix, static_cast<K>(r.q[j]));
    r.window_lo[j] = r.lo_of[m];
    r.window_hi[j] = r.hi_of[m];
  });
  if constexpr (kind == LossKind::kALRP) read_regression_losses(b, r, num_pos, losses);
  const StageArrays a{num_pos, delta, r.q, r.shift, r.position, r.window_lo, r.window_hi,
                      r.value, r.memory_rank, fp,
                      {stage_row(r, 0), stage_row(r, 1), stage_row(r, 3), stage_row(r, 4),
                       stage_row(r, 5), stage_row(r, 6), stage_row(r, 7), stage_row(r, 8)},
                      r.w, out.positive_grads, out.loc_weights};
  StageLosses losses_out;
  if constexpr (kind == LossKind::kAP) {
    losses_out = ap_stage(b, a, interpolate);
  } else if constexpr (kind == LossKind::kRankSort) {
    losses_out = rank_sort_stage(b, a);
  } else {
    losses_out = alrp_stage(b, a);
  }
  if (threadIdx.x == 0) {
    *out.loss = static_cast<scalar_t>(losses_out.loss);
    if (out.parts != nullptr) {
      out.parts[0] = losses_out.parts[0];
      out.parts[1] = losses_out.parts[1];
    }
  }
  interval_pieces(b, r, num_pos, delta);
}

template <typename scalar_t>
StageOut<scalar_t> stage_out(const StageTensors& t) {
  return {t.loss.data_ptr<scalar_t>(), t.parts.defined() ? t.parts.data_ptr<double>() : nullptr,
          t.positive_grads.data_ptr<double>(),
          t.loc_weights.defined() ? t.loc_weights.data_ptr<double>() : nullptr,
          reinterpret_cast<long long*>(t.offsets.data_ptr<int64_t>())};
}

int dtype_code(at::ScalarType t) {
  switch (t) {
    case at::kFloat: return 0;
    case at::kDouble: return 1;
    case at::kHalf: return 2;
    case at::kBFloat16: return 3;
    default: TORCH_CHECK_TYPE(false, "regression_losses must be a floating dtype, got ", t);
  }
}

}  // namespace

void launch_positive_stage(const RankingInputs& in, const at::Tensor& workspace,
                           const at::Tensor& given_fp, const StageTensors& t) {
  const c10::cuda::CUDAGuard guard(workspace.device());
  const int device = kernel_device_index(workspace);
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream(device).stream();
  const double* fp = given_fp.defined() ? given_fp.const_data_ptr<double>() : nullptr;
  RegressionLosses losses{nullptr, 0, 0};
  if (in.loss == LossKind::kALRP) {
    losses = {in.regression_losses.const_data_ptr(),
              dtype_code(in.regression_losses.scalar_type()), in.regression_losses.numel()};
  }
  APLOSS_DISPATCH_SCORES(t.loss.scalar_type(), "aploss_positive_stage", [&] {
    using K = typename ScoreKey<scalar_t>::type;
    const RankingBuffers<K> r = ranking_buffers<K>(workspace);
    const StageOut<scalar_t> out = stage_out<scalar_t>(t);
    switch (in.loss) {
      case LossKind::kAP: {
        const auto ap_stage = positive_stage_kernel<LossKind::kAP, scalar_t>;
        APLOSS_LAUNCH(ap_stage, 1, kStageBlock, 0, stream)(r, in.delta, in.interpolate, fp,
                                                          losses, out);
        break;
      }
      case LossKind::kRankSort: {
        const auto rank_sort_stage = positive_stage_kernel<LossKind::kRankSort, scalar_t>;
        APLOSS_LAUNCH(rank_sort_stage, 1, kStageBlock, 0, stream)(r, in.delta, false, fp,
                                                                 losses, out);
        break;
      }
      case LossKind::kALRP: {
        const auto alrp_stage = positive_stage_kernel<LossKind::kALRP, scalar_t>;
        APLOSS_LAUNCH(alrp_stage, 1, kStageBlock, 0, stream)(r, in.delta, false, fp, losses,
                                                            out);
        break;
      }
    }
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

}  // namespace gpu
}  // namespace aploss
