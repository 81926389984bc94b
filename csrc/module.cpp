// The Python module aploss_cuda._C. Importing it runs the TORCH_LIBRARY
// registrations of the other translation units; it also says what was compiled in.
#include <Python.h>

namespace {

PyObject* cuda_compiled(PyObject*, PyObject*) {
#ifdef APLOSS_WITH_CUDA
  Py_RETURN_TRUE;
#else
  Py_RETURN_FALSE;
#endif
}

PyMethodDef methods[] = {
    {"cuda_compiled", cuda_compiled, METH_NOARGS, "Whether the CUDA kernels were compiled in."},
    {nullptr, nullptr, 0, nullptr},
};

PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C", "aploss_cuda native kernels", -1, methods};

}  // namespace

extern "C" PyMODINIT_FUNC PyInit__C(void) { return PyModule_Create(&module_def); }
