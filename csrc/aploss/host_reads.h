// Every read of a tensor's values by the host goes through read_to_host: on a GPU each one
// waits for the device (a host synchronisation), and the tests count them through this
// one place, also on the emulated device and the CPU, where they cost nothing.
#pragma once

#include <ATen/core/Tensor.h>

#include <atomic>
#include <cstdint>

// The extension and the emulated device of the tests each count their own reads (the
// tests add them up), under names of their own: loaded into one process, their inline
// functions would otherwise be merged into one.
#if defined(APLOSS_SIMT)
#define APLOSS_HOST_READS_SCOPE emulated_device
#else
#define APLOSS_HOST_READS_SCOPE extension
#endif

namespace aploss {
inline namespace APLOSS_HOST_READS_SCOPE {

// The reads so far.
inline std::atomic<int64_t>& host_read_count() {
  static std::atomic<int64_t> count{0};
  return count;
}

// `t` on the CPU (itself, if it is there already).
inline at::Tensor read_to_host(const at::Tensor& t) {
  host_read_count().fetch_add(1, std::memory_order_relaxed);
  return t.to(at::kCPU);
}

}  // namespace APLOSS_HOST_READS_SCOPE
}  // namespace aploss
