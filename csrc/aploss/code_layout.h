// How the kernels read each entry's dense group code (../group_codes.h) without an
// N-sized tensor when the ids are broadcast over the scores: entry i's code is
//
//   codes[(i / repeat) % period]          period = the codes' numel
//
// One code per entry: repeat 1, period N. One per class of (B, A, C) scores: repeat 1,
// period C. One per image: repeat A C, period B. Shared by the CPU and CUDA kernels.
#pragma once

#include <cstdint>

#include "math.h"

namespace aploss {

struct CodeLayout {
  const int32_t* codes;
  int64_t period;  // >= 1
  int64_t repeat;  // >= 1

  APLOSS_HD int32_t at(int64_t i) const { return codes[(i / repeat) % period]; }
};

// A code as the kernels use it: outside [0, num_groups), num_groups (no group).
APLOSS_HD int32_t in_range_code(int32_t code, int64_t num_groups) {
  // num_groups < 2^31: one 32-bit comparison, which a copy loop vectorises.
  const uint32_t groups = static_cast<uint32_t>(num_groups);
  return static_cast<uint32_t>(code) < groups ? code : static_cast<int32_t>(groups);
}

// The codes of entries [i, i + n) into `out` (in_range_code), run by run: each run is a
// fill of one code or a copy of consecutive codes, loops a compiler vectorises.
APLOSS_HD void codes_of_range(const CodeLayout& c, int64_t i, int64_t n, int64_t num_groups,
                              int32_t* out) {
  int64_t row = (i / c.repeat) % c.period, within = i % c.repeat;
  for (int64_t k = 0; k < n;) {
    const int64_t left = n - k;
    int64_t len;
    if (c.repeat > 1) {
      len = c.repeat - within < left ? c.repeat - within : left;
      const int32_t code = in_range_code(c.codes[row], num_groups);
      for (int64_t t = 0; t < len; ++t) out[k + t] = code;
      within += len;
      if (within == c.repeat) {
        within = 0;
        row = row + 1 == c.period ? 0 : row + 1;
      }
    } else {
      len = c.period - row < left ? c.period - row : left;
      const int32_t* from = c.codes + row;
      for (int64_t t = 0; t < len; ++t) out[k + t] = in_range_code(from[t], num_groups);
      row = row + len == c.period ? 0 : row + len;
    }
    k += len;
  }
}

}  // namespace aploss
