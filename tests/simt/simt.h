// The emulated CUDA device of the test suite: enough of CUDA's SIMT model, on the host,
// to run the project's unchanged __global__ kernels (csrc/cuda/*.cu) compiled by g++.
//
// Every CUDA thread is a fiber with its own stack. Blocks run one at a time; within a
// block the threads run until they reach a barrier, a warp collective or their end, and
// only there does another thread run, so a missing barrier shows up as a read of data
// nobody wrote yet. Collectives are checked strictly: every lane named in a mask must
// arrive at the same collective, and every thread of a block at the same barrier;
// anything else is reported with the kernel, block, thread and both sites, never a hang.
// Shared memory is allocated per block at exactly the requested size, filled with a
// NaN/garbage pattern and followed by a canary. Launches are checked against a simulated
// device's limits. What this cannot show: speed, memory ordering between blocks, races
// between threads that no barrier separates, FMA contraction, real register pressure.
//
// Device code includes this through the stand-in <cuda_runtime.h> (tests/simt/include).
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <type_traits>

// ---- CUDA's vocabulary -------------------------------------------------------------------

struct dim3 {
  unsigned x, y, z;
  constexpr dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};

struct CUstream_st;
typedef CUstream_st* cudaStream_t;

enum cudaError_t : int {
  cudaSuccess = 0,
  cudaErrorInvalidValue = 1,
  cudaErrorInvalidConfiguration = 9,
  cudaErrorInvalidDevice = 101,
  cudaErrorLaunchOutOfResources = 701,
  cudaErrorLaunchFailure = 719,
};

enum cudaDeviceAttr : int {
  cudaDevAttrMaxThreadsPerBlock = 1,
  cudaDevAttrMaxSharedMemoryPerBlock = 8,
  cudaDevAttrWarpSize = 10,
  cudaDevAttrMaxRegistersPerBlock = 12,
  cudaDevAttrMultiProcessorCount = 16,
  cudaDevAttrMaxSharedMemoryPerMultiprocessor = 81,
  cudaDevAttrMaxSharedMemoryPerBlockOptin = 97,
};

enum cudaFuncAttribute : int { cudaFuncAttributeMaxDynamicSharedMemorySize = 8 };

struct cudaFuncAttributes {
  size_t sharedSizeBytes;
  size_t constSizeBytes;
  size_t localSizeBytes;
  int maxThreadsPerBlock;
  int numRegs;
  int ptxVersion;
  int binaryVersion;
  int cacheModeCA;
  int maxDynamicSharedSizeBytes;
  int preferredShmemCarveout;
};

cudaError_t cudaGetDevice(int* device);
cudaError_t cudaDeviceGetAttribute(int* value, cudaDeviceAttr attr, int device);
cudaError_t cudaFuncGetAttributes(cudaFuncAttributes* attributes, const void* kernel);
cudaError_t cudaFuncSetAttribute(const void* kernel, cudaFuncAttribute attr, int value);
cudaError_t cudaOccupancyMaxActiveBlocksPerMultiprocessor(int* blocks, const void* kernel,
                                                          int block_size, size_t dynamic_smem);
cudaError_t cudaGetLastError();
cudaError_t cudaPeekAtLastError();
const char* cudaGetErrorString(cudaError_t error);

// Function qualifiers compile to nothing; launch bounds are not checked (see README).
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline __attribute__((always_inline))
#define __launch_bounds__(...)
// Shared memory must be declared with APLOSS_SHARED_ARRAY / APLOSS_EXTERN_SHARED
// (csrc/cuda/cuda_common.cuh), which give every emulated block its own.
#define __shared__ static_assert(false, "declare shared memory with APLOSS_SHARED_ARRAY");

namespace simt {

// A source location: where a thread waits, for the messages.
struct Site {
  const char* file;
  int line;
};
#define SIMT_SITE (::simt::Site{__FILE__, __LINE__})

// The built-in variables of the running thread.
struct Coords {
  dim3 thread_idx, block_idx, block_dim, grid_dim;
};
namespace detail {
extern Coords* running_coords;
}
inline const Coords& coords() { return *detail::running_coords; }

// ---- synchronisation: the only points where another thread runs ---------------------------

enum class Op : int {
  kSyncthreads,
  kSyncthreadsOr,
  kSyncthreadsAnd,
  kSyncthreadsCount,
  kShfl,
  kShflUp,
  kShflDown,
  kShflXor,
  kBallot,
  kAny,
  kAll,
};

namespace detail {
// Waits at a block barrier; returns the barrier's reduction of `predicate`.
int block_barrier(Site site, Op op, int predicate);
// Waits at a warp collective over `mask`; returns this lane's result (64 bits).
uint64_t warp_collective(Site site, Op op, unsigned mask, uint64_t value, int arg, int width);

template <typename T>
uint64_t to_bits(T v) {
  static_assert(std::is_trivially_copyable<T>::value && sizeof(T) <= 8,
                "warp shuffles move types of at most 8 bytes");
  uint64_t bits = 0;
  std::memcpy(&bits, &v, sizeof(T));
  return bits;
}
template <typename T>
T from_bits(uint64_t bits) {
  T v;
  std::memcpy(&v, &bits, sizeof(T));
  return v;
}
}  // namespace detail

inline void syncthreads(Site s) { detail::block_barrier(s, Op::kSyncthreads, 0); }
inline int syncthreads_or(Site s, int p) { return detail::block_barrier(s, Op::kSyncthreadsOr, p != 0); }
inline int syncthreads_and(Site s, int p) { return detail::block_barrier(s, Op::kSyncthreadsAnd, p != 0); }
inline int syncthreads_count(Site s, int p) {
  return detail::block_barrier(s, Op::kSyncthreadsCount, p != 0);
}

template <typename T>
T shfl_sync(Site s, unsigned mask, T v, int src_lane, int width = 32) {
  return detail::from_bits<T>(
      detail::warp_collective(s, Op::kShfl, mask, detail::to_bits(v), src_lane, width));
}
template <typename T>
T shfl_up_sync(Site s, unsigned mask, T v, unsigned delta, int width = 32) {
  return detail::from_bits<T>(detail::warp_collective(s, Op::kShflUp, mask, detail::to_bits(v),
                                                      static_cast<int>(delta), width));
}
template <typename T>
T shfl_down_sync(Site s, unsigned mask, T v, unsigned delta, int width = 32) {
  return detail::from_bits<T>(detail::warp_collective(s, Op::kShflDown, mask, detail::to_bits(v),
                                                      static_cast<int>(delta), width));
}
template <typename T>
T shfl_xor_sync(Site s, unsigned mask, T v, int lane_mask, int width = 32) {
  return detail::from_bits<T>(
      detail::warp_collective(s, Op::kShflXor, mask, detail::to_bits(v), lane_mask, width));
}
inline unsigned ballot_sync(Site s, unsigned mask, int p) {
  return static_cast<unsigned>(detail::warp_collective(s, Op::kBallot, mask, p != 0, 0, 32));
}
inline int any_sync(Site s, unsigned mask, int p) {
  return static_cast<int>(detail::warp_collective(s, Op::kAny, mask, p != 0, 0, 32));
}
inline int all_sync(Site s, unsigned mask, int p) {
  return static_cast<int>(detail::warp_collective(s, Op::kAll, mask, p != 0, 0, 32));
}

// ---- shared memory ---------------------------------------------------------------------------

namespace detail {
// The k-th static shared array a thread declares is the block's k-th allocation.
void* shared_array(Site site, size_t bytes);
void* dynamic_shared(Site site);
}  // namespace detail

template <typename T>
T* shared_array(Site site, size_t count) {
  static_assert(alignof(T) <= 16, "shared arrays are 16-byte aligned");
  return static_cast<T*>(detail::shared_array(site, count * sizeof(T)));
}
template <typename T>
T* dynamic_shared(Site site) {
  return static_cast<T*>(detail::dynamic_shared(site));
}

// ---- launches ---------------------------------------------------------------------------------

namespace detail {
struct LaunchInfo {
  const void* kernel;
  const char* name;
  Site site;
  dim3 grid, block;
  size_t dynamic_smem;
};
// What every emulated thread runs: the kernel with the launch's arguments.
struct Body {
  const void* object;
  void (*call)(const void*);
};
// Runs the whole grid before returning; errors are reported by cudaGetLastError().
void run_grid(const LaunchInfo& info, Body body);
}  // namespace detail

template <typename... Params>
struct Launch {
  void (*kernel)(Params...);
  detail::LaunchInfo info;

  template <typename... Args>
  void operator()(Args&&... args) const {
    static_assert(sizeof...(Args) == sizeof...(Params), "wrong number of kernel arguments");
    const auto call = [&] { kernel(args...); };  // each thread gets its own copies
    using Call = decltype(call);
    detail::run_grid(info, detail::Body{&call, [](const void* c) { (*static_cast<const Call*>(c))(); }});
  }
};

template <typename... Params>
Launch<Params...> launch(void (*kernel)(Params...), const char* name, Site site, dim3 grid,
                         dim3 block, size_t dynamic_smem, cudaStream_t) {
  return {kernel, {reinterpret_cast<const void*>(kernel), name, site, grid, block, dynamic_smem}};
}

// The message of the last launch or runtime error (kept after cudaGetLastError).
const char* error_detail();

}  // namespace simt

// ---- device built-ins ------------------------------------------------------------------------

#define threadIdx (::simt::coords().thread_idx)
#define blockIdx (::simt::coords().block_idx)
#define blockDim (::simt::coords().block_dim)
#define gridDim (::simt::coords().grid_dim)
#define warpSize 32

#define __syncthreads() ::simt::syncthreads(SIMT_SITE)
#define __syncthreads_or(p) ::simt::syncthreads_or(SIMT_SITE, (p))
#define __syncthreads_and(p) ::simt::syncthreads_and(SIMT_SITE, (p))
#define __syncthreads_count(p) ::simt::syncthreads_count(SIMT_SITE, (p))
#define __shfl_sync(...) ::simt::shfl_sync(SIMT_SITE, __VA_ARGS__)
#define __shfl_up_sync(...) ::simt::shfl_up_sync(SIMT_SITE, __VA_ARGS__)
#define __shfl_down_sync(...) ::simt::shfl_down_sync(SIMT_SITE, __VA_ARGS__)
#define __shfl_xor_sync(...) ::simt::shfl_xor_sync(SIMT_SITE, __VA_ARGS__)
#define __ballot_sync(mask, p) ::simt::ballot_sync(SIMT_SITE, (mask), (p))
#define __any_sync(mask, p) ::simt::any_sync(SIMT_SITE, (mask), (p))
#define __all_sync(mask, p) ::simt::all_sync(SIMT_SITE, (mask), (p))

// Atomics: threads switch only at barriers and collectives, so a read-modify-write is
// never interleaved with another thread's.
template <typename T>
inline T simt_atomic_add(T* address, T value) {
  const T old = *address;
  *address = old + value;
  return old;
}
inline double atomicAdd(double* a, double v) { return simt_atomic_add(a, v); }
inline float atomicAdd(float* a, float v) { return simt_atomic_add(a, v); }
inline int atomicAdd(int* a, int v) { return simt_atomic_add(a, v); }
inline unsigned atomicAdd(unsigned* a, unsigned v) { return simt_atomic_add(a, v); }
inline unsigned long long atomicAdd(unsigned long long* a, unsigned long long v) {
  return simt_atomic_add(a, v);
}
template <typename T>
inline T simt_atomic_min(T* address, T value) {
  const T old = *address;
  if (value < old) *address = value;
  return old;
}
template <typename T>
inline T simt_atomic_max(T* address, T value) {
  const T old = *address;
  if (value > old) *address = value;
  return old;
}
inline int atomicMin(int* a, int v) { return simt_atomic_min(a, v); }
inline long long atomicMin(long long* a, long long v) { return simt_atomic_min(a, v); }
inline unsigned long long atomicMin(unsigned long long* a, unsigned long long v) {
  return simt_atomic_min(a, v);
}
inline int atomicMax(int* a, int v) { return simt_atomic_max(a, v); }
inline long long atomicMax(long long* a, long long v) { return simt_atomic_max(a, v); }
inline unsigned long long atomicMax(unsigned long long* a, unsigned long long v) {
  return simt_atomic_max(a, v);
}

inline int __popc(unsigned x) { return __builtin_popcount(x); }
inline int __popcll(unsigned long long x) { return __builtin_popcountll(x); }
inline int __ffs(int x) { return __builtin_ffs(x); }
inline int __ffsll(long long x) { return __builtin_ffsll(x); }
inline int __clz(int x) { return x == 0 ? 32 : __builtin_clz(static_cast<unsigned>(x)); }
