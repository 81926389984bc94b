// stable_order.h: keys that are all float32 values (scores and targets of float32,
// float16 or bfloat16 tensors) sort as int32 order-preserving bits, the rest as int64
// ones. Measured on one thread at 40,000 keys: ATen sorts int32 keys in 0.36 ms and int64
// keys (by radix) in 0.78 ms, std::stable_sort with a float64 comparison takes 3.1 ms;
// at 400,000 keys int32 keys take half the time of int64 ones. Below 2,048 keys the
// comparison sort costs less (9 us against 25 us at 1,024 keys; alike at 2,048).
#include "stable_order.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <numeric>

#include "../aploss/intervals.h"

namespace aploss {
namespace cpu {
namespace {

constexpr int64_t kFewKeys = 2048;

// Whether every key is a float32 value (NaN is not; a key beyond float32's range is not
// converted, which would be undefined).
bool all_float32(const double* keys, int64_t n) {
  constexpr double kLargest = std::numeric_limits<float>::max();
  bool exact = true;
  for (int64_t m = 0; m < n; ++m) {
    const double k = keys[m];
    exact &= std::fabs(k) <= kLargest && static_cast<double>(static_cast<float>(k)) == k;
  }
  return exact;
}

// ATen's stable sort of `bits` (int32 or int64), each key's order-preserving bits
// (flipped for a descending order: ~x reverses the order of every x).
template <typename K, typename I>
at::Tensor order_of_bits(const double* keys, int64_t n, bool descending, at::ScalarType type) {
  at::Tensor bits = at::empty({n}, type);
  I* b = bits.data_ptr<I>();
  for (int64_t m = 0; m < n; ++m) {
    const I x = ordered_bits<K>(static_cast<K>(keys[m]) + K(0));  // -0.0 as +0.0
    b[m] = descending ? ~x : x;
  }
  return std::get<1>(bits.sort(/*stable=*/true, 0, false));
}

}  // namespace

std::vector<int64_t> stable_order(const double* keys, int64_t n, bool descending) {
  std::vector<int64_t> order(static_cast<size_t>(n));
  if (n < kFewKeys) {
    std::iota(order.begin(), order.end(), int64_t(0));
    std::stable_sort(order.begin(), order.end(), [keys, descending](int64_t a, int64_t b) {
      return descending ? keys[a] > keys[b] : keys[a] < keys[b];
    });
    return order;
  }
  const at::Tensor sorted = all_float32(keys, n)
                                ? order_of_bits<float, int32_t>(keys, n, descending, at::kInt)
                                : order_of_bits<double, int64_t>(keys, n, descending, at::kLong);
  std::memcpy(order.data(), sorted.const_data_ptr<int64_t>(), n * sizeof(int64_t));
  return order;
}

}  // namespace cpu
}  // namespace aploss
