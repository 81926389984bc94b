// The CPU backend's kernel table.
#include "cpu_kernels.h"

#include "../aploss/kernels.h"

namespace aploss {

const Kernels& cpu_kernels() {
  static const Kernels table{cpu::gather_positives, cpu::sorted_pass1, cpu::pairwise_pass1,
                             cpu::sorted_pass2, cpu::pairwise_pass2,
                             cpu::grouped_gather, cpu::grouped_pass1, cpu::grouped_pass2,
                             cpu::pass1_records, /*pass1_float_atomics=*/false};
  return table;
}

}  // namespace aploss
