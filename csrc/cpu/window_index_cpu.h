// Builds math.h's WindowIndex over the sorted positives on the CPU.
#pragma once

#include <ATen/Parallel.h>

#include <vector>

#include "../aploss/math.h"

namespace aploss {
namespace cpu {

class OwnedWindowIndex {
 public:
  OwnedWindowIndex(const double* q, int64_t num_pos, double delta)
      : table_(2 * (bucket_count_for(num_pos) + 1)) {
    const int64_t buckets = bucket_count_for(num_pos);
    const double origin = bucket_origin(q, delta);
    const double width = bucket_width(q, num_pos, delta, buckets);
    at::parallel_for(0, buckets + 1, 4096, [&](int64_t begin, int64_t end) {
      fill_window_table(q, num_pos, origin, width, delta, begin, end, table_.data());
    });
    index_ = {q, num_pos, table_.data(), buckets, origin, 1.0 / width};
  }
  const WindowIndex& get() const { return index_; }

  // Pulls in the table entry the window search of score s will read, some entries
  // ahead of use: the table is larger than L1 and read at random.
  void prefetch(double s) const { __builtin_prefetch(window_entry(index_, s)); }

 private:
  std::vector<int32_t> table_;
  WindowIndex index_;
};

}  // namespace cpu
}  // namespace aploss
