// The sorted passes and the gather four entries at a time with AVX2, for float keys
// (float32, float16 and bfloat16 scores; ../aploss/intervals.h). Chosen at run time:
// elsewhere, and for float64 scores, every entry takes the scalar path.
//
// The lanes are the scalar path's functions with the same operations in the same order
// (no FMA), so every decision and value equals the scalar path's bit for bit; the test
// suite compares the two (_set_cpu_vector_lanes).
#pragma once

#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <cstdint>
#include <cstring>
#include <type_traits>
#include <vector>

#include "../aploss/code_layout.h"
#include "../aploss/grouped_intervals.h"
#include "../aploss/intervals.h"
#include "../aploss/math.h"

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define APLOSS_AVX2_LANES 1
#define APLOSS_AVX2 __attribute__((target("avx2,f16c")))
#define APLOSS_AVX2_INLINE __attribute__((target("avx2,f16c"), always_inline)) inline
#endif

namespace aploss {
namespace cpu {

// Entries per block of the passes: a multiple of 64 (one bit per entry in a word).
constexpr int64_t kBlock = 256;
// Pass 1 slots after the last interval that collect what counts for nothing (other
// labels, scores below every window, entries left to the scalar path), one per lane
// position so that consecutive such entries do not wait on each other's addition.
constexpr int64_t kTrashSlots = 8;

// Whether the passes use the AVX2 lanes (the default where the CPU has AVX2 and F16C) or
// the scalar per-entry functions for every entry.
void set_cpu_vector_lanes(bool enabled);
bool cpu_vector_lanes();

// The lanes hold interval numbers (and record offsets, at most 2 x 2^22) in int32.
inline bool lanes_fit(int64_t intervals) { return intervals < (int64_t(1) << 29); }

// Whether this CPU runs the lanes (AVX2 and F16C).
inline bool cpu_has_avx2() {
#ifdef APLOSS_AVX2_LANES
  static const bool supported = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("f16c");
  return supported;
#else
  return false;
#endif
}

// Ids broadcast with a short period over consecutive entries (one ranking per class over
// (N / C, C) scores): the four frames of the entries from any offset in the period, as the
// lanes' FramePerEntry would load and transpose them, built once per pass. Entry j of a
// block reads frames[j] of the table from the block's first entry's offset.
struct alignas(32) LaneFrames {
  float origin[4], scale[4], last[4];
  int32_t record_base[4];
  double shift[4];  // each group's one cluster shift (when every group is one cluster)
};

// The table for ids of period c.period repeated once (c.repeat == 1): entries from every
// offset e of the period, then `ahead` more so that a block never wraps (frames[e] for
// e >= period is frames[e - period]). group_shift: as FramePerEntry's, or null.
inline std::vector<LaneFrames> periodic_lane_frames(const GroupedIntervalIndex<float>& g,
                                                    const CodeLayout& c,
                                                    const double* group_shift, int64_t ahead) {
  std::vector<LaneFrames> table(static_cast<size_t>(c.period + ahead));
  for (int64_t e = 0; e < c.period + ahead; ++e) {
    LaneFrames& t = table[e];
    for (int l = 0; l < 4; ++l) {
      const int32_t code = in_range_code(c.codes[(e + l) % c.period], g.num_groups);
      const GroupFrame<float>& f = g.frames[code];
      t.origin[l] = f.origin;
      t.scale[l] = f.scale;
      t.last[l] = static_cast<float>(f.buckets - 1);
      t.record_base[l] = static_cast<int32_t>(f.record_base);
      t.shift[l] = group_shift != nullptr ? group_shift[code] : 0.0;
    }
  }
  return table;
}

#ifdef APLOSS_AVX2_LANES

// The scores and labels of the entries this far ahead are prefetched by hand: the
// hardware's stream prefetch alone falls behind, more so once the index outgrows the L2
// (from about 15,000 positives) and its random reads miss too. Measured, one thread,
// N = 4M, init regime: ap_loss at P = 40,000 from 59 to 47 ms, at P = 4,000 from 30 to
// 28 ms; 128 to 512 entries ahead read alike. The gather's labels likewise.
constexpr int64_t kStreamAhead = 256;

template <typename scalar_t, typename label_t>
APLOSS_AVX2_INLINE void prefetch_stream(const scalar_t* s, const label_t* y, int64_t j) {
  __builtin_prefetch(s + j + kStreamAhead);
  __builtin_prefetch(y + j + kStreamAhead);
}

// ---------------------------------------------------------------------------------
// Four float keys.
template <typename scalar_t>
APLOSS_AVX2_INLINE __m128 load_keys(const scalar_t* s);
template <>
APLOSS_AVX2_INLINE __m128 load_keys<float>(const float* s) {
  return _mm_loadu_ps(s);
}
template <>
APLOSS_AVX2_INLINE __m128 load_keys<c10::Half>(const c10::Half* s) {
  return _mm_cvtph_ps(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(s)));
}
template <>
APLOSS_AVX2_INLINE __m128 load_keys<c10::BFloat16>(const c10::BFloat16* s) {
  const __m128i wide = _mm_cvtepu16_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(s)));
  return _mm_castsi128_ps(_mm_slli_epi32(wide, 16));
}

// ---------------------------------------------------------------------------------
// Four labels as int32 masks (all ones where true): negative (classify_label ==
// kNegative), positive, and valid (negative, positive or ignored).
struct LabelMasks {
  __m128i negative, positive, valid;
};

// Four 64-bit lane masks as four 32-bit masks.
APLOSS_AVX2_INLINE __m128i narrow(__m256i v) {
  return _mm256_castsi256_si128(
      _mm256_permutevar8x32_epi32(v, _mm256_setr_epi32(0, 2, 4, 6, 0, 2, 4, 6)));
}

APLOSS_AVX2_INLINE LabelMasks masks_of_int32(__m128i y, bool has_ignored) {
  const __m128i negative = _mm_cmpeq_epi32(y, _mm_setzero_si128());
  const __m128i positive = _mm_cmpeq_epi32(y, _mm_set1_epi32(1));
  __m128i valid = _mm_or_si128(negative, positive);
  if (has_ignored) valid = _mm_or_si128(valid, _mm_cmpeq_epi32(y, _mm_set1_epi32(-1)));
  return {negative, positive, valid};
}

APLOSS_AVX2_INLINE __m128i four_bytes(const void* y) {
  int32_t four;
  std::memcpy(&four, y, 4);
  return _mm_cvtsi32_si128(four);
}

template <typename label_t>
APLOSS_AVX2_INLINE LabelMasks label_masks(const label_t* y);
template <>
APLOSS_AVX2_INLINE LabelMasks label_masks<int8_t>(const int8_t* y) {
  return masks_of_int32(_mm_cvtepi8_epi32(four_bytes(y)), true);
}
template <>
APLOSS_AVX2_INLINE LabelMasks label_masks<uint8_t>(const uint8_t* y) {
  return masks_of_int32(_mm_cvtepu8_epi32(four_bytes(y)), false);  // 255 is invalid
}
template <>
APLOSS_AVX2_INLINE LabelMasks label_masks<bool>(const bool* y) {
  const __m128i negative = _mm_cmpeq_epi32(_mm_cvtepu8_epi32(four_bytes(y)), _mm_setzero_si128());
  const __m128i ones = _mm_set1_epi32(-1);
  return {negative, _mm_xor_si128(negative, ones), ones};
}
template <>
APLOSS_AVX2_INLINE LabelMasks label_masks<int32_t>(const int32_t* y) {
  return masks_of_int32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(y)), true);
}
template <>
APLOSS_AVX2_INLINE LabelMasks label_masks<int64_t>(const int64_t* y) {
  // Compared as int64: 2^32 + 1 is invalid, not positive.
  const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(y));
  const __m128i negative = narrow(_mm256_cmpeq_epi64(v, _mm256_setzero_si256()));
  const __m128i positive = narrow(_mm256_cmpeq_epi64(v, _mm256_set1_epi64x(1)));
  const __m128i ignored = narrow(_mm256_cmpeq_epi64(v, _mm256_set1_epi64x(-1)));
  return {negative, positive, _mm_or_si128(_mm_or_si128(negative, positive), ignored)};
}
template <>
APLOSS_AVX2_INLINE LabelMasks label_masks<float>(const float* y) {
  const __m128 v = _mm_loadu_ps(y);
  const __m128i negative = _mm_castps_si128(_mm_cmp_ps(v, _mm_setzero_ps(), _CMP_EQ_OQ));
  const __m128i positive = _mm_castps_si128(_mm_cmp_ps(v, _mm_set1_ps(1.0f), _CMP_EQ_OQ));
  const __m128i ignored = _mm_castps_si128(_mm_cmp_ps(v, _mm_set1_ps(-1.0f), _CMP_EQ_OQ));
  return {negative, positive, _mm_or_si128(_mm_or_si128(negative, positive), ignored)};
}
template <>
APLOSS_AVX2_INLINE LabelMasks label_masks<double>(const double* y) {
  const __m256d v = _mm256_loadu_pd(y);
  const __m128i negative =
      narrow(_mm256_castpd_si256(_mm256_cmp_pd(v, _mm256_setzero_pd(), _CMP_EQ_OQ)));
  const __m128i positive =
      narrow(_mm256_castpd_si256(_mm256_cmp_pd(v, _mm256_set1_pd(1.0), _CMP_EQ_OQ)));
  const __m128i ignored =
      narrow(_mm256_castpd_si256(_mm256_cmp_pd(v, _mm256_set1_pd(-1.0), _CMP_EQ_OQ)));
  return {negative, positive, _mm_or_si128(_mm_or_si128(negative, positive), ignored)};
}

APLOSS_AVX2_INLINE uint32_t bits_of(__m128i mask) {
  return static_cast<uint32_t>(_mm_movemask_ps(_mm_castsi128_ps(mask)));
}

APLOSS_AVX2_INLINE void set_bits(uint64_t* words, int64_t j, uint32_t four) {
  words[j >> 6] |= static_cast<uint64_t>(four) << (j & 63);
}

// ---------------------------------------------------------------------------------
// What the lanes are told (the SIMD frames below are made inside the AVX2 functions):
// one index for the block, with its cluster shift when every interval has the same; or
// a block's codes (each in [0, frames)) and the grouped index, with each group's shift
// when every group is one cluster.
struct OneIndex {
  const IntervalIndex<float>* index;
  bool one_cluster;
  double cluster_shift;
};
struct BlockCodes {
  const int32_t* codes;
  const GroupedIntervalIndex<float>* index;
  const double* group_shift;
};
// The LaneFrames table (above) from the block's first entry's offset in the period.
struct PeriodicCodes {
  const LaneFrames* frames;
  const GroupedIntervalIndex<float>* index;
  bool one_cluster;
};

// Where the bucket records of four keys are. OneFrame: one index for the block (a single
// ranking, or a block of one group), its constants broadcast once per block (the stores
// of a block could alias the IntervalIndex, which the compiler would otherwise reload).
// FramePerEntry: each entry's own group's frame (../aploss/grouped_intervals.h), read by
// the block's codes. Both give the record indices key_bucket gives, bit for bit.
struct OneFrame {
  __m128 origin, scale, last;
  const long long* records;  // each BucketRecord<float> as two 8-byte halves
  bool one_cluster;
  __m256d cluster_shift;

  APLOSS_AVX2_INLINE explicit OneFrame(const OneIndex& one)
      : origin(_mm_set1_ps(one.index->origin)), scale(_mm_set1_ps(one.index->scale)),
        last(_mm_set1_ps(static_cast<float>(one.index->buckets - 1))),
        records(reinterpret_cast<const long long*>(one.index->records)),
        one_cluster(one.one_cluster), cluster_shift(_mm256_set1_pd(one.cluster_shift)) {}

  APLOSS_AVX2_INLINE __m128i record_indices(int64_t, __m128 v) const {
    return bucket_of(v, origin, scale, last);
  }

  // All ones where a key is at or above the frame's first threshold (not for NaN): below
  // it, the window is empty and the entry counts nothing in pass 1.
  APLOSS_AVX2_INLINE __m128i reaches_first_threshold(int64_t, __m128 v) const {
    return _mm_castps_si128(_mm_cmp_ps(v, origin, _CMP_GE_OQ));
  }

  // The cluster shifts of four entries in intervals m (pass 1's offsets).
  APLOSS_AVX2_INLINE __m256d shifts(int64_t, __m128i m, const double* interval_shift) const {
    return one_cluster ? cluster_shift : _mm256_i32gather_pd(interval_shift, m, 8);
  }

  // The record index of four keys in four groups' frames (../aploss/grouped_intervals.h).
  // A key below its group's first threshold reads record 0 (interval 0's) instead of its
  // group's first bucket. Both intervals have an empty window, so pass 1 counts nothing
  // and pass 2's gradient is 0 either way; but interval 0 is a trash slot in pass 1,
  // where the group's first interval is a real one that every such entry of the group
  // would add to in turn (in a trained network, almost every negative), and record 0
  // stays in cache.
  APLOSS_AVX2_INLINE static __m128i record_in_frames(__m128 v, __m128 origin, __m128 scale,
                                                     __m128 last, __m128i record_base) {
    const __m128i record = _mm_add_epi32(bucket_of(v, origin, scale, last), record_base);
    return _mm_andnot_si128(_mm_castps_si128(_mm_cmp_ps(v, origin, _CMP_LT_OQ)), record);
  }

  // key_bucket of four keys: _mm_max_ps(x, 0) gives 0 for NaN, as x > 0 ? x : 0 does.
  APLOSS_AVX2_INLINE static __m128i bucket_of(__m128 v, __m128 origin, __m128 scale,
                                              __m128 last) {
    const __m128 x =
        _mm_min_ps(_mm_max_ps(_mm_mul_ps(_mm_sub_ps(v, origin), scale), _mm_setzero_ps()), last);
    return _mm_cvttps_epi32(x);
  }
};
static_assert(sizeof(BucketRecord<float>) == 16, "a record is two 8-byte halves");

struct FramePerEntry {
  const int32_t* codes;  // the block's, each in [0, frames): an entry's group
  const GroupFrame<float>* frames;
  const long long* records;
  const double* group_shift;  // each group's one cluster shift; null: by interval

  APLOSS_AVX2_INLINE explicit FramePerEntry(const BlockCodes& b)
      : codes(b.codes), frames(b.index->frames),
        records(reinterpret_cast<const long long*>(b.index->records)),
        group_shift(b.group_shift) {}

  APLOSS_AVX2_INLINE __m256d shifts(int64_t j, __m128i m, const double* interval_shift) const {
    if (group_shift == nullptr) return _mm256_i32gather_pd(interval_shift, m, 8);
    return _mm256_setr_pd(group_shift[codes[j]], group_shift[codes[j + 1]],
                          group_shift[codes[j + 2]], group_shift[codes[j + 3]]);
  }

  // record_indices sends the keys below their group's first threshold to interval 0
  // (OneFrame::record_in_frames).
  APLOSS_AVX2_INLINE __m128i reaches_first_threshold(int64_t, __m128) const {
    return _mm_set1_epi32(-1);
  }

  APLOSS_AVX2_INLINE __m128i record_indices(int64_t j, __m128 v) const {
    // Each lane's frame is four 4-byte fields: four loads and a transpose.
    const float* base = &frames[0].origin;
    __m128 origin = _mm_loadu_ps(base + 4 * static_cast<int64_t>(codes[j]));
    __m128 scale = _mm_loadu_ps(base + 4 * static_cast<int64_t>(codes[j + 1]));
    __m128 buckets = _mm_loadu_ps(base + 4 * static_cast<int64_t>(codes[j + 2]));
    __m128 record_base = _mm_loadu_ps(base + 4 * static_cast<int64_t>(codes[j + 3]));
    _MM_TRANSPOSE4_PS(origin, scale, buckets, record_base);
    const __m128 last =
        _mm_cvtepi32_ps(_mm_sub_epi32(_mm_castps_si128(buckets), _mm_set1_epi32(1)));
    return OneFrame::record_in_frames(v, origin, scale, last, _mm_castps_si128(record_base));
  }
};
static_assert(sizeof(GroupFrame<float>) == 16, "a frame is four 4-byte fields");

// FramePerEntry's record indices and shifts, bit for bit, from the period's table: four
// aligned loads instead of four codes, four frames and a transpose.
struct PeriodicFrames {
  const LaneFrames* frames;
  const long long* records;
  bool one_cluster;

  APLOSS_AVX2_INLINE explicit PeriodicFrames(const PeriodicCodes& p)
      : frames(p.frames), records(reinterpret_cast<const long long*>(p.index->records)),
        one_cluster(p.one_cluster) {}

  APLOSS_AVX2_INLINE __m256d shifts(int64_t j, __m128i m, const double* interval_shift) const {
    return one_cluster ? _mm256_load_pd(frames[j].shift)
                       : _mm256_i32gather_pd(interval_shift, m, 8);
  }

  APLOSS_AVX2_INLINE __m128i reaches_first_threshold(int64_t, __m128) const {
    return _mm_set1_epi32(-1);
  }

  APLOSS_AVX2_INLINE __m128i record_indices(int64_t j, __m128 v) const {
    const LaneFrames& f = frames[j];
    return OneFrame::record_in_frames(
        v, _mm_load_ps(f.origin), _mm_load_ps(f.scale), _mm_load_ps(f.last),
        _mm_load_si128(reinterpret_cast<const __m128i*>(f.record_base)));
  }
};

APLOSS_AVX2_INLINE OneFrame lanes_of(const OneIndex& one) { return OneFrame(one); }
APLOSS_AVX2_INLINE FramePerEntry lanes_of(const BlockCodes& b) { return FramePerEntry(b); }
APLOSS_AVX2_INLINE PeriodicFrames lanes_of(const PeriodicCodes& p) { return PeriodicFrames(p); }

// direct_interval of four finite keys: m where `direct` (all ones); the other lanes' m
// is not meant to be used. first: each bucket record's first threshold, from which the
// scalar path finds the interval of a key its record does not settle.
struct DirectIntervals {
  __m128i m, direct, first;
};

// Entries ahead of use whose records the lanes prefetch (at P = 40,000 the records
// outgrow L2: pass 1 and pass 2 ~25% faster there; 16 to 64 measured alike; at
// P = 4,000, where they fit, pass 2 is ~10% faster with them than without).
constexpr int64_t kPrefetchAhead = 32;

// The record index of every entry of a block, each computed once: those of the entries
// kPrefetchAhead ahead while the block is swept, their records pulled in (read at
// random; a gather waits for its slowest line, a prefetch does not). Near the block's
// end, the next block's first entries (up to `readable`) are computed for their
// prefetch alone.
template <typename Frames>
struct RecordIndices {
  alignas(16) int32_t at[kBlock];

  // Before the sweep over entries [0, m): the first kPrefetchAhead entries' indices.
  template <typename scalar_t>
  APLOSS_AVX2_INLINE void start(const Frames& f, const scalar_t* s, int64_t m) {
    for (int64_t j = 0; j < m && j < kPrefetchAhead; j += 4) store(f, s, j);
  }
  // At entry j of the sweep: entry j + kPrefetchAhead's index and records; entry j's index.
  template <typename scalar_t>
  APLOSS_AVX2_INLINE __m128i next(const Frames& f, const scalar_t* s, int64_t j, int64_t m,
                                  int64_t readable) {
    const int64_t ahead = j + kPrefetchAhead;
    if (ahead < m) {
      store(f, s, ahead);
      prefetch(f, _mm_load_si128(reinterpret_cast<const __m128i*>(at + ahead)));
    } else if (ahead + 4 <= readable) {
      prefetch(f, f.record_indices(ahead, load_keys(s + ahead)));
    }
    return _mm_load_si128(reinterpret_cast<const __m128i*>(at + j));
  }

 private:
  template <typename scalar_t>
  APLOSS_AVX2_INLINE void store(const Frames& f, const scalar_t* s, int64_t j) {
    _mm_store_si128(reinterpret_cast<__m128i*>(at + j), f.record_indices(j, load_keys(s + j)));
  }
  APLOSS_AVX2_INLINE static void prefetch(const Frames& f, __m128i records) {
    alignas(16) int32_t r[4];
    _mm_store_si128(reinterpret_cast<__m128i*>(r), records);
    for (int l = 0; l < 4; ++l) {
      _mm_prefetch(reinterpret_cast<const char*>(f.records + 2 * static_cast<int64_t>(r[l])),
                   _MM_HINT_T0);
    }
  }
};

// direct_interval of four finite keys v whose bucket records are `record`.
template <typename Frames>
APLOSS_AVX2_INLINE DirectIntervals direct_intervals(const Frames& f, __m128i record, __m128 v) {
  const __m128i half = _mm_slli_epi32(record, 1);  // in 8-byte units
  static_assert(kIntervalCandidates == 2, "two candidates per lane");
  const __m256i next01 = _mm256_i32gather_epi64(f.records, half, 8);      // {U_f, U_f+1}
  const __m256i next2_first = _mm256_i32gather_epi64(f.records + 1, half, 8);  // {U_f+2, f}
  const __m256i deal = _mm256_setr_epi32(0, 2, 4, 6, 1, 3, 5, 7);
  const __m256 next = _mm256_castsi256_ps(_mm256_permutevar8x32_epi32(next01, deal));
  const __m256i rest = _mm256_permutevar8x32_epi32(next2_first, deal);
  const __m128 t0 = _mm256_castps256_ps128(next), t1 = _mm256_extractf128_ps(next, 1);
  const __m128 t2 = _mm_castsi128_ps(_mm256_castsi256_si128(rest));
  const __m128i first = _mm256_extracti128_si256(rest, 1);
  // A true comparison is -1: subtracting it counts it.
  const __m128i past_t0 = _mm_castps_si128(_mm_cmp_ps(t0, v, _CMP_LE_OQ));
  const __m128i past_t1 = _mm_castps_si128(_mm_cmp_ps(t1, v, _CMP_LE_OQ));
  const __m128i m = _mm_sub_epi32(_mm_sub_epi32(first, past_t0), past_t1);
  const __m128 finite = _mm_cmp_ps(_mm_sub_ps(v, v), _mm_setzero_ps(), _CMP_EQ_OQ);
  const __m128 direct = _mm_and_ps(finite, _mm_cmp_ps(t2, v, _CMP_GT_OQ));
  return {m, _mm_castps_si128(direct), first};
}

// Pass 1 over entries [0, m), m a multiple of 4 and at most kBlock, prefetching the
// records of the entries up to `readable` (sorted_cpu.cpp, pass1_decide): each entry's
// accumulator slot and offset s - shift, and a bit in `flagged` for a negative the scalar
// path must take (its bucket's search, or a non-finite score), with its record's first
// threshold in `first`.
template <typename scalar_t, typename label_t, typename Where>
APLOSS_AVX2 void pass1_lanes(const scalar_t* s, const label_t* y, int64_t m, int64_t readable,
                             const Where& where, const double* shift, int64_t trash,
                             int64_t* slot, double* offset, int32_t* first, uint64_t* flagged) {
  const auto c = lanes_of(where);
  RecordIndices<decltype(c)> records;
  records.start(c, s, m);
  const __m128i trash_slots =
      _mm_add_epi32(_mm_set1_epi32(static_cast<int32_t>(trash)), _mm_setr_epi32(0, 1, 2, 3));
  for (int64_t j = 0; j < m; j += 4) {
    prefetch_stream(s, y, j);
    const __m128i record = records.next(c, s, j, m, readable);
    const __m128 v = load_keys(s + j);
    const LabelMasks labels = label_masks(y + j);
    const DirectIntervals d = direct_intervals(c, record, v);
    const __m128i counted = _mm_and_si128(
        _mm_and_si128(_mm_and_si128(labels.negative, d.direct), c.reaches_first_threshold(j, v)),
        _mm_cmpgt_epi32(d.m, _mm_setzero_si128()));
    // Trash slot j & 7, as pass1_decide: lanes 0-3 or 4-7 of a group of eight.
    const __m128i own_trash =
        _mm_add_epi32(trash_slots, _mm_set1_epi32(static_cast<int32_t>(j & 4)));
    const __m128i to = _mm_blendv_epi8(own_trash, d.m, counted);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(slot + j), _mm256_cvtepi32_epi64(to));
    const __m256d sh = c.shifts(j, _mm_and_si128(counted, d.m), shift);
    _mm256_storeu_pd(offset + j, _mm256_sub_pd(_mm256_cvtps_pd(v), sh));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(first + j), d.first);
    set_bits(flagged, j, bits_of(_mm_andnot_si128(d.direct, labels.negative)));
  }
}

// Four float32 gradients into g (converted to scalar_t as the scalar path converts).
template <typename scalar_t>
APLOSS_AVX2_INLINE void store_gradients(scalar_t* g, __m128 value) {
  alignas(16) float lanes[4];
  _mm_store_ps(lanes, value);
  for (int l = 0; l < 4; ++l) g[l] = static_cast<scalar_t>(lanes[l]);
}
template <>
APLOSS_AVX2_INLINE void store_gradients<float>(float* g, __m128 value) {
  _mm_storeu_ps(g, value);
}

// Pass 2 is two sweeps over a block of entries: the intervals of the whole block first,
// then their gradients, so that no entry's piece load waits on its own record; between
// the two, the scalar path settles the flagged entries.
struct Pass2Block {
  alignas(16) int32_t at[kBlock];     // the interval of each entry, 0 where it has no piece
  alignas(16) int32_t used[kBlock];   // all ones where it has
  alignas(16) int32_t first[kBlock];  // its bucket record's first threshold
};

// The first sweep over entries [0, m), m a multiple of 4 and at most kBlock, prefetching
// the records of the entries up to `readable`: each entry's interval, and a bit in
// `flagged` for a negative whose bucket must be searched or whose score is not finite.
template <typename scalar_t, typename label_t, typename Where>
APLOSS_AVX2 void pass2_interval_lanes(const scalar_t* s, const label_t* y, int64_t m,
                                      int64_t readable, const Where& where, Pass2Block& block,
                                      uint64_t* flagged) {
  const auto c = lanes_of(where);
  RecordIndices<decltype(c)> records;
  records.start(c, s, m);
  int32_t* at = block.at;
  int32_t* used = block.used;
  for (int64_t j = 0; j < m; j += 4) {
    prefetch_stream(s, y, j);
    const __m128i record = records.next(c, s, j, m, readable);
    const LabelMasks labels = label_masks(y + j);
    const DirectIntervals d = direct_intervals(c, record, load_keys(s + j));
    const __m128i has_piece = _mm_and_si128(labels.negative, d.direct);
    _mm_store_si128(reinterpret_cast<__m128i*>(at + j), _mm_and_si128(has_piece, d.m));
    _mm_store_si128(reinterpret_cast<__m128i*>(used + j), has_piece);
    _mm_store_si128(reinterpret_cast<__m128i*>(block.first + j), d.first);
    set_bits(flagged, j, bits_of(_mm_andnot_si128(d.direct, labels.negative)));
  }
}

// The second sweep: the gradient of every entry of [0, m) into g (gradient_in_interval
// where it has a piece, 0 elsewhere).
template <typename scalar_t>
APLOSS_AVX2 void pass2_gradient_lanes(const scalar_t* s, int64_t m,
                                      const IntervalGradient<float>* pieces,
                                      const Pass2Block& block, scalar_t* g) {
  const int32_t* at = block.at;
  const int32_t* used = block.used;
  static_assert(sizeof(IntervalGradient<float>) == 16, "loaded as four floats");
  const float* base = &pieces[0].at_left;
  for (int64_t j = 0; j < m; j += 4) {
    // Each lane's piece is four floats: four loads and a transpose.
    __m128 at_left = _mm_load_ps(base + 4 * static_cast<int64_t>(at[j]));
    __m128 slope_per_unit = _mm_load_ps(base + 4 * static_cast<int64_t>(at[j + 1]));
    __m128 left_in_units = _mm_load_ps(base + 4 * static_cast<int64_t>(at[j + 2]));
    __m128 unit = _mm_load_ps(base + 4 * static_cast<int64_t>(at[j + 3]));
    _MM_TRANSPOSE4_PS(at_left, slope_per_unit, left_in_units, unit);
    // gradient_in_interval; 0 for the lanes without a piece (whatever their score).
    const __m128 v = load_keys(s + j);
    const __m128 offset_in_units = _mm_sub_ps(_mm_mul_ps(v, unit), left_in_units);
    const __m128 value = _mm_add_ps(at_left, _mm_mul_ps(slope_per_unit, offset_in_units));
    const __m128 keep = _mm_load_ps(reinterpret_cast<const float*>(used + j));
    store_gradients(g + j, _mm_and_ps(value, keep));
  }
}

// The gather over entries [0, m), m a multiple of 4: a bit in `positive` for each
// positive and in `invalid` for each invalid label.
template <typename label_t>
APLOSS_AVX2 void gather_lanes(const label_t* y, int64_t m, uint64_t* positive, uint64_t* invalid) {
  for (int64_t j = 0; j < m; j += 4) {
    __builtin_prefetch(y + j + kStreamAhead);
    const LabelMasks labels = label_masks(y + j);
    set_bits(positive, j, bits_of(labels.positive));
    set_bits(invalid, j, bits_of(labels.valid) ^ 0xFu);
  }
}

#endif  // APLOSS_AVX2_LANES

// Whether this call can use the lanes: enabled, an AVX2 CPU, float keys, int32 indices.
template <typename K>
inline bool lanes_usable(int64_t intervals) {
#ifdef APLOSS_AVX2_LANES
  return std::is_same<K, float>::value && lanes_fit(intervals) && cpu_vector_lanes() &&
         cpu_has_avx2();
#else
  (void)intervals;
  return false;
#endif
}

}  // namespace cpu
}  // namespace aploss
