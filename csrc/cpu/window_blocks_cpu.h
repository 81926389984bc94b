// The sorted passes' common case, four entries at a time with AVX2 (chosen at run time;
// elsewhere every entry takes the scalar path): each entry's window is looked up
// (math.h, certain_window_id) and its gradient or pass 1 offset computed without
// branches. Entries that need a search, a positive's lookup or an error check are
// marked for the caller's scalar path.
//
// The lanes are math.h's per-entry functions with the same operations in the same order
// (no FMA), so each lane's result equals the scalar path's bit for bit; the test suite
// compares the two (_set_cpu_vector_lanes).
#pragma once

#include <cstdint>
#include <cstring>

#include "../aploss/math.h"

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define APLOSS_AVX2_LANES 1
#define APLOSS_AVX2 __attribute__((target("avx2")))
#define APLOSS_AVX2_INLINE __attribute__((target("avx2"), always_inline)) inline
#endif

namespace aploss {
namespace cpu {

// Pass 1 decisions besides window ids >= 0.
constexpr int32_t kSearch = -1;   // the scalar path decides (find_window, errors)
constexpr int32_t kNothing = -2;  // contributes nothing: not a negative, or pruned

// Whether the passes use the AVX2 lanes (the default where the CPU has AVX2) or the
// scalar per-entry functions for every entry.
void set_cpu_vector_lanes(bool enabled);
bool cpu_vector_lanes();

#ifdef APLOSS_AVX2_LANES

inline bool cpu_has_avx2() {
  static const bool supported = __builtin_cpu_supports("avx2");
  return supported;
}

// Four scores as float64.
template <typename scalar_t>
APLOSS_AVX2_INLINE __m256d load_scores(const scalar_t* s) {
  return _mm256_setr_pd(static_cast<double>(s[0]), static_cast<double>(s[1]),
                        static_cast<double>(s[2]), static_cast<double>(s[3]));
}
template <>
APLOSS_AVX2_INLINE __m256d load_scores<float>(const float* s) {
  return _mm256_cvtps_pd(_mm_loadu_ps(s));
}
template <>
APLOSS_AVX2_INLINE __m256d load_scores<double>(const double* s) {
  return _mm256_loadu_pd(s);
}

// Four labels as int64 lanes (only "== 0" and "== 1" are asked: math.h, classify_label).
template <typename label_t>
APLOSS_AVX2_INLINE __m256i load_labels(const label_t* y) {
  const auto lane = [](label_t v) -> int64_t {
    const int c = classify_label(v);
    return c == kNegative ? 0 : (c == kPositive ? 1 : -1);
  };
  return _mm256_setr_epi64x(lane(y[0]), lane(y[1]), lane(y[2]), lane(y[3]));
}
APLOSS_AVX2_INLINE __m128i four_bytes(const void* y) {
  int32_t four;
  std::memcpy(&four, y, 4);
  return _mm_cvtsi32_si128(four);
}
template <>
APLOSS_AVX2_INLINE __m256i load_labels<int8_t>(const int8_t* y) {
  return _mm256_cvtepi8_epi64(four_bytes(y));
}
template <>
APLOSS_AVX2_INLINE __m256i load_labels<uint8_t>(const uint8_t* y) {
  return _mm256_cvtepu8_epi64(four_bytes(y));  // 255 stays 255: invalid, not -1
}
template <>
APLOSS_AVX2_INLINE __m256i load_labels<bool>(const bool* y) {
  return _mm256_cvtepu8_epi64(four_bytes(y));
}
template <>
APLOSS_AVX2_INLINE __m256i load_labels<int32_t>(const int32_t* y) {
  return _mm256_cvtepi32_epi64(_mm_loadu_si128(reinterpret_cast<const __m128i*>(y)));
}
template <>
APLOSS_AVX2_INLINE __m256i load_labels<int64_t>(const int64_t* y) {
  return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(y));
}

// The low 32 bits of each 64-bit lane (masks and small integers).
APLOSS_AVX2_INLINE __m128i narrow(__m256i v) {
  return _mm256_castsi256_si128(
      _mm256_permutevar8x32_epi32(v, _mm256_setr_epi32(0, 2, 4, 6, 0, 2, 4, 6)));
}

// The index and step constants broadcast to four lanes, once per block (the stores of a
// block could alias the WindowIndex, which the compiler would otherwise reload).
struct Lanes {
  __m256d origin, inv_width, buckets, margin, below_one;  // below_one = 1 - margin
  const int32_t* window_ids;
  __m256d smallest, minus_delta, inv_2delta, half;

  APLOSS_AVX2_INLINE Lanes(const WindowIndex& ix, const StepParams& pr)
      : origin(_mm256_set1_pd(ix.origin)), inv_width(_mm256_set1_pd(ix.inv_width)),
        buckets(_mm256_set1_pd(static_cast<double>(ix.buckets))),
        margin(_mm256_set1_pd(ix.margin)), below_one(_mm256_set1_pd(1.0 - ix.margin)),
        window_ids(ix.window_ids), smallest(_mm256_set1_pd(pr.smallest)),
        minus_delta(_mm256_set1_pd(-pr.delta)), inv_2delta(_mm256_set1_pd(pr.inv_2delta)),
        half(_mm256_set1_pd(0.5)) {}
};

// The lanes of certain_window_id where the bucket alone decides: window ids, or -1 (a
// bucket with a breakpoint is left to the scalar path's certain_window_id).
APLOSS_AVX2_INLINE __m128i window_ids(const Lanes& c, __m256d v) {
  const __m256d x = _mm256_mul_pd(_mm256_sub_pd(v, c.origin), c.inv_width);
  const __m256d in_range = _mm256_and_pd(_mm256_cmp_pd(x, _mm256_setzero_pd(), _CMP_GE_OQ),
                                         _mm256_cmp_pd(x, c.buckets, _CMP_LT_OQ));
  const __m256d inside = _mm256_and_pd(in_range, x);
  const __m128i k = _mm256_cvttpd_epi32(inside);
  const __m256d frac = _mm256_sub_pd(inside, _mm256_cvtepi32_pd(k));
  const __m256d certain =
      _mm256_and_pd(in_range, _mm256_and_pd(_mm256_cmp_pd(frac, c.margin, _CMP_GE_OQ),
                                            _mm256_cmp_pd(frac, c.below_one, _CMP_LE_OQ)));
  const __m128i certain32 = narrow(_mm256_castpd_si256(certain));
  const __m128i id = _mm_i32gather_epi32(c.window_ids, _mm_and_si128(certain32, k), 4);
  return _mm_blendv_epi8(_mm_set1_epi32(-1), _mm_max_epi32(id, _mm_set1_epi32(-1)), certain32);
}

// Pass 1 over entries [0, m), m a multiple of 4: each entry's window id, kSearch or
// kNothing, and its window offset a (where id >= 0).
template <typename scalar_t, typename label_t>
APLOSS_AVX2 void pass1_lanes(const scalar_t* s, const label_t* y, int64_t m,
                             const WindowIndex& ix, const StepParams& pr,
                             const double* window_shift, int32_t* decision, double* offset) {
  const Lanes c(ix, pr);
  const __m256d minus_inf = _mm256_set1_pd(-__builtin_inf());
  for (int64_t j = 0; j < m; j += 4) {
    const __m256d v = load_scores(s + j);
    const __m128i negative =
        narrow(_mm256_cmpeq_epi64(load_labels(y + j), _mm256_setzero_si256()));
    const __m128i id = window_ids(c, v);
    const __m128i valid = _mm_cmpgt_epi32(id, _mm_set1_epi32(-1));
    const __m256d shift = _mm256_i32gather_pd(window_shift, _mm_and_si128(valid, id), 8);
    // window_offset
    const __m256d a =
        _mm256_add_pd(_mm256_mul_pd(_mm256_sub_pd(v, shift), c.inv_2delta), c.half);
    // is_pruned; a pruned -inf is an error the scalar path reports
    const __m128i pruned = narrow(_mm256_castpd_si256(
        _mm256_cmp_pd(_mm256_sub_pd(v, c.smallest), c.minus_delta, _CMP_LE_OQ)));
    const __m128i is_minus_inf =
        narrow(_mm256_castpd_si256(_mm256_cmp_pd(v, minus_inf, _CMP_EQ_OQ)));
    const __m128i if_pruned =
        _mm_blendv_epi8(_mm_set1_epi32(kNothing), _mm_set1_epi32(kSearch), is_minus_inf);
    const __m128i ranked = _mm_blendv_epi8(id, if_pruned, pruned);
    const __m128i d = _mm_blendv_epi8(_mm_set1_epi32(kNothing), ranked, negative);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(decision + j), d);
    _mm256_storeu_pd(offset + j, a);
  }
}

// Four gradients into g (scale * value, converted as the scalar path converts).
template <typename scalar_t>
APLOSS_AVX2_INLINE void store_gradients(scalar_t* g, __m256d v) {
  alignas(32) double lanes[4];
  _mm256_store_pd(lanes, v);
  for (int l = 0; l < 4; ++l) g[l] = static_cast<scalar_t>(lanes[l]);
}
template <>
APLOSS_AVX2_INLINE void store_gradients<float>(float* g, __m256d v) {
  _mm_storeu_ps(g, _mm256_cvtpd_ps(v));
}
template <>
APLOSS_AVX2_INLINE void store_gradients<double>(double* g, __m256d v) {
  _mm256_storeu_pd(g, v);
}

// Pass 2 over entries [0, m), m a multiple of 4: writes scale * gradient of every entry,
// and sets bit j % 64 of search[j / 64] where the scalar path must overwrite it (a
// positive, or a negative whose window is not certain).
template <typename scalar_t, typename label_t>
APLOSS_AVX2 void pass2_lanes(const scalar_t* s, const label_t* y, int64_t m,
                             const WindowIndex& ix, const StepParams& pr,
                             const GradientTerms* terms, double scale, scalar_t* g,
                             uint64_t* search) {
  const Lanes c(ix, pr);
  const __m256d sc = _mm256_set1_pd(scale);
  static_assert(sizeof(GradientTerms) == 4 * sizeof(double), "gathered as 4 doubles");
  const double* base = &terms[0].shift;
  for (int64_t j = 0; j < m; j += 4) {
    const __m256d v = load_scores(s + j);
    const __m256i label = load_labels(y + j);
    const __m256d negative =
        _mm256_castsi256_pd(_mm256_cmpeq_epi64(label, _mm256_setzero_si256()));
    const __m256d positive =
        _mm256_castsi256_pd(_mm256_cmpeq_epi64(label, _mm256_set1_epi64x(1)));
    const __m128i id = window_ids(c, v);
    const __m128i valid = _mm_cmpgt_epi32(id, _mm_set1_epi32(-1));
    // Each lane's terms are one 32-byte row: four loads and a 4x4 transpose.
    alignas(16) int32_t at[4];
    _mm_store_si128(reinterpret_cast<__m128i*>(at), _mm_and_si128(valid, id));
    const __m256d r0 = _mm256_loadu_pd(base + 4 * static_cast<int64_t>(at[0]));
    const __m256d r1 = _mm256_loadu_pd(base + 4 * static_cast<int64_t>(at[1]));
    const __m256d r2 = _mm256_loadu_pd(base + 4 * static_cast<int64_t>(at[2]));
    const __m256d r3 = _mm256_loadu_pd(base + 4 * static_cast<int64_t>(at[3]));
    const __m256d even01 = _mm256_unpacklo_pd(r0, r1), odd01 = _mm256_unpackhi_pd(r0, r1);
    const __m256d even23 = _mm256_unpacklo_pd(r2, r3), odd23 = _mm256_unpackhi_pd(r2, r3);
    const __m256d shift = _mm256_permute2f128_pd(even01, even23, 0x20);
    const __m256d w_diff = _mm256_permute2f128_pd(even01, even23, 0x31);
    const __m256d w_lo = _mm256_permute2f128_pd(odd01, odd23, 0x20);
    const __m256d q_term = _mm256_permute2f128_pd(odd01, odd23, 0x31);
    // gradient_from_terms
    const __m256d a =
        _mm256_add_pd(_mm256_mul_pd(_mm256_sub_pd(v, shift), c.inv_2delta), c.half);
    const __m256d value = _mm256_sub_pd(_mm256_add_pd(w_lo, _mm256_mul_pd(a, w_diff)), q_term);
    // !is_pruned (true for NaN, which the scalar path then sees)
    const __m256d ranked = _mm256_and_pd(
        negative, _mm256_cmp_pd(_mm256_sub_pd(v, c.smallest), c.minus_delta, _CMP_NLE_UQ));
    const __m256d uncertain = _mm256_castsi256_pd(
        _mm256_cvtepi32_epi64(_mm_xor_si128(valid, _mm_set1_epi32(-1))));
    const __m256d searched = _mm256_or_pd(positive, _mm256_and_pd(ranked, uncertain));
    store_gradients(g + j, _mm256_mul_pd(sc, _mm256_and_pd(ranked, value)));
    search[j >> 6] |= static_cast<uint64_t>(_mm256_movemask_pd(searched)) << (j & 63);
  }
}

#endif  // APLOSS_AVX2_LANES

// Whether this call can use the lanes: enabled, an AVX2 CPU, and window ids.
inline bool lanes_usable(const WindowIndex& ix) {
#ifdef APLOSS_AVX2_LANES
  return ix.window_ids != nullptr && cpu_vector_lanes() && cpu_has_avx2();
#else
  (void)ix;
  return false;
#endif
}

}  // namespace cpu
}  // namespace aploss
