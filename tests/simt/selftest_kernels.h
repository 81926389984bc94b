// The emulated device's self-tests (selftest_kernels.cpp), run by name from Python.
#pragma once

#include <string>
#include <vector>

namespace simt_selftest {

std::vector<std::string> names();
// Runs one; returns its outputs, or throws std::runtime_error with the emulator's message.
std::vector<double> run_named(const std::string& name);

}  // namespace simt_selftest
