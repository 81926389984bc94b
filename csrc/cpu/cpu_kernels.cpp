// The CPU backend's kernel table, and the table behind the CPU dispatch key (the tests
// can put their emulated CUDA device there).
#include "cpu_kernels.h"

#include <atomic>

#include "../aploss/kernels.h"

namespace aploss {
namespace cpu {

// No ranking_backward: the CPU's ranking_forward returns no entry classes. Intervals
// recorded in pass 1 spare pass 2 its lookups (about a third of a grouped call).
constexpr Kernels kTable{APLOSS_KERNEL_ENTRIES(APLOSS_KERNEL_POINTER)
                         APLOSS_RANKING_BACKWARD_ENTRIES(APLOSS_NO_KERNEL)
                         APLOSS_RECORDED_INTERVAL_ENTRIES(APLOSS_KERNEL_POINTER)
                         /*pass1_float_atomics=*/false, /*broadcast_codes=*/true,
                         /*host_memory=*/true};

}  // namespace cpu

const Kernels& cpu_kernels() { return cpu::kTable; }

namespace {
std::atomic<const Kernels*> emulated_table{nullptr};
}  // namespace

void set_emulated_device_kernels(const Kernels* table) { emulated_table.store(table); }
const Kernels* emulated_device_kernels() { return emulated_table.load(); }

const Kernels& cpu_device_kernels() {
  const Kernels* emulated = emulated_device_kernels();
  return emulated != nullptr ? *emulated : cpu_kernels();
}

}  // namespace aploss
