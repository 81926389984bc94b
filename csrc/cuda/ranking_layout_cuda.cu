// The workspace of one ranking on the GPU (ranking_cuda.cuh): where each part lives.
#include <ATen/ATen.h>

#include "ranking_cuda.cuh"

namespace aploss {
namespace gpu {
namespace {

constexpr int64_t kAlign = 16;

int64_t aligned(int64_t bytes) { return (bytes + kAlign - 1) / kAlign * kAlign; }

}  // namespace

RankingLayout ranking_layout(int64_t capacity, int64_t key_bytes) {
  RankingLayout l;
  l.capacity = capacity;
  l.key_bytes = key_bytes;
  const int64_t c = capacity;
  const int64_t intervals = 2 * c + 1;
  int64_t at = 0;
  const auto take = [&](int64_t& field, int64_t bytes) {
    field = at;
    at += aligned(bytes);
  };
  take(l.meta, kMetaWords * 8);
  take(l.raw_key, c * 8);
  take(l.raw_position, c * 8);
  take(l.raw_value, c * 8);
  take(l.q, c * 8);
  take(l.shift, c * 8);
  take(l.position, c * 8);
  take(l.value, c * 8);
  take(l.window_lo, c * 4);
  take(l.window_hi, c * 4);
  take(l.w, c * 8);
  take(l.thresholds, (2 * c + kThresholdPadding) * key_bytes);
  take(l.lo_of, intervals * 4);
  take(l.hi_of, intervals * 4);
  take(l.frame, 2 * key_bytes);
  take(l.records, (index_buckets(c) + 1) * 4 * key_bytes);
  take(l.sums, intervals * static_cast<int64_t>(sizeof(IntervalSums)));
  take(l.pieces, intervals * 4 * key_bytes);
  take(l.memory_rank, c * 4);
  take(l.scratch, kStageRows * (c + 1) * 8);
  l.bytes = at;
  return l;
}

int64_t ranking_capacity(int64_t bytes, int64_t key_bytes) {
  // The size grows strictly with the capacity: bisect.
  int64_t lo = 0, hi = 1;
  while (ranking_layout(hi, key_bytes).bytes < bytes) hi *= 2;
  while (lo < hi) {
    const int64_t mid = lo + (hi - lo) / 2;
    if (ranking_layout(mid, key_bytes).bytes < bytes) {
      lo = mid + 1;
    } else {
      hi = mid;
    }
  }
  TORCH_CHECK(ranking_layout(lo, key_bytes).bytes == bytes,
              "aploss: a ranking workspace of ", bytes, " bytes matches no capacity");
  return lo;
}

template <typename K>
RankingBuffers<K> ranking_buffers(const at::Tensor& workspace) {
  const RankingLayout l = ranking_layout(ranking_capacity(workspace.numel(), sizeof(K)), sizeof(K));
  char* base = static_cast<char*>(workspace.data_ptr());
  RankingBuffers<K> r;
  r.meta = reinterpret_cast<long long*>(base + l.meta);
  r.raw_key = reinterpret_cast<unsigned long long*>(base + l.raw_key);
  r.raw_position = reinterpret_cast<long long*>(base + l.raw_position);
  r.raw_value = reinterpret_cast<double*>(base + l.raw_value);
  r.q = reinterpret_cast<double*>(base + l.q);
  r.shift = reinterpret_cast<double*>(base + l.shift);
  r.position = reinterpret_cast<long long*>(base + l.position);
  r.value = reinterpret_cast<double*>(base + l.value);
  r.window_lo = reinterpret_cast<int32_t*>(base + l.window_lo);
  r.window_hi = reinterpret_cast<int32_t*>(base + l.window_hi);
  r.w = reinterpret_cast<double*>(base + l.w);
  r.thresholds = reinterpret_cast<K*>(base + l.thresholds);
  r.lo_of = reinterpret_cast<int32_t*>(base + l.lo_of);
  r.hi_of = reinterpret_cast<int32_t*>(base + l.hi_of);
  r.frame = reinterpret_cast<K*>(base + l.frame);
  r.records = reinterpret_cast<BucketRecord<K>*>(base + l.records);
  r.sums = reinterpret_cast<IntervalSums*>(base + l.sums);
  r.pieces = reinterpret_cast<IntervalGradient<K>*>(base + l.pieces);
  r.memory_rank = reinterpret_cast<int32_t*>(base + l.memory_rank);
  r.scratch = reinterpret_cast<double*>(base + l.scratch);
  r.capacity = l.capacity;
  return r;
}

template RankingBuffers<float> ranking_buffers<float>(const at::Tensor&);
template RankingBuffers<double> ranking_buffers<double>(const at::Tensor&);

}  // namespace gpu
}  // namespace aploss
