// The CPU backend's kernel table, and the table behind the CPU dispatch key (the tests
// can put their emulated CUDA device there).
#include "cpu_kernels.h"

#include <atomic>

#include "../aploss/kernels.h"

namespace aploss {

const Kernels& cpu_kernels() {
  static const Kernels table{cpu::gather, cpu::sorted_pass1, cpu::pairwise_pass1,
                             cpu::sorted_pass2, cpu::pairwise_pass2,
                             cpu::grouped_pass1, cpu::grouped_pass2,
                             cpu::positive_window_sums, cpu::pass1_records, cpu::dense_codes,
                             cpu::ranking_forward, /*ranking_backward=*/nullptr, /*check_ranking_state=*/nullptr,
                             /*pass1_float_atomics=*/false, /*broadcast_codes=*/true,
                             /*host_memory=*/true};
  return table;
}

}  // namespace aploss

namespace aploss {
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
