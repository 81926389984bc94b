// Host-side control of the emulated device: the simulated GPU's limits, the order in
// which blocks and threads run, and the log of launches (for tests/simt/module.cpp).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "simt.h"

namespace simt {

// The properties of the simulated GPU that launches and the occupancy API see.
struct DeviceProfile {
  std::string name;
  int sm_count;
  int max_threads_per_block;
  int max_threads_per_sm;
  int max_blocks_per_sm;
  int registers_per_sm;
  int registers_per_thread;    // assumed for every kernel (the emulator cannot know)
  size_t smem_per_block;       // without opt-in (48 KiB on every current GPU)
  size_t smem_per_block_optin; // cudaDevAttrMaxSharedMemoryPerBlockOptin
  size_t smem_per_sm;
  size_t smem_reserved_per_block;
};

// The simulated GPUs, each a device ordinal: 0 "h100", the real limits of an H100 (SXM);
// 1 "small", 3 SMs and 8 KiB of shared memory per block, so that small inputs reach the
// global-memory fallbacks, many blocks per SM and several grid-stride rounds. Like real
// devices their properties never change, so host code may cache them per device.
const std::vector<DeviceProfile>& devices();
int device_named(const std::string& name);  // -1 if none

enum class Order { kForward, kReverse, kRandom };

struct Config {
  int device;  // the current device (cudaGetDevice)
  Order thread_order;  // after every barrier and collective
  Order block_order;
  uint64_t seed;
};

void configure(const Config& config);
Config current_config();

struct LaunchRecord {
  std::string name;
  std::string site;
  dim3 grid, block;
  size_t dynamic_smem;
  size_t static_smem;
  bool failed;
};

// Launches since the last call, then forgets them.
std::vector<LaunchRecord> take_launch_log();

}  // namespace simt
