// How far ahead the host loops over group ids (group_codes.cpp's narrowing, the CPU's
// numbering in group_codes_cpu.cpp) prefetch the ids by hand: the hardware's stream
// prefetch alone leaves those loops waiting on loads.
#pragma once

#include <cstdint>

namespace aploss {
namespace cpu {

constexpr int64_t kIdsAhead = 512;  // 4 KiB of int64 ids

}  // namespace cpu
}  // namespace aploss
