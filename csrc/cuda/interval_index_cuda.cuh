// The interval index of ../aploss/intervals.h on the GPU, built on the device from the
// sorted positives without a host sync: sizes depend on P alone, so the 2P thresholds
// keep their ties (an interval between two equal thresholds is empty, which no key
// reaches) and there are 2 buckets per threshold. Its frame (origin and scale of the
// buckets) stays on the device too; a kernel reads it into its IntervalIndex first.
#pragma once

#include <ATen/core/Tensor.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "../aploss/intervals.h"

namespace aploss {
namespace gpu {

struct DeviceIntervalIndex {
  at::Tensor thresholds;  // (2P + kThresholdPadding) in the key dtype (float32 or float64)
  at::Tensor records;     // (buckets + 1) BucketRecord of the key type, as raw 4 x 32 or 64 bits
  at::Tensor bounds;      // (2, 2P + 1) int32: lo and hi of every interval
  at::Tensor frame;       // (2,) in the key dtype: the buckets' origin and scale
  int64_t count = 0;      // 2P thresholds: intervals 0 .. 2P
  int64_t buckets = 0;

  // The index for a kernel; origin and scale are read from `frame` on the device
  // (with_frame).
  template <typename K>
  IntervalIndex<K> view() const {
    return {thresholds.const_data_ptr<K>(), count,
            reinterpret_cast<const BucketRecord<K>*>(records.const_data_ptr()), buckets, K(0),
            K(0)};
  }
  template <typename K>
  const K* frame_on_device() const {
    return frame.const_data_ptr<K>();
  }
};

// The index of the sorted q (row 0 of positives, P values on the scores' device) for keys
// of `key_dtype` (at::kFloat or at::kDouble), built with kernels and ATen's sort and
// searchsorted on `stream`.
DeviceIntervalIndex device_interval_index(const at::Tensor& positives, double delta,
                                          at::ScalarType key_dtype, cudaStream_t stream);

#if defined(__CUDACC__) || defined(APLOSS_SIMT)
// A kernel's first step: its index with the frame the device computed.
template <typename K>
__device__ __forceinline__ IntervalIndex<K> with_frame(IntervalIndex<K> ix, const K* frame) {
  ix.origin = frame[0];
  ix.scale = frame[1];
  return ix;
}
#endif

}  // namespace gpu
}  // namespace aploss
