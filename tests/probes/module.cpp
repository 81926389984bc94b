// The Python module of the test suite's probes (built by build.py). The probes are the
// operators torch.ops.aploss_probes.* (torch's dispatcher converts the tensors: lighter
// to compile than pybind11); the module itself only turns a kernel table capsule
// (aploss_cuda._C._kernel_table) into the address that the pass 1 probe takes.
#include <Python.h>
#include <torch/library.h>

#include "aploss/kernels.h"
#include "pass1_probe.h"
#include "window_probes.h"

namespace {

// table: the address of a Kernels, from table_address.
at::Tensor pass1_differences(int64_t table, const at::Tensor& scores, const at::Tensor& labels,
                            const std::optional<at::Tensor>& codes, const at::Tensor& positives,
                            const std::optional<at::Tensor>& offsets, double delta,
                            bool deterministic) {
  const auto* kernels = reinterpret_cast<const aploss::Kernels*>(static_cast<intptr_t>(table));
  return aploss::probes::pass1_differences(*kernels, scores, labels, codes, positives, offsets,
                                          delta, deterministic);
}

// Kernels::positive_window_sums with any keys (the losses pass only their own: Rank &
// Sort's targets, of one sign).
at::Tensor positive_window_sums(int64_t table, const at::Tensor& positives,
                                const at::Tensor& offsets, const std::optional<at::Tensor>& keys,
                                const at::Tensor& values, double delta, bool below,
                                bool transpose) {
  const auto* kernels = reinterpret_cast<const aploss::Kernels*>(static_cast<intptr_t>(table));
  TORCH_CHECK(positives.dim() == 2 && positives.size(0) == 2 &&
                  positives.scalar_type() == at::kDouble && positives.is_contiguous(),
              "positives: (2, P) float64, contiguous");
  TORCH_CHECK(values.dim() == 2 && values.size(1) == positives.size(1),
              "values: (V, P), one column per positive");
  return kernels->positive_window_sums(positives, offsets.contiguous(),
                                       keys.has_value() ? keys->contiguous() : at::Tensor(),
                                       values.contiguous(), delta, below, transpose);
}

// table_address(capsule): refused unless the table was built from the same kernels.h and
// torch as the probes.
PyObject* table_address(PyObject*, PyObject* capsule) {
  if (!PyCapsule_IsValid(capsule, APLOSS_KERNELS_CAPSULE)) {
    PyErr_Format(PyExc_TypeError, "expected a kernel table capsule named '%s'; got %R",
                 APLOSS_KERNELS_CAPSULE, capsule);
    return nullptr;
  }
  return PyLong_FromVoidPtr(PyCapsule_GetPointer(capsule, APLOSS_KERNELS_CAPSULE));
}

PyMethodDef methods[] = {
    {"table_address", table_address, METH_O,
     "The address of the kernel table in the capsule, for the probes that take one."},
    {nullptr, nullptr, 0, nullptr},
};

}  // namespace

TORCH_LIBRARY(aploss_probes, m) {
  m.def(
      "find_windows(Tensor scores, Tensor positives, float delta, bool indexed)"
      " -> (Tensor, Tensor, Tensor)");
  m.def("find_intervals(Tensor scores, Tensor positives, float delta) -> (Tensor, Tensor)");
  m.def(
      "pass1_differences(int table, Tensor scores, Tensor labels, Tensor? codes,"
      " Tensor positives, Tensor? offsets, float delta, bool deterministic) -> Tensor");
  m.def(
      "positive_window_sums(int table, Tensor positives, Tensor offsets, Tensor? keys,"
      " Tensor values, float delta, bool below, bool transpose) -> Tensor");
}

// One kernel for every device (the table says whose kernels run), below autograd as the
// library's operators run.
TORCH_LIBRARY_IMPL(aploss_probes, CompositeExplicitAutograd, m) {
  m.impl("find_windows", &aploss::probes::find_windows);
  m.impl("find_intervals", &aploss::probes::find_intervals);
  m.impl("pass1_differences", &pass1_differences);
  m.impl("positive_window_sums", &positive_window_sums);
}

#define PROBES_CONCAT_(a, b) a##b
#define PROBES_CONCAT(a, b) PROBES_CONCAT_(a, b)

extern "C" PyMODINIT_FUNC PROBES_CONCAT(PyInit_, TORCH_EXTENSION_NAME)(void) {
  static PyModuleDef module_def = {PyModuleDef_HEAD_INIT, APLOSS_STRINGIFY(TORCH_EXTENSION_NAME),
                                   "aploss test probes", -1, methods};
  return PyModule_Create(&module_def);
}
