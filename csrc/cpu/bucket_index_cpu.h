// Builds math.h's BucketIndex over sorted positives on the CPU.
#pragma once

#include <ATen/Parallel.h>

#include <vector>

#include "../aploss/math.h"

namespace aploss {
namespace cpu {

class OwnedBucketIndex {
 public:
  OwnedBucketIndex(const double* q, int64_t num_pos, double delta)
      : table_(bucket_count_for(num_pos) + 1) {
    const int64_t buckets = bucket_count_for(num_pos);
    const double origin = bucket_origin(q, delta);
    const double width = bucket_width(q, num_pos, delta, buckets);
    at::parallel_for(0, buckets + 1, 4096, [&](int64_t begin, int64_t end) {
      fill_bucket_table(q, num_pos, origin, width, begin, end, table_.data());
    });
    index_ = {q, num_pos, table_.data(), buckets, origin, 1.0 / width};
  }
  const BucketIndex& get() const { return index_; }

 private:
  std::vector<int32_t> table_;
  BucketIndex index_;
};

// Pulls in the table entries a window search at score s will read, `distance`
// entries ahead of use: the table is larger than L1 and accessed at random.
inline void prefetch_window(const BucketIndex& idx, double s, double delta) {
  __builtin_prefetch(bucket_entry(idx, s - delta));
  __builtin_prefetch(bucket_entry(idx, s + delta));
}

}  // namespace cpu
}  // namespace aploss
