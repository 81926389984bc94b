// The operators (../ops.h) for the CUDA dispatch key, with the CUDA kernel table.
#include <torch/library.h>

#include "../aploss/kernels.h"
#include "../ops.h"

namespace aploss {

TORCH_LIBRARY_IMPL(aploss, CUDA, m) { ops::register_backend<&cuda_kernels>(m); }

}  // namespace aploss
