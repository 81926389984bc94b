// Builds the interval index (interval_index_cuda.cuh) on the device: a kernel for the
// thresholds of every positive, ATen's sort for their order, searchsorted for each
// interval's window bounds and each bucket's first threshold, and a kernel for the
// bucket records. O(P log P) work, no host sync.
#include <ATen/ATen.h>

#include <algorithm>
#include <limits>

#include "cuda_common.cuh"
#include "interval_index_cuda.cuh"

namespace aploss {
namespace gpu {
namespace {

constexpr int kIndexBlock = 256;

// Row 0: full_threshold of every q_i, row 1: nonzero_threshold. Both rows are sorted,
// since q is.
template <typename K>
__global__ void __launch_bounds__(kIndexBlock)
    thresholds_kernel(const double* __restrict__ q, int64_t num_pos, double delta,
                      K* __restrict__ out) {
  const int64_t stride = grid_threads();
  for (int64_t i = global_thread_index(); i < num_pos; i += stride) {
    out[i] = full_threshold<K>(q[i], delta);
    out[num_pos + i] = nonzero_threshold<K>(q[i], delta);
  }
}

// The bucket of every threshold, with the function the passes use for the scores.
template <typename K>
__global__ void __launch_bounds__(kIndexBlock)
    threshold_buckets_kernel(IntervalIndex<K> ix, const K* __restrict__ frame,
                             int64_t* __restrict__ own) {
  ix = with_frame(ix, frame);
  const int64_t stride = grid_threads();
  for (int64_t m = global_thread_index(); m < ix.count; m += stride) {
    own[m] = key_bucket(ix, ix.thresholds[m]);
  }
}

template <typename K>
__global__ void __launch_bounds__(kIndexBlock)
    records_kernel(const K* __restrict__ thresholds, const int64_t* __restrict__ first,
                   int64_t buckets, BucketRecord<K>* __restrict__ records) {
  using First = typename KeyBits<K>::unsigned_type;
  const int64_t stride = grid_threads();
  for (int64_t b = global_thread_index(); b <= buckets; b += stride) {
    BucketRecord<K> r;
    const int64_t f = first[b];
    r.first = static_cast<First>(f);
    for (int c = 0; c <= kIntervalCandidates; ++c) r.next[c] = thresholds[f + c];
    records[b] = r;
  }
}

int64_t index_grid(int device, const void* kernel, int64_t items) {
  return grid_size(device, blocks_per_sm(kernel, kIndexBlock, 0), items, kIndexBlock);
}

}  // namespace

DeviceIntervalIndex device_interval_index(const at::Tensor& positives, double delta,
                                          at::ScalarType key_dtype, cudaStream_t stream) {
  TORCH_CHECK(key_dtype == at::kFloat || key_dtype == at::kDouble,
              "aploss interval index: keys are float32 or float64");
  const int device = kernel_device_index(positives);
  const int64_t num_pos = positives.size(1);
  const at::TensorOptions keys = positives.options().dtype(key_dtype);
  const at::TensorOptions longs = positives.options().dtype(at::kLong);
  DeviceIntervalIndex ix;
  ix.count = 2 * num_pos;
  ix.buckets = std::min(kMaxIntervalBuckets, kBucketsPerThreshold * ix.count);

  at::Tensor both = at::empty({2, num_pos}, keys);
  AT_DISPATCH_FLOATING_TYPES(key_dtype, "aploss_interval_thresholds", [&] {
    const auto find_thresholds = thresholds_kernel<scalar_t>;
    const int64_t grid =
        index_grid(device, reinterpret_cast<const void*>(find_thresholds), num_pos);
    APLOSS_LAUNCH(find_thresholds, static_cast<unsigned>(grid), kIndexBlock, 0, stream)(
        positives.const_data_ptr<double>(), num_pos, delta, both.data_ptr<scalar_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  const at::Tensor sorted = std::get<0>(both.view({-1}).sort());
  const double inf = std::numeric_limits<double>::infinity();
  ix.thresholds = at::cat({sorted, at::full({kThresholdPadding}, inf, keys)});

  // Interval m + 1 starts at threshold m: as many thresholds of each kind at or below it
  // as its window's lo and hi count.
  ix.bounds = at::zeros({2, ix.count + 1}, positives.options().dtype(at::kInt));
  for (int64_t row = 0; row < 2; ++row) {
    ix.bounds[row].narrow(0, 1, ix.count).copy_(
        at::searchsorted(both[row], sorted, /*out_int32=*/true, /*right=*/true));
  }

  // Buckets over the finite thresholds; scale 0 (one bucket in effect: every score
  // searched) when they span no range or more than the key type can hold.
  const at::Tensor origin = sorted.narrow(0, 0, 1);
  const at::Tensor top =
      at::where(at::isfinite(sorted), sorted, at::full({}, -inf, keys)).amax({0}, /*keepdim=*/true);
  const at::Tensor range = top - origin;
  const at::Tensor scale = at::full({1}, static_cast<double>(ix.buckets), keys) / range;
  const at::Tensor usable = range.gt(0) & at::isfinite(range) & at::isfinite(scale);
  ix.frame = at::cat({origin, at::where(usable, scale, at::zeros_like(scale))});

  at::Tensor own = at::empty({ix.count}, longs);
  ix.records = at::empty({ix.buckets + 1, 4}, positives.options().dtype(
                                                  key_dtype == at::kFloat ? at::kInt : at::kLong));
  AT_DISPATCH_FLOATING_TYPES(key_dtype, "aploss_interval_records", [&] {
    using K = scalar_t;
    static_assert(sizeof(BucketRecord<K>) == 4 * sizeof(K), "a record is four keys wide");
    const auto bucket_thresholds = threshold_buckets_kernel<K>;
    const int64_t grid =
        index_grid(device, reinterpret_cast<const void*>(bucket_thresholds), ix.count);
    APLOSS_LAUNCH(bucket_thresholds, static_cast<unsigned>(grid), kIndexBlock, 0, stream)(
        ix.view<K>(), ix.frame_on_device<K>(), own.data_ptr<int64_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    // Bucket b's first threshold: the first whose bucket is not below b.
    const at::Tensor first = at::searchsorted(own, at::arange(ix.buckets + 1, longs),
                                              /*out_int32=*/false, /*right=*/false);
    const auto fill_records = records_kernel<K>;
    const int64_t record_grid =
        index_grid(device, reinterpret_cast<const void*>(fill_records), ix.buckets + 1);
    APLOSS_LAUNCH(fill_records, static_cast<unsigned>(record_grid), kIndexBlock, 0, stream)(
        ix.thresholds.const_data_ptr<K>(), first.const_data_ptr<int64_t>(), ix.buckets,
        reinterpret_cast<BucketRecord<K>*>(ix.records.data_ptr()));
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return ix;
}

}  // namespace gpu
}  // namespace aploss
