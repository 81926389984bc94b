// Registers the device-agnostic driver (../ap_loss.h) for the CUDA dispatch key; the
// driver reaches the CUDA kernels through kernels_for() -> cuda_kernels().
#include <torch/library.h>

#include "../ap_loss.h"

namespace aploss {

TORCH_LIBRARY_IMPL(aploss, CUDA, m) {
  m.impl("ap_loss_forward", &ap_loss_forward);
  m.impl("ap_loss_backward", &ap_loss_backward);
  m.impl("ap_loss_grouped_forward", &ap_loss_grouped_forward);
  m.impl("ap_loss_grouped_backward", &ap_loss_grouped_backward);
}

}  // namespace aploss
