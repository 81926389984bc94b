// Builds math.h's bucket-indexed WindowIndex over the sorted positives, for the window
// probes (window_probes.cpp).
#pragma once

#include <ATen/Parallel.h>

#include <algorithm>
#include <vector>

#include "aploss/math.h"

namespace aploss {
namespace probes {

inline WindowIndex make_window_index(const double* q, int64_t n, const int32_t* table,
                                     int64_t buckets, double origin, double width) {
  return {q, n, table, buckets, origin, 1.0 / width};
}

// The window index of a single ranking: 64 buckets per positive, at least 64, at most
// 2^20.
class OwnedWindowIndex {
 public:
  OwnedWindowIndex(const double* q, int64_t num_pos, double delta)
      : table_(2 * (bucket_count(num_pos) + 1)) {
    const int64_t buckets = bucket_count(num_pos);
    const double origin = bucket_origin(q, delta);
    const double width = bucket_width(q, num_pos, delta, buckets);
    at::parallel_for(0, buckets + 1, 4096, [&](int64_t begin, int64_t end) {
      fill_window_table(q, num_pos, origin, width, delta, begin, end, table_.data());
    });
    index_ = make_window_index(q, num_pos, table_.data(), buckets, origin, width);
  }
  const WindowIndex& get() const { return index_; }

 private:
  static int64_t bucket_count(int64_t num_pos) {
    return std::min<int64_t>(int64_t(1) << 20, std::max<int64_t>(64, 64 * num_pos));
  }
  std::vector<int32_t> table_;
  WindowIndex index_;
};

}  // namespace probes
}  // namespace aploss
