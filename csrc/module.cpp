// The Python module aploss_cuda._C. Importing it runs the TORCH_LIBRARY
// registrations of the other translation units; it also says what was compiled in, lets
// the test suite install its emulated CUDA device (tests/simt) and hands its kernel tables
// to the test suite's probes (tests/probes).
#include <Python.h>

#include <cstring>

#include "aploss/host_reads.h"
#include "aploss/kernels.h"
#include "cpu/interval_lanes_cpu.h"
#include "op_checks.h"

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

// _kernel_table(device_type): the kernel table that tensors of that device type run (for
// "cpu", the emulated device's while one is set), as a capsule. The tests' probes
// (tests/probes) call its kernels directly, against the same kernels' deterministic
// records.
const aploss::Kernels* table_of(PyObject* device_type, const char* caller) {
  const char* name = PyUnicode_AsUTF8(device_type);
  if (name == nullptr) return nullptr;
  const aploss::Kernels* table = nullptr;
  if (std::strcmp(name, "cpu") == 0) table = &aploss::cpu_device_kernels();
#ifdef APLOSS_WITH_CUDA
  if (std::strcmp(name, "cuda") == 0) table = &aploss::cuda_kernels();
#endif
  if (table == nullptr) {
    PyErr_Format(PyExc_ValueError, "%s: no kernels compiled for device type '%s'", caller, name);
  }
  return table;
}

PyObject* kernel_table(PyObject*, PyObject* device_type) {
  const aploss::Kernels* table = table_of(device_type, "_kernel_table");
  if (table == nullptr) return nullptr;
  return PyCapsule_New(const_cast<aploss::Kernels*>(table), APLOSS_KERNELS_CAPSULE, nullptr);
}

// _records_intervals(device_type): whether that device's grouped forward, with one id per
// entry, returns the intervals its pass 1 recorded as uint32 codes (pipeline.h,
// records_intervals), for the forward's fake.
PyObject* records_intervals(PyObject*, PyObject* device_type) {
  const aploss::Kernels* table = table_of(device_type, "_records_intervals");
  if (table == nullptr) return nullptr;
  return PyBool_FromLong(table->grouped_pass1_recording != nullptr);
}

// _set_cpu_vector_lanes(bool): whether the CPU passes compute their common case in
// vector lanes (the default) or every entry with the scalar functions (the tests compare).
PyObject* set_cpu_vector_lanes(PyObject*, PyObject* enabled) {
  const int flag = PyObject_IsTrue(enabled);
  if (flag < 0) return nullptr;
  aploss::cpu::set_cpu_vector_lanes(flag != 0);
  Py_RETURN_NONE;
}

// cpu_vector_lanes(): "avx2" where the CPU passes compute their common case in AVX2
// lanes (compiled in, the CPU has AVX2, not switched off), else None.
PyObject* cpu_vector_lanes(PyObject*, PyObject*) {
#ifdef APLOSS_AVX2_LANES
  if (aploss::cpu::cpu_vector_lanes() && aploss::cpu::cpu_has_avx2()) {
    return PyUnicode_FromString("avx2");
  }
#endif
  Py_RETURN_NONE;
}

// _host_reads(): reads of tensor values by the extension's host code so far (each one a
// host synchronisation on a GPU; aploss/host_reads.h).
PyObject* host_reads(PyObject*, PyObject*) {
  return PyLong_FromLongLong(aploss::host_read_count().load());
}

// _trust_forward_outputs(bool) -> bool: whether pass 2 on this thread takes its state as
// given (op_checks.h); returns the previous setting.
PyObject* trust_forward_outputs(PyObject*, PyObject* enabled) {
  const int flag = PyObject_IsTrue(enabled);
  if (flag < 0) return nullptr;
  return PyBool_FromLong(aploss::checks::set_forward_outputs_trusted(flag != 0));
}

PyMethodDef methods[] = {
    {"cuda_compiled", cuda_compiled, METH_NOARGS, "Whether the CUDA kernels were compiled in."},
    {"_set_emulated_device", set_emulated_device, METH_O,
     "Test suite only: run CPU tensors through the given kernel table (None: the CPU kernels)."},
    {"_kernel_table", kernel_table, METH_O,
     "Tests only: the kernel table that tensors of this device type run, as a capsule."},
    {"_records_intervals", records_intervals, METH_O,
     "The forward's fake: whether this device type's grouped forward records intervals."},
    {"cpu_vector_lanes", cpu_vector_lanes, METH_NOARGS,
     "'avx2' where the CPU passes run their common case in AVX2 lanes, else None."},
    {"_set_cpu_vector_lanes", set_cpu_vector_lanes, METH_O,
     "Tests and benchmarks: CPU passes in vector lanes (True, the default) or scalar."},
    {"_host_reads", host_reads, METH_NOARGS,
     "Tests: reads of tensor values by the extension's host code so far (GPU syncs)."},
    {"_trust_forward_outputs", trust_forward_outputs, METH_O,
     "aploss_cuda.distributed: pass 2 on this thread takes the forward's own outputs as given."},
    {nullptr, nullptr, 0, nullptr},
};

PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C", "aploss_cuda native kernels", -1, methods};

}  // namespace

extern "C" PyMODINIT_FUNC PyInit__C(void) { return PyModule_Create(&module_def); }
