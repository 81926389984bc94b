// One ranking on the GPU, from the gather to the positive stage without a host sync: the
// buffers its kernels share, laid out in one workspace allocation, and the kernels' host
// entry points. The workspace is sized for a capacity of C positives before the count P
// is known on the host; every kernel reads P from the workspace's meta words and the host
// reads them once, after the positive stage (ranking_forward_cuda.cu).
//
//   gather          labels -> packed entry classes, the positives' sort keys (one pass)
//   rank_positives  one block: sorts the positives, builds the interval index
//   pass 1          entries -> per-interval counts and fixed-point offset sums
//   positive stage  one block: fp(i), ranks among the positives, the loss, pass 2's pieces
//   pass 2          entries -> gradient (backward), the positives' gradients scattered
//
// The backward keeps the workspace (the index and the pieces) and the entry classes.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Optional.h>

#include <cstdint>
#include <cstring>

#include "../aploss/intervals.h"
#include "cuda_common.cuh"

namespace aploss {
namespace gpu {

// The workspace's first words (int64): what the host reads after the forward.
enum RankingMeta : int {
  kMetaCount = 0,        // P, the positives the gather found (atomic counter)
  kMetaBadLabel = 1,     // first invalid label (INT64_MAX: none)
  kMetaBadPositive = 2,  // first non-finite positive score
  kMetaBadNegative = 3,  // first non-finite negative score (pass 1)
  kMetaBadValue = 4,     // first positive whose value (aLRP regression loss) is invalid
  kMetaRanked = 5,       // 1 when rank_positives built the index (0 < P <= capacity, no error)
  kMetaWords = 8,
};

// Per interval of the index: how many negatives' keys fall in it, and the sum of their
// offsets from its left end in units of 2 delta, in fixed point (kFixedBits fraction bits
// for float keys, kFixedBitsDouble for double keys) as a 128-bit integer (lo, hi).
struct IntervalSums {
  unsigned long long count;
  unsigned long long lo;
  unsigned long long hi;
};

template <typename K>
struct FixedPoint;
template <>
struct FixedPoint<float> {
  static constexpr int kBits = 32;
};
template <>
struct FixedPoint<double> {
  static constexpr int kBits = 52;
};

// Rows of P + 1 doubles that a positive stage works in: 9 for its arrays, 7 for the sums
// under a second key (cuda_block.cuh, kKeyScratchRows).
constexpr int kStageRows = 16;

// Byte offsets of the workspace's parts for a capacity of C positives and keys of
// `key_bytes` (4 or 8).
struct RankingLayout {
  int64_t capacity = 0;
  int64_t key_bytes = 0;
  int64_t meta = 0;
  int64_t raw_key = 0;       // C uint64: the gathered sort keys (in no order)
  int64_t raw_position = 0;  // C int64: their flat positions
  int64_t raw_value = 0;     // C double: their values (Rank & Sort's targets)
  int64_t q = 0;             // C double: sorted scores
  int64_t shift = 0;         // C double: cluster shifts
  int64_t position = 0;      // C int64: flat positions, sorted like q
  int64_t value = 0;         // C double: values, sorted like q
  int64_t window_lo = 0;     // C int32: each positive's window among the positives
  int64_t window_hi = 0;     // C int32
  int64_t w = 0;             // C double: each positive's weight in the negatives' gradients
  int64_t thresholds = 0;    // 2C + kThresholdPadding keys
  int64_t lo_of = 0;         // 2C + 1 int32: the window of every interval
  int64_t hi_of = 0;         // 2C + 1 int32
  int64_t frame = 0;         // 2 keys: bucket origin and scale
  int64_t records = 0;       // max_buckets(C) + 1 BucketRecord<K>
  int64_t sums = 0;          // 2C + 1 IntervalSums
  int64_t pieces = 0;        // 2C + 1 IntervalGradient<K>
  int64_t memory_rank = 0;   // C int32: each sorted positive's rank by position (aLRP)
  int64_t scratch = 0;       // kStageRows (C + 1) doubles: the positive stage's arrays
  int64_t bytes = 0;
};

RankingLayout ranking_layout(int64_t capacity, int64_t key_bytes);
// The capacity whose layout has exactly `bytes` (the inverse of ranking_layout(...).bytes).
int64_t ranking_capacity(int64_t bytes, int64_t key_bytes);

// Buckets of the index of 2P thresholds (intervals.h).
APLOSS_HD int64_t index_buckets(int64_t num_pos) {
  const int64_t wanted = kBucketsPerThreshold * 2 * num_pos;
  return wanted < kMaxIntervalBuckets ? (wanted > 0 ? wanted : 1) : kMaxIntervalBuckets;
}

// Pointers into one workspace (passed to kernels by value).
template <typename K>
struct RankingBuffers {
  long long* meta;
  unsigned long long* raw_key;
  long long* raw_position;
  double* raw_value;
  double* q;
  double* shift;
  long long* position;
  double* value;
  int32_t* window_lo;
  int32_t* window_hi;
  double* w;
  K* thresholds;
  int32_t* lo_of;
  int32_t* hi_of;
  K* frame;
  BucketRecord<K>* records;
  IntervalSums* sums;
  IntervalGradient<K>* pieces;
  int32_t* memory_rank;
  double* scratch;
  int64_t capacity;
};

template <typename K>
RankingBuffers<K> ranking_buffers(const at::Tensor& workspace);

#if defined(__CUDACC__) || defined(APLOSS_SIMT)
// The interval index of the P positives of a ranked workspace.
template <typename K>
__device__ __forceinline__ IntervalIndex<K> device_index(const RankingBuffers<K>& r,
                                                         int64_t num_pos) {
  return {r.thresholds, 2 * num_pos, r.records, index_buckets(num_pos), r.frame[0], r.frame[1]};
}

// The sort key of a positive: its key's bits in an order-preserving unsigned form; for
// float keys with the entry's position (< 2^32) in the low half, so that equal scores
// sort by position.
__device__ __forceinline__ unsigned long long sort_bits(float key) {
  unsigned int u;
  memcpy(&u, &key, sizeof u);
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}
__device__ __forceinline__ unsigned long long sort_bits(double key) {
  unsigned long long u;
  memcpy(&u, &key, sizeof u);
  return (u & 0x8000000000000000ull) ? ~u : (u | 0x8000000000000000ull);
}
template <typename K>
__device__ __forceinline__ K key_of_sort_bits(unsigned long long bits);
template <>
__device__ __forceinline__ float key_of_sort_bits<float>(unsigned long long bits) {
  unsigned int u = static_cast<unsigned int>(bits >> 32);
  u = (u & 0x80000000u) ? (u & 0x7fffffffu) : ~u;
  float key;
  memcpy(&key, &u, sizeof key);
  return key;
}
template <>
__device__ __forceinline__ double key_of_sort_bits<double>(unsigned long long bits) {
  const unsigned long long u =
      (bits & 0x8000000000000000ull) ? (bits & 0x7fffffffffffffffull) : ~bits;
  double key;
  memcpy(&key, &u, sizeof key);
  return key;
}
#endif

// ---- the stages' host entry points (each launches one kernel on the current stream) ----

enum class LabelRule { kLabels, kTargets };  // 1 / 0 / -1, or Rank & Sort's targets

// Zeroes the meta words; gathers the classes of every entry into `classes` (one uint64
// per 32 entries: bit b of the low word: entry 32 w + b is a negative; of the high word: a
// positive) and the positives' sort keys (and, for targets, their values).
void launch_gather(const at::Tensor& scores, const at::Tensor& labels, LabelRule rule,
                   const at::Tensor& workspace, const at::Tensor& classes);

// The most positives the one-block sort holds on `device` (a power of two; cached).
int64_t ranking_sort_capacity(int device);

// The one-block sort of the gathered positives and the index over them. `order` (int64,
// P): the slots of the gathered positives in sorted order, when the host sorted them
// (undefined: the block sorts them in shared memory). `position_in_key`: the gather put
// each float key's position in its sort key's low half (else equal keys are ordered by a
// lookup of their positions). With `memory_ranks`, also each positive's rank by position,
// from `sorted_positions` (int64, P) where the host sorted them.
void launch_rank_positives(const at::Tensor& workspace, at::ScalarType key_dtype, double delta,
                           const at::Tensor& order, bool position_in_key, bool memory_ranks,
                           const at::Tensor& sorted_positions);

// What a positive stage writes, sized for the workspace's capacity C (ranking_forward_cuda.cu).
struct StageTensors {
  at::Tensor loss;            // 0-dim, scores' dtype
  at::Tensor parts;           // Rank & Sort: (2,) float64
  at::Tensor positive_grads;  // (C, 2) float64
  at::Tensor loc_weights;     // aLRP: (C,) float64
  at::Tensor offsets;         // (2,) int64
};

// The loss's positive stage (one block): fp(i) from pass 1's sums, or `given_fp` (P
// float64: a ranking across processes).
void launch_positive_stage(const RankingInputs& in, const at::Tensor& workspace,
                           const at::Tensor& given_fp, const StageTensors& out);

// Pass 1 over the entries: the per-interval sums; flags the first non-finite negative.
void launch_pass1(const at::Tensor& scores, const at::Tensor& classes,
                  const at::Tensor& workspace, double delta);

}  // namespace gpu
}  // namespace aploss
