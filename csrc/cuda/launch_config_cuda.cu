// Launch-configuration helpers of the CUDA backend (see cuda_common.cuh).
#include <algorithm>
#include <map>
#include <mutex>
#include <utility>

#include "../aploss/kernels.h"
#include "cuda_common.cuh"

namespace aploss {
namespace gpu {

namespace {

struct DeviceLimits {
  int sm_count;
  int smem_optin;  // sharedMemPerBlockOptin, bytes
};

const DeviceLimits& device_limits(int device) {
  static std::mutex mutex;
  static std::map<int, DeviceLimits> cache;  // node-based: references stay valid
  std::lock_guard<std::mutex> lock(mutex);
  auto it = cache.find(device);
  if (it == cache.end()) {
    DeviceLimits limits{};
    C10_CUDA_CHECK(cudaDeviceGetAttribute(&limits.sm_count, cudaDevAttrMultiProcessorCount, device));
    C10_CUDA_CHECK(cudaDeviceGetAttribute(&limits.smem_optin,
                                          cudaDevAttrMaxSharedMemoryPerBlockOptin, device));
    it = cache.emplace(device, limits).first;
  }
  return it->second;
}

}  // namespace

int sm_count(int device) { return device_limits(device).sm_count; }

size_t max_dynamic_smem(const void* kernel, int device) {
  static std::mutex mutex;
  static std::map<std::pair<const void*, int>, size_t> cache;
  const DeviceLimits& limits = device_limits(device);
  std::lock_guard<std::mutex> lock(mutex);
  const auto key = std::make_pair(kernel, device);
  auto it = cache.find(key);
  if (it == cache.end()) {
    // The attribute is set on the current device: callers hold a CUDAGuard on `device`.
    int current = -1;
    C10_CUDA_CHECK(cudaGetDevice(&current));
    TORCH_INTERNAL_ASSERT(current == device, "aploss: max_dynamic_smem called for device ",
                          device, " while device ", current, " is current");
    cudaFuncAttributes attributes{};
    C10_CUDA_CHECK(cudaFuncGetAttributes(&attributes, kernel));
    const size_t optin = static_cast<size_t>(limits.smem_optin);
    const size_t allowed =
        optin > attributes.sharedSizeBytes ? optin - attributes.sharedSizeBytes : 0;
    C10_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                        static_cast<int>(allowed)));
    it = cache.emplace(key, allowed).first;
  }
  return it->second;
}

int blocks_per_sm(const void* kernel, int block, size_t dynamic_smem) {
  int blocks = 0;
  C10_CUDA_CHECK(
      cudaOccupancyMaxActiveBlocksPerMultiprocessor(&blocks, kernel, block, dynamic_smem));
  return blocks;
}

int64_t grid_size(int device, int per_sm, int64_t n, int64_t min_items_per_block) {
  const int64_t wave = static_cast<int64_t>(sm_count(device)) * std::max(per_sm, 1);
  const int64_t pieces = ceil_div(std::max<int64_t>(n, 1), std::max<int64_t>(min_items_per_block, 1));
  // gridDim.x may be up to 2^31 - 1; a wave is far below that.
  return std::max<int64_t>(1, std::min(wave, pieces));
}

void check_flat_inputs(const at::Tensor& scores, const at::Tensor& labels, const char* what) {
  TORCH_CHECK(on_kernel_device(scores) && on_kernel_device(labels), what,
              ": expected tensors on the kernels' device (CUDA)");
  TORCH_CHECK(scores.device() == labels.device(), what, ": scores on ", scores.device(),
              ", labels on ", labels.device());
  TORCH_CHECK(scores.dim() == 1 && labels.dim() == 1 && scores.numel() == labels.numel(), what,
              ": expected two 1-D views of equal length");
  TORCH_CHECK(scores.is_contiguous() && labels.is_contiguous(), what,
              ": expected contiguous 1-D views");
}

void check_f64_on(const at::Tensor& t, const at::Tensor& like, const char* what) {
  TORCH_CHECK(t.scalar_type() == at::kDouble && t.device() == like.device() && t.is_contiguous(),
              what, ": expected a contiguous float64 tensor on ", like.device(), ", got ",
              t.scalar_type(), " on ", t.device());
}

at::Tensor check_pass2_and_scale(const at::Tensor& scores, const at::Tensor& labels,
                                 const at::Tensor& state, const at::Tensor& grad_output,
                                 const at::Tensor& grad, const char* what) {
  check_flat_inputs(scores, labels, what);
  check_f64_on(state, scores, what);
  TORCH_CHECK(state.dim() == 2 && state.size(0) == kStateRows && state.size(1) >= 2, what,
              ": malformed state");
  TORCH_CHECK(grad.scalar_type() == scores.scalar_type() && grad.device() == scores.device() &&
                  grad.dim() == 1 && grad.numel() == scores.numel() && grad.is_contiguous(),
              what, ": grad must be a contiguous 1-D tensor like scores");
  // A 0-dim float64 scale on this device (a host scalar is moved without a sync).
  at::Tensor scale =
      grad_output.to(scores.device(), at::kDouble, /*non_blocking=*/true).contiguous();
  TORCH_CHECK(scale.numel() == 1, what, ": grad_output must have one element");
  return scale;
}

void check_positives(const at::Tensor& positives, const at::Tensor& scores, const char* what) {
  check_f64_on(positives, scores, what);
  TORCH_CHECK(positives.dim() == 2 && positives.size(0) == 2 && positives.size(1) >= 1, what,
              ": expected (2, P) positives with P >= 1, got ", positives.sizes());
}

}  // namespace gpu
}  // namespace aploss
