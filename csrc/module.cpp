// The Python module aploss_cuda._C. Importing it runs the TORCH_LIBRARY
// registrations of the other translation units; it also says what was compiled in, and
// lets the test suite install its emulated CUDA device (tests/simt).
#include <Python.h>

#include "aploss/kernels.h"

namespace {

PyObject* cuda_compiled(PyObject*, PyObject*) {
#ifdef APLOSS_WITH_CUDA
  Py_RETURN_TRUE;
#else
  Py_RETURN_FALSE;
#endif
}

// _set_emulated_device(capsule | None): CPU tensors then run the capsule's kernel table.
PyObject* set_emulated_device(PyObject*, PyObject* table) {
  if (table == Py_None) {
    aploss::set_emulated_device_kernels(nullptr);
    Py_RETURN_NONE;
  }
  if (!PyCapsule_IsValid(table, APLOSS_KERNELS_CAPSULE)) {
    PyErr_Format(PyExc_TypeError,
                 "_set_emulated_device expects None or a kernel table capsule named '%s' "
                 "(built from the same csrc/aploss/kernels.h and torch); got %R",
                 APLOSS_KERNELS_CAPSULE, table);
    return nullptr;
  }
  aploss::set_emulated_device_kernels(
      static_cast<const aploss::Kernels*>(PyCapsule_GetPointer(table, APLOSS_KERNELS_CAPSULE)));
  Py_RETURN_NONE;
}

PyMethodDef methods[] = {
    {"cuda_compiled", cuda_compiled, METH_NOARGS, "Whether the CUDA kernels were compiled in."},
    {"_set_emulated_device", set_emulated_device, METH_O,
     "Test suite only: run CPU tensors through the given kernel table (None: the CPU kernels)."},
    {nullptr, nullptr, 0, nullptr},
};

PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C", "aploss_cuda native kernels", -1, methods};

}  // namespace

extern "C" PyMODINIT_FUNC PyInit__C(void) { return PyModule_Create(&module_def); }
