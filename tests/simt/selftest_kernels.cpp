// Small kernels that hold the emulated device to CUDA's rules: collectives compute what
// the hardware computes, and every misuse the project's kernels could make is reported.
// tests/test_simt.py runs each by name (module.cpp).
#include "selftest_kernels.h"

#include <cmath>
#include <map>
#include <sstream>
#include <stdexcept>

#include "runtime.h"

namespace simt_selftest {
namespace {

constexpr unsigned kFull = 0xffffffffu;

// Launches and turns the emulator's launch error into an exception.
template <typename... Params, typename... Args>
void run(void (*kernel)(Params...), const char* name, dim3 grid, dim3 block, size_t smem,
         Args... args) {
  ::simt::launch(kernel, name, SIMT_SITE, grid, block, smem, nullptr)(args...);
  const cudaError_t error = cudaGetLastError();
  if (error != cudaSuccess) throw std::runtime_error(::simt::error_detail());
}

// ---- collectives compute what the hardware computes ---------------------------------------------

constexpr int kOutputs = 13;

__global__ void collectives_kernel(double* out) {
  const int t = static_cast<int>(threadIdx.x);
  const int lane = t & 31;
  double* o = out + (static_cast<int64_t>(blockIdx.x) * blockDim.x + t) * kOutputs;
  const double v = 100.0 * blockIdx.x + t;
  o[0] = __ballot_sync(kFull, t % 3 == 0);
  o[1] = __any_sync(kFull, t == 5);
  o[2] = __all_sync(kFull, t < 1000);
  o[3] = __shfl_sync(kFull, v, 5);
  o[4] = __shfl_down_sync(kFull, v, 1);
  o[5] = __shfl_up_sync(kFull, v, 2);
  o[6] = __shfl_xor_sync(kFull, v, 1);
  o[7] = __shfl_sync(kFull, v, 3, 8);  // lane 3 of each group of 8
  double sum = lane;
  for (int offset = 16; offset > 0; offset >>= 1) sum += __shfl_down_sync(kFull, sum, offset);
  o[8] = sum;
  o[9] = __syncthreads_count(t % 2);
  o[10] = __syncthreads_or(t == 7);
  o[11] = __syncthreads_and(t != 7);
  // A partial mask: the even lanes only.
  o[12] = (lane % 2 == 0) ? __shfl_sync(0x55555555u, v, 2) : -1.0;
}

std::vector<double> collectives() {
  const int blocks = 2, threads = 64;
  std::vector<double> out(static_cast<size_t>(blocks * threads * kOutputs), -7.0);
  run(collectives_kernel, "collectives_kernel", dim3(blocks), dim3(threads), 0, out.data());
  for (int b = 0; b < blocks; ++b) {
    for (int t = 0; t < threads; ++t) {
      const int lane = t % 32, warp = t / 32;
      const double v = 100.0 * b + t;
      const auto value_of = [&](int l) { return 100.0 * b + warp * 32 + l; };
      unsigned ballot = 0;
      for (int l = 0; l < 32; ++l) ballot |= ((warp * 32 + l) % 3 == 0 ? 1u : 0u) << l;
      const double expected[kOutputs] = {
          static_cast<double>(ballot),
          warp == 0 ? 1.0 : 0.0,
          1.0,
          value_of(5),
          lane + 1 < 32 ? value_of(lane + 1) : v,
          lane >= 2 ? value_of(lane - 2) : v,
          value_of(lane ^ 1),
          value_of(lane / 8 * 8 + 3),
          31.0 * 32 / 2,
          threads / 2.0,
          1.0,
          0.0,
          lane % 2 == 0 ? value_of(2) : -1.0,
      };
      for (int k = 0; k < kOutputs; ++k) {
        const double got = out[static_cast<size_t>((b * threads + t) * kOutputs + k)];
        if (k == 8 && lane != 0) continue;  // a reduction's sum is defined in lane 0 only
        if (got != expected[k]) {
          std::ostringstream m;
          m << "collective #" << k << " of block " << b << " thread " << t << ": got " << got
            << ", expected " << expected[k];
          throw std::runtime_error(m.str());
        }
      }
    }
  }
  return {1.0};
}

// ---- misuse is reported, never a hang ----------------------------------------------------------------

__global__ void exit_before_collective_kernel(double* out) {
  const int t = static_cast<int>(threadIdx.x);
  if (t >= 16) return;  // lanes 16..31 leave before the warp reduction
  out[t] = __shfl_down_sync(kFull, 1.0 * t, 1);
}

__global__ void divergent_barrier_kernel(double* out) {
  const int t = static_cast<int>(threadIdx.x);
  if (t % 2 == 0) {
    __syncthreads();
  } else {
    __syncthreads();
  }
  out[t] = t;
}

__global__ void barrier_after_exit_kernel(double* out) {
  const int t = static_cast<int>(threadIdx.x);
  if (t >= 32) return;
  __syncthreads();
  out[t] = t;
}

__global__ void mask_without_self_kernel(double* out) {
  const int t = static_cast<int>(threadIdx.x);
  out[t] = __shfl_sync(0x1u, 1.0 * t, 0);
}

__global__ void partial_warp_kernel(double* out) {
  const int t = static_cast<int>(threadIdx.x);
  out[t] = __ballot_sync(kFull, 1);  // block of 40 threads: the second warp has 8 lanes
}

__global__ void different_collectives_kernel(double* out) {
  const int t = static_cast<int>(threadIdx.x);
  out[t] = (t < 16) ? __ballot_sync(kFull, 1) : __any_sync(kFull, 1);
}

__global__ void shared_overflow_kernel(double* out) {
  double* tile = ::simt::shared_array<double>(SIMT_SITE, 32);
  const int t = static_cast<int>(threadIdx.x);
  tile[t + 1] = t;  // thread 31 writes one past the end
  __syncthreads();
  out[t] = tile[t];
}

__global__ void dynamic_overflow_kernel(double* out) {
  double* smem = ::simt::dynamic_shared<double>(SIMT_SITE);
  const int t = static_cast<int>(threadIdx.x);
  smem[t] = t;  // 33 threads, 32 doubles requested
  __syncthreads();
  out[t] = smem[0];
}

__global__ void unwritten_shared_kernel(double* out) {
  double* tile = ::simt::shared_array<double>(SIMT_SITE, 64);
  const int t = static_cast<int>(threadIdx.x);
  tile[t] = t;  // 32 threads write 32 of 64 slots
  __syncthreads();
  out[t] = tile[t + 32];
}

__global__ void noop_kernel(double*) {}

// One block of `threads` threads, one output each.
std::vector<double> one_block(void (*kernel)(double*), const char* name, int threads,
                              size_t dynamic_smem = 0) {
  std::vector<double> out(static_cast<size_t>(threads));
  run(kernel, name, dim3(1), dim3(static_cast<unsigned>(threads)), dynamic_smem, out.data());
  return out;
}

#define SIMT_ONE_BLOCK(kernel, threads, ...) \
  [] { return one_block(kernel, #kernel, threads, ##__VA_ARGS__); }

// ---- launches the GPU would refuse -----------------------------------------------------------------

std::vector<double> too_many_threads() {
  run(noop_kernel, "noop_kernel", dim3(1), dim3(1025), 0, nullptr);
  return {};
}
std::vector<double> grid_y_too_large() {
  run(noop_kernel, "noop_kernel", dim3(1, 65536), dim3(32), 0, nullptr);
  return {};
}
std::vector<double> smem_without_opt_in() {
  run(noop_kernel, "noop_kernel", dim3(1), dim3(32), (48 << 10) + 8, nullptr);
  return {};
}
std::vector<double> smem_with_opt_in() {
  // Opting in allows up to the device's limit; one byte more is refused.
  const auto kernel = reinterpret_cast<const void*>(&noop_kernel);
  int device = 0, optin = 0;
  cudaGetDevice(&device);
  cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device);
  if (cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, optin) != cudaSuccess) {
    throw std::runtime_error(::simt::error_detail());
  }
  run(noop_kernel, "noop_kernel", dim3(1), dim3(32), static_cast<size_t>(optin), nullptr);
  if (cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, optin + 1) == cudaSuccess) {
    throw std::runtime_error("cudaFuncSetAttribute accepted more than the opt-in limit");
  }
  cudaGetLastError();
  return {static_cast<double>(optin)};
}

// ---- the orders threads and blocks run in ------------------------------------------------------------

__global__ void order_kernel(double* out, unsigned long long* counter) {
  // Each thread notes its global id in the order the threads run, before and after a barrier.
  const double id = blockIdx.x * blockDim.x + threadIdx.x;
  out[atomicAdd(counter, 1ull)] = id;
  __syncthreads();
  out[atomicAdd(counter, 1ull)] = id;
}

std::vector<double> order() {
  const int blocks = 4, threads = 64;
  std::vector<double> out(2 * blocks * threads);
  unsigned long long counter = 0;
  run(order_kernel, "order_kernel", dim3(blocks), dim3(threads), 0, out.data(), &counter);
  return out;
}

// ---- a stack overflow hits the guard page (run in a subprocess: it aborts) ---------------------------

__device__ __attribute__((noinline)) double deep(volatile double* sink, int depth) {
  volatile double frame[512];
  frame[depth % 512] = depth;
  *sink = frame[depth % 512];
  return depth > 0 ? deep(sink, depth + 1) + frame[0] : 0.0;  // never ends
}

__global__ void stack_overflow_kernel(double* out) {
  volatile double sink = 0;
  out[0] = deep(&sink, 1);
}


const std::map<std::string, std::vector<double> (*)()>& registry() {
  static const std::map<std::string, std::vector<double> (*)()> tests{
      {"collectives", collectives},
      {"exit_before_collective", SIMT_ONE_BLOCK(exit_before_collective_kernel, 32)},
      {"divergent_barrier", SIMT_ONE_BLOCK(divergent_barrier_kernel, 64)},
      {"barrier_after_exit", SIMT_ONE_BLOCK(barrier_after_exit_kernel, 64)},
      {"mask_without_self", SIMT_ONE_BLOCK(mask_without_self_kernel, 32)},
      {"partial_warp", SIMT_ONE_BLOCK(partial_warp_kernel, 40)},
      {"different_collectives", SIMT_ONE_BLOCK(different_collectives_kernel, 32)},
      {"shared_overflow", SIMT_ONE_BLOCK(shared_overflow_kernel, 32)},
      {"dynamic_overflow", SIMT_ONE_BLOCK(dynamic_overflow_kernel, 33, 32 * sizeof(double))},
      {"unwritten_shared", SIMT_ONE_BLOCK(unwritten_shared_kernel, 32)},
      {"too_many_threads", too_many_threads},
      {"grid_y_too_large", grid_y_too_large},
      {"smem_without_opt_in", smem_without_opt_in},
      {"smem_with_opt_in", smem_with_opt_in},
      {"order", order},
      {"stack_overflow", SIMT_ONE_BLOCK(stack_overflow_kernel, 1)},
  };
  return tests;
}

}  // namespace

std::vector<std::string> names() {
  std::vector<std::string> out;
  for (const auto& entry : registry()) out.push_back(entry.first);
  return out;
}

std::vector<double> run_named(const std::string& name) {
  const auto it = registry().find(name);
  if (it == registry().end()) throw std::invalid_argument("no self-test named " + name);
  return it->second();
}

}  // namespace simt_selftest
