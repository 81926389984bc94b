// The Python module of the emulated device (built by tests/simt/build.py): the CUDA
// kernel table compiled for the host, as a capsule for aploss_cuda._C._set_emulated_device,
// the simulated GPU and scheduling orders, the launch log, and the self-tests.
#include <Python.h>

#include <stdexcept>

#include "../../csrc/aploss/host_reads.h"
#include "../../csrc/aploss/kernels.h"
#include "runtime.h"
#include "selftest_kernels.h"

namespace {

PyObject* kernel_table(PyObject*, PyObject*) {
  return PyCapsule_New(const_cast<aploss::Kernels*>(&aploss::cuda_kernels()),
                       APLOSS_KERNELS_CAPSULE, nullptr);
}

bool parse_order(const char* text, simt::Order* order) {
  const std::string s(text);
  if (s == "forward") *order = simt::Order::kForward;
  else if (s == "reverse") *order = simt::Order::kReverse;
  else if (s == "random") *order = simt::Order::kRandom;
  else return false;
  return true;
}

const char* order_name(simt::Order order) {
  switch (order) {
    case simt::Order::kForward: return "forward";
    case simt::Order::kReverse: return "reverse";
    case simt::Order::kRandom: return "random";
  }
  return "?";
}

// configure(device, thread_order, block_order, seed)
PyObject* configure(PyObject*, PyObject* args) {
  const char* device = nullptr;
  const char* threads = nullptr;
  const char* blocks = nullptr;
  unsigned long long seed = 0;
  if (!PyArg_ParseTuple(args, "sssK", &device, &threads, &blocks, &seed)) return nullptr;
  simt::Config config;
  config.device = simt::device_named(device);
  if (config.device < 0) {
    PyErr_Format(PyExc_ValueError, "unknown device profile '%s' (h100, small)", device);
    return nullptr;
  }
  if (!parse_order(threads, &config.thread_order) || !parse_order(blocks, &config.block_order)) {
    PyErr_SetString(PyExc_ValueError, "orders are 'forward', 'reverse' or 'random'");
    return nullptr;
  }
  config.seed = seed;
  simt::configure(config);
  Py_RETURN_NONE;
}

PyObject* current(PyObject*, PyObject*) {
  const simt::Config c = simt::current_config();
  return Py_BuildValue("(sssK)", simt::devices()[static_cast<size_t>(c.device)].name.c_str(),
                       order_name(c.thread_order), order_name(c.block_order),
                       static_cast<unsigned long long>(c.seed));
}

PyObject* dims(dim3 d) { return Py_BuildValue("(III)", d.x, d.y, d.z); }

PyObject* take_launch_log(PyObject*, PyObject*) {
  const std::vector<simt::LaunchRecord> log = simt::take_launch_log();
  PyObject* list = PyList_New(static_cast<Py_ssize_t>(log.size()));
  for (size_t i = 0; i < log.size(); ++i) {
    const simt::LaunchRecord& r = log[i];
    PyObject* grid = dims(r.grid);
    PyObject* block = dims(r.block);
    PyList_SET_ITEM(list, static_cast<Py_ssize_t>(i),
                    Py_BuildValue("{s:s,s:s,s:O,s:O,s:n,s:n,s:O}", "name", r.name.c_str(), "site",
                                  r.site.c_str(), "grid", grid, "block", block, "dynamic_smem",
                                  static_cast<Py_ssize_t>(r.dynamic_smem), "static_smem",
                                  static_cast<Py_ssize_t>(r.static_smem), "failed",
                                  r.failed ? Py_True : Py_False));
    Py_DECREF(grid);
    Py_DECREF(block);
  }
  return list;
}

PyObject* selftests(PyObject*, PyObject*) {
  const std::vector<std::string> names = simt_selftest::names();
  PyObject* list = PyList_New(static_cast<Py_ssize_t>(names.size()));
  for (size_t i = 0; i < names.size(); ++i) {
    PyList_SET_ITEM(list, static_cast<Py_ssize_t>(i), PyUnicode_FromString(names[i].c_str()));
  }
  return list;
}

PyObject* run_selftest(PyObject*, PyObject* args) {
  const char* name = nullptr;
  if (!PyArg_ParseTuple(args, "s", &name)) return nullptr;
  try {
    const std::vector<double> out = simt_selftest::run_named(name);
    PyObject* list = PyList_New(static_cast<Py_ssize_t>(out.size()));
    for (size_t i = 0; i < out.size(); ++i) {
      PyList_SET_ITEM(list, static_cast<Py_ssize_t>(i), PyFloat_FromDouble(out[i]));
    }
    return list;
  } catch (const std::invalid_argument& e) {
    PyErr_SetString(PyExc_KeyError, e.what());
  } catch (const std::exception& e) {
    PyErr_SetString(PyExc_RuntimeError, e.what());
  }
  return nullptr;
}

PyObject* host_reads(PyObject*, PyObject*) {
  return PyLong_FromLongLong(aploss::host_read_count().load());
}

PyMethodDef methods[] = {
    {"kernel_table", kernel_table, METH_NOARGS, "The CUDA kernel table compiled for the host."},
    {"configure", configure, METH_VARARGS,
     "configure(device, thread_order, block_order, seed): the simulated GPU and orders."},
    {"current", current, METH_NOARGS, "The configuration in use."},
    {"take_launch_log", take_launch_log, METH_NOARGS, "Launches since the last call."},
    {"host_reads", host_reads, METH_NOARGS,
     "Reads of tensor values by the emulated kernels' host code so far (GPU syncs)."},
    {"selftests", selftests, METH_NOARGS, "Names of the self-tests."},
    {"run_selftest", run_selftest, METH_VARARGS, "Runs a self-test; RuntimeError on failure."},
    {nullptr, nullptr, 0, nullptr},
};

}  // namespace

#define SIMT_CONCAT_(a, b) a##b
#define SIMT_CONCAT(a, b) SIMT_CONCAT_(a, b)

extern "C" PyMODINIT_FUNC SIMT_CONCAT(PyInit_, TORCH_EXTENSION_NAME)(void) {
  static PyModuleDef module_def = {PyModuleDef_HEAD_INIT, APLOSS_STRINGIFY(TORCH_EXTENSION_NAME),
                                   "aploss emulated CUDA device", -1, methods};
  return PyModule_Create(&module_def);
}
