// Shared pieces of the CUDA backend: the host entry points of the kernel table
// (../aploss/kernels.h is the contract), launch-configuration helpers, small device
// reductions, and the few macros that let the emulated device of the tests (tests/simt,
// APLOSS_SIMT) compile these sources with a host compiler.
//
// Conventions of every entry point:
//   * c10::cuda::CUDAGuard on the inputs' device, launches on the current stream;
//   * every launch through APLOSS_LAUNCH, C10_CUDA_KERNEL_LAUNCH_CHECK() after it,
//     C10_CUDA_CHECK on runtime calls;
//   * int64_t indexing everywhere (N >= 2^31 is supported), grid-stride loops;
//   * no cudaDeviceSynchronize; the only device-to-host copy of a call is the one in
//     gather (which is where P is learned).
//
// This header deliberately avoids ATen/cuda/CUDAContext.h (it pulls in cusparse.h).
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "../aploss/kernels.h"

namespace aploss {
namespace gpu {

// ---- where the kernels run ---------------------------------------------------------------

// On a GPU: CUDA tensors. On the emulated device (tests/simt), the same kernels run on
// the host, so their "device" tensors live in CPU memory.
inline bool on_kernel_device(const at::Tensor& t) {
#if defined(APLOSS_SIMT)
  return t.is_cpu();
#else
  return t.is_cuda();
#endif
}

// The CUDA device index of a tensor on the kernel device (on the emulated device: the
// simulated GPU the tests selected).
inline int kernel_device_index(const at::Tensor& t) {
#if defined(APLOSS_SIMT)
  (void)t;
  int device = 0;
  cudaGetDevice(&device);
  return device;
#else
  return t.get_device();
#endif
}

// Every launch: `APLOSS_LAUNCH(kernel, grid, block, smem, stream)(args...)`. The
// emulated device runs the grid on the host, checking the launch as the GPU would.
#if defined(APLOSS_SIMT)
#define APLOSS_LAUNCH(kernel, grid, block, smem, stream) \
  ::simt::launch(kernel, #kernel, SIMT_SITE, grid, block, smem, stream)
#else
#define APLOSS_LAUNCH(kernel, grid, block, smem, stream) kernel<<<grid, block, smem, stream>>>
#endif

// Shared memory, declared so that the emulated device can give every block its own,
// exactly sized and filled with garbage: `APLOSS_SHARED_ARRAY(double, tile, 256);` and
// `APLOSS_EXTERN_SHARED(double, smem);` (the launch's dynamic shared memory).
#if defined(APLOSS_SIMT)
#define APLOSS_SHARED_ARRAY(type, name, count) \
  type* const name = ::simt::shared_array<type>(SIMT_SITE, count)
#define APLOSS_EXTERN_SHARED(type, name) type* const name = ::simt::dynamic_shared<type>(SIMT_SITE)
#else
#define APLOSS_SHARED_ARRAY(type, name, count) __shared__ type name[count]
#define APLOSS_EXTERN_SHARED(type, name) extern __shared__ type name[]
#endif

// ---- host entry points (signatures and contract: ../aploss/kernels.h) -------------------

APLOSS_KERNEL_ENTRIES(APLOSS_DECLARE_KERNEL)
APLOSS_RANKING_BACKWARD_ENTRIES(APLOSS_DECLARE_KERNEL)

// ---- launch configuration (launch_config_cuda.cu) ----------------------------------------

// Number of SMs of `device` (cached per device).
int sm_count(int device);

// The largest dynamic shared memory a launch of `kernel` may request on `device`:
// sharedMemPerBlockOptin minus the kernel's static shared memory. The first call per
// (kernel, device) also opts the kernel in to that size with cudaFuncSetAttribute, so
// every later launch of up to that many bytes is legal. Thread-safe.
size_t max_dynamic_smem(const void* kernel, int device);

// Resident blocks per SM of `kernel` at this block size and dynamic shared memory
// (cudaOccupancyMaxActiveBlocksPerMultiprocessor; 0 when it cannot launch at all).
int blocks_per_sm(const void* kernel, int block, size_t dynamic_smem);

// Grid size of a grid-stride kernel: one full wave of resident blocks (`per_sm` per SM),
// but no more blocks than there are `min_items_per_block`-sized pieces of n work items.
int64_t grid_size(int device, int per_sm, int64_t n, int64_t min_items_per_block);

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Checks shared by the entry points: 1-D contiguous views on one CUDA device.
void check_flat_inputs(const at::Tensor& scores, const at::Tensor& labels, const char* what);
void check_f64_on(const at::Tensor& t, const at::Tensor& like, const char* what);
// Checks of a pass-2 entry point; returns grad_output as a float64 scalar on the device.
at::Tensor check_pass2_and_scale(const at::Tensor& scores, const at::Tensor& labels,
                                 const at::Tensor& state, const at::Tensor& grad_output,
                                 const at::Tensor& grad, const char* what);
// `positives` of kernels.h: (2, P) float64, P >= 1, contiguous, on scores' device.
void check_positives(const at::Tensor& positives, const at::Tensor& scores, const char* what);

// ---- device helpers ---------------------------------------------------------------------

#if defined(__CUDACC__) || defined(APLOSS_SIMT)

constexpr unsigned kFullMask = 0xffffffffu;

template <typename T>
__device__ __forceinline__ T warp_sum(T v) {
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_down_sync(kFullMask, v, offset);
  return v;  // the full sum is in lane 0
}

template <typename T>
__device__ __forceinline__ T warp_max(T v) {
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1) {
    const T other = __shfl_xor_sync(kFullMask, v, offset);
    v = other > v ? other : v;
  }
  return v;  // in every lane
}

// Flat index of this thread in a 1-D grid, and the grid's total thread count, in 64 bits.
__device__ __forceinline__ int64_t global_thread_index() {
  return static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
}
__device__ __forceinline__ int64_t grid_threads() {
  return static_cast<int64_t>(gridDim.x) * blockDim.x;
}

#endif  // __CUDACC__ || APLOSS_SIMT

}  // namespace gpu
}  // namespace aploss
