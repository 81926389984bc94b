// The stable order of float64 keys on the CPU, for the positives' sorts (by score, by
// target): ATen's sort of order-preserving integer keys.
#pragma once

#include <cstdint>
#include <vector>

namespace aploss {
namespace cpu {

// Indices of keys[0, n) in ascending (or descending) key order, ties in index order;
// -0.0 and +0.0 are equal. No NaN.
std::vector<int64_t> stable_order(const double* keys, int64_t n, bool descending);

}  // namespace cpu
}  // namespace aploss
