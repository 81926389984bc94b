// Sorted (two-pass, O(N log P)) evaluation on the CPU, over the interval index of the
// positives (../aploss/intervals.h): each entry's window is the window of its interval.
//
// Both passes go through the entries in blocks. Where the CPU has AVX2, the lanes
// (interval_lanes_cpu.h) settle the common case four entries at a time and flag the rest
// (a bucket to search, a non-finite score) for the scalar per-entry code; the
// scalar path runs that same per-entry code for every entry, with the same results bit
// for bit.
#include <ATen/ATen.h>

#include <algorithm>
#include <atomic>
#include <memory>
#include <type_traits>
#include <vector>

#include "../aploss/code_layout.h"
#include "../aploss/dispatch.h"
#include "../aploss/errors.h"
#include "../aploss/grouped_intervals.h"
#include "../aploss/intervals.h"
#include "../aploss/kernels.h"
#include "../aploss/math.h"
#include "chunks.h"
#include "cpu_kernels.h"
#include "grouped_interval_index_cpu.h"
#include "interval_index_cpu.h"
#include "interval_lanes_cpu.h"

namespace aploss {
namespace cpu {

namespace {
std::atomic<bool> vector_lanes{true};
}  // namespace

void set_cpu_vector_lanes(bool enabled) { vector_lanes.store(enabled); }
bool cpu_vector_lanes() { return vector_lanes.load(std::memory_order_relaxed); }

namespace {

template <typename scalar_t>
using KeyOf = typename ScoreKey<scalar_t>::type;

template <typename K>
constexpr bool kHasLanes = std::is_same<K, float>::value;

// Runs `block(begin, m)` over [begin, end) in blocks of at most kBlock entries.
template <typename Block>
void for_each_block(int64_t begin, int64_t end, const Block& block) {
  for (int64_t i = begin; i < end; i += kBlock) block(i, std::min(kBlock, end - i));
}

// Calls fn(j) for every set bit j of a block's words, in increasing order.
template <typename Fn>
void for_each_flagged(const uint64_t* words, const Fn& fn) {
  for (int64_t w = 0; w < kBlock / 64; ++w) {
    for (uint64_t bits = words[w]; bits != 0; bits &= bits - 1) fn(64 * w + __builtin_ctzll(bits));
  }
}

// How the entries of a block find their interval: through one index (a single ranking),
// or each through its group's frame of the grouped index (../aploss/grouped_intervals.h).
// A Lookup provides
//   start_block(i, m, end)   the block of entries [i, i + m) of a range ending at `end`
//   uniform()                whether every entry of the block has the same frame
//   frame(j)                 entry i + j's frame, an IntervalIndex<K>
//   lanes(), block_lanes()   what the AVX2 lanes are told (interval_lanes_cpu.h): the
//                            entries' frames, or the block's one frame
//   readable()               entries from i whose frames the lanes may read ahead
template <typename K>
class OneRanking {
 public:
  OneRanking(const IntervalIndex<K>& ix, bool one_cluster, double cluster_shift)
      : ix_(ix), one_cluster_(one_cluster), cluster_shift_(cluster_shift) {}
  void start_block(int64_t i, int64_t, int64_t end) { readable_ = end - i; }
  int64_t readable() const { return readable_; }
  bool uniform() const { return true; }
  const IntervalIndex<K>& frame(int64_t) const { return ix_; }
#ifdef APLOSS_AVX2_LANES
  OneIndex lanes() const { return {&ix_, one_cluster_, cluster_shift_}; }
#endif

 private:
  const IntervalIndex<K>& ix_;
  bool one_cluster_;
  double cluster_shift_;
  int64_t readable_ = 0;
};

// Entries whose codes a grouped block reads: the block and the lanes' look-ahead.
constexpr int64_t kCodesAhead = kBlock + kPrefetchAhead + 4;

// The lanes' table of frames for ids with a short period (interval_lanes_cpu.h,
// LaneFrames: 96 bytes per entry of the period), where a pass over `entries` entries
// repays building it (one ranking per class, up to 2,048 classes); empty otherwise.
template <typename K>
std::vector<LaneFrames> periodic_frames(const GroupedIntervalIndex<K>& g, const CodeLayout& codes,
                                        const double* group_shift, int64_t entries) {
  constexpr int64_t kLongestPeriod = 2048;
  if constexpr (kHasLanes<K>) {
    if (codes.repeat == 1 && codes.period <= kLongestPeriod &&
        entries >= 8 * (codes.period + kCodesAhead) && lanes_usable<K>(0)) {
      return periodic_lane_frames(g, codes, group_shift, kCodesAhead);
    }
  }
  return {};
}

template <typename K>
class GroupedRanking {
 public:
  // group_shift: as OwnedGroupedIndex::group_shifts.
  // periodic: periodic_frames' table, or null.
  GroupedRanking(const GroupedIntervalIndex<K>& g, const CodeLayout& codes,
                 const double* group_shift, const LaneFrames* periodic)
      : g_(g), codes_(codes), group_shift_(group_shift), periodic_(periodic) {}
  void start_block(int64_t i, int64_t m, int64_t end) {
    readable_ = std::min(kCodesAhead, end - i);
    prefetch_codes(i + kBlock, end);
    codes_of_range(codes_, i, readable_, g_.num_groups, code_);
    uniform_ = std::all_of(code_ + 1, code_ + m, [this](int32_t c) { return c == code_[0]; });
    block_ = frame_index(g_, code_[0]);
    phase_ = periodic_ != nullptr ? i % codes_.period : 0;
  }
  bool uniform() const { return uniform_; }
  IntervalIndex<K> frame(int64_t j) const { return uniform_ ? block_ : frame_index(g_, code_[j]); }
#ifdef APLOSS_AVX2_LANES
  OneIndex block_lanes() const {
    return {&block_, group_shift_ != nullptr, group_shift_ ? group_shift_[code_[0]] : 0.0};
  }
  BlockCodes lanes() const { return {code_, &g_, group_shift_}; }
  bool periodic() const { return periodic_ != nullptr; }
  PeriodicCodes periodic_lanes() const {
    return {periodic_ + phase_, &g_, group_shift_ != nullptr};
  }
#endif
  int64_t readable() const { return readable_; }

 private:
  // Codes beyond this many are a stream (one code per entry), not a table in cache.
  static constexpr int64_t kStreamedCodes = int64_t(1) << 16;

  // The codes of the block after this one, pulled in while this one is swept: a stream's
  // copy in start_block otherwise waits on memory (about 1 ms of 23 at N = 4M, 4,096
  // full-size ids, 2 threads).
  void prefetch_codes(int64_t from, int64_t end) const {
    if (codes_.repeat != 1 || codes_.period < kStreamedCodes) return;
    constexpr int64_t kLine = 64 / static_cast<int64_t>(sizeof(int32_t));
    const int64_t to = std::min(end, from + kCodesAhead);
    // One division per block, not one per line (most of this loop's time).
    for (int64_t i = from, at = from % codes_.period; i < to; i += kLine, at += kLine) {
      if (at >= codes_.period) at -= codes_.period;
      __builtin_prefetch(codes_.codes + at);
    }
  }

  const GroupedIntervalIndex<K>& g_;
  CodeLayout codes_;
  const double* group_shift_;
  int32_t code_[kCodesAhead];
  int64_t readable_ = 0;
  bool uniform_ = true;
  IntervalIndex<K> block_{};
  const LaneFrames* periodic_;
  int64_t phase_ = 0;
};

// The intervals' tables (OwnedIntervalIndex, OwnedGroupedIndex): lo, hi, begin (the first
// positive of the interval's segment), left, right, shifts(), intervals().

// Runs the lanes on a block with the Lookup's frames: one broadcast frame when the block
// has one, else the period's table when the ids have a short period, else each entry's.
#ifdef APLOSS_AVX2_LANES
template <typename K, typename Lookup, typename Run>
void with_lanes(const Lookup& lookup, const Run& run) {
  if constexpr (std::is_same<Lookup, OneRanking<K>>::value) {
    run(lookup.lanes());
  } else if (lookup.uniform()) {
    run(lookup.block_lanes());
  } else if (lookup.periodic()) {
    run(lookup.periodic_lanes());
  } else {
    run(lookup.lanes());
  }
}
#endif

// The interval of a finite key whose bucket record does not settle it (its candidates are
// all <= key), from the record's first threshold `first`: the bucket's few thresholds
// after the candidates read in turn, else (a bucket of many) interval_of's search. The
// thresholds of later buckets, and the +inf after the last, are all > key: the reads stop
// within the bucket. (It skips interval_of's second bucket computation and record reads;
// Rank & Sort, whose delta of 0.5 sends about 4% of the keys here at P = 40,000, measured
// 0.97-0.98x the time of interval_of at N = 4M, within the noise of the runs.)
template <typename K, typename Frame>
int64_t interval_after_candidates(const Frame& frame, int64_t first, K key) {
  constexpr int kSteps = 4;
  int64_t m = first + kIntervalCandidates + 1;
  for (int step = 0; step < kSteps; ++step, ++m) {
    if (!(frame.thresholds[m] <= key)) return m;
  }
  return interval_of(frame, key);
}

// Pass 1 of entries [from, m) of a block, one by one: what pass1_lanes computes four at
// a time. A negative whose interval its bucket's record settles counts in the slot of its
// interval, with its offset s - shift, unless that interval counts nothing: interval 0,
// or its group's first (a key below the frame's origin, the group's first threshold: an
// empty window). Every other entry goes to a trash slot; a negative that needs its
// bucket searched, or whose score is not finite, is flagged for the scalar path.
template <typename scalar_t, typename label_t, typename K, typename Lookup>
void pass1_decide(const scalar_t* s, const label_t* y, int64_t from, int64_t m,
                  const Lookup& lookup, const double* shift, int64_t trash, int64_t* slot,
                  double* offset, uint64_t* flagged) {
  for (int64_t j = from; j < m; ++j) {
    const K key = static_cast<K>(s[j]);
    const double v = static_cast<double>(key);
    const bool negative = classify_label(y[j]) == kNegative;
    const auto& frame = lookup.frame(j);
    const int64_t at = is_finite_score(v) ? direct_interval(frame, key) : -1;
    const bool counted = negative && at > 0 && key >= frame.origin;
    slot[j] = counted ? at : trash + (j & 7);
    offset[j] = v - shift[counted ? at : 0];
    if (negative && at < 0) flagged[j >> 6] |= uint64_t(1) << (j & 63);
  }
}

// Pass 1: each chunk counts its negatives per interval, with the sum of their offsets
// s - shift, in private float64 accumulators (pairs {count, sum}); the chunks' sums are
// merged in chunk order (deterministic), and each interval then adds its negatives to
// the difference arrays at once (grouped_intervals.h, accumulate_interval): (3, P+1)
// into `out`. With `record`, each entry's interval as recorded_pass2 reads it: the one it
// counts in, else 0 (every entry whose gradient is 0: not a negative, or an empty window).
template <typename scalar_t, typename label_t, typename K, typename Index, typename MakeLookup>
void pass1_over(const at::Tensor& scores, const at::Tensor& labels, const Index& index,
                MakeLookup make_lookup, double delta, at::Tensor& out,
                uint32_t* record = nullptr) {
  const int64_t n = scores.numel();
  const int64_t width = out.size(1);
  const int64_t intervals = index.intervals();
  const int64_t slots = intervals + kTrashSlots;
  const Chunks chunks = split_into_chunks(n, 2 * slots);
  // Each chunk's accumulator is zeroed by the thread that fills it, so that its lines
  // start in that core's cache (at P = 40,000 one is 1.3 MB).
  const std::unique_ptr<double[]> sums(new double[chunks.count * 2 * slots]);
  std::vector<int64_t> bad_score(chunks.count, -1);
  const double* shift = index.shifts();
  const bool lanes = lanes_usable<K>(index.lanes_span());
  const scalar_t* s = scores.const_data_ptr<scalar_t>();
  const label_t* y = labels.const_data_ptr<label_t>();

  for_each_chunk(chunks, n, [&](int64_t c, int64_t begin, int64_t end) {
    double* acc = sums.get() + c * 2 * slots;
    std::fill(acc, acc + 2 * slots, 0.0);
    auto lookup = make_lookup();
    int64_t bad = -1;
    int64_t slot[kBlock];
    double offset[kBlock];
    int32_t first[kBlock];  // the lanes' bucket records' first thresholds
    for_each_block(begin, end, [&](int64_t i, int64_t m) {
      lookup.start_block(i, m, end);
      uint64_t flagged[kBlock / 64] = {};
      int64_t from = 0;
#ifdef APLOSS_AVX2_LANES
      if constexpr (kHasLanes<K>) {
        if (lanes) {
          from = m / 4 * 4;
          with_lanes<K>(lookup, [&](const auto& where) {
            pass1_lanes(s + i, y + i, from, lookup.readable(), where, shift, intervals, slot,
                        offset, first, flagged);
          });
        }
      }
#endif
      pass1_decide<scalar_t, label_t, K>(s + i, y + i, from, m, lookup, shift, intervals, slot,
                                         offset, flagged);
      // The flagged negatives leave their trash slot for their interval's, found by a
      // search of their bucket, before the block's additions.
      for_each_flagged(flagged, [&](int64_t j) {
        const K key = static_cast<K>(s[i + j]);
        const double v = static_cast<double>(key);
        if (!is_finite_score(v)) {
          if (bad < 0) bad = i + j;
          return;
        }
        const int64_t at = j < from ? interval_after_candidates(lookup.frame(j), first[j], key)
                                    : interval_of(lookup.frame(j), key);
        if (at == 0) return;  // counts nothing
        slot[j] = at;
        offset[j] = v - shift[at];
      });
      // The additions; with `record`, each entry's interval in the same loop, without a
      // branch (whether an entry counts is as random as its label).
      const auto add_block = [&](auto recording) {
        for (int64_t j = 0; j < m; ++j) {
          double* a = acc + 2 * slot[j];
          a[0] += 1.0;
          a[1] += offset[j];
          if constexpr (decltype(recording)::value) {
            record[i + j] =
                static_cast<uint32_t>(slot[j] & -static_cast<int64_t>(slot[j] < intervals));
          }
        }
      };
      if (record != nullptr) {
        add_block(std::true_type{});
      } else {
        add_block(std::false_type{});
      }
    });
    bad_score[c] = bad;
  });

  const int64_t first_bad = first_flagged(bad_score.data(), chunks.count);
  if (first_bad >= 0) throw_non_finite_score(scores, first_bad);
  double* arrays = out.data_ptr<double>();
  const auto add = [arrays, width](int array, int64_t at, double v) {
    arrays[array * width + at] += v;
  };
  // The chunks summed into the first, in chunk order.
  at::parallel_for(0, 2 * intervals, 1 << 14, [&](int64_t begin, int64_t end) {
    for (int64_t c = 1; c < chunks.count; ++c) {
      const double* from = sums.get() + c * 2 * slots;
      for (int64_t k = begin; k < end; ++k) sums[k] += from[k];
    }
  });
  const double inv_2delta = 0.5 / delta;
  for (int64_t at = 1; at < intervals; ++at) {
    const double count = sums[2 * at], sum = sums[2 * at + 1];
    if (count == 0.0) continue;
    // The sum of the window offsets a = (s - shift) / (2 delta) + 1/2 (math.h).
    const double sum_a = sum * inv_2delta + 0.5 * count;
    accumulate_interval(index.begin(at), index.lo(at), index.hi(at), count, sum_a, add);
  }
}

// Each interval's piece of pass 2 (intervals.h, interval_gradient), prepared once with
// grad_output, `scale`.
template <typename K, typename Index>
std::unique_ptr<IntervalGradient<K>[]> interval_pieces(const Index& index, const StateView& st,
                                                       double delta, double scale) {
  const double inv_2delta = 0.5 / delta;
  const int64_t intervals = index.intervals();
  const double* shift = index.shifts();
  std::unique_ptr<IntervalGradient<K>[]> pieces(new IntervalGradient<K>[intervals]);
  at::parallel_for(0, intervals, 4096, [&](int64_t begin, int64_t end) {
    for (int64_t at = begin; at < end; ++at) {
      pieces[at] = interval_gradient(index.lo(at), index.hi(at), shift[at], index.left(at),
                                     index.right(at), st.prefix_w, st.prefix_q, inv_2delta,
                                     scale, st.prefix_w[index.begin(at)]);
    }
  });
  return pieces;
}

// Pass 2: a map from (score, label) to the gradient, one write per entry: a negative's
// from the piece of its interval, 0 for every other entry (the driver writes the
// positives').
template <typename scalar_t, typename label_t, typename K, typename Index, typename MakeLookup>
void pass2_over(const at::Tensor& scores, const at::Tensor& labels, const Index& index,
                MakeLookup make_lookup, const StateView& st, double delta, double scale,
                at::Tensor& grad) {
  const int64_t n = scores.numel();
  const std::unique_ptr<IntervalGradient<K>[]> pieces =
      interval_pieces<K>(index, st, delta, scale);
  const bool lanes = lanes_usable<K>(index.lanes_span());
  const scalar_t* s = scores.const_data_ptr<scalar_t>();
  const label_t* y = labels.const_data_ptr<label_t>();
  scalar_t* g = grad.data_ptr<scalar_t>();
  const IntervalGradient<K>* by_interval = pieces.get();

  at::parallel_for(0, n, 1 << 14, [&](int64_t begin, int64_t end) {
    auto lookup = make_lookup();
    // One entry's gradient by the scalar per-entry functions.
    const auto entry = [&](int64_t i, int64_t j) -> scalar_t {
      if (classify_label(y[i]) != kNegative) return scalar_t(0);
      const K key = static_cast<K>(s[i]);
      const double v = static_cast<double>(key);
      // Never reached after a forward (it rejects such scores): -inf is below every
      // window, anything else not finite has no gradient.
      if (!is_finite_score(v)) return static_cast<scalar_t>(v < 0 ? 0.0 : v - v);
      return static_cast<scalar_t>(
          gradient_in_interval(by_interval[interval_of(lookup.frame(j), key)], key));
    };
    for_each_block(begin, end, [&](int64_t i, int64_t m) {
      lookup.start_block(i, m, end);
      int64_t from = 0;
#ifdef APLOSS_AVX2_LANES
      if constexpr (kHasLanes<K>) {
        if (lanes) {
          uint64_t flagged[kBlock / 64] = {};
          Pass2Block block;
          from = m / 4 * 4;
          with_lanes<K>(lookup, [&](const auto& where) {
            pass2_interval_lanes(s + i, y + i, from, lookup.readable(), where, block, flagged);
          });
          // A flagged negative's bucket is searched here, so that its piece is read in
          // the gradient sweep; a non-finite score is left to entry().
          for_each_flagged(flagged, [&](int64_t j) {
            const K key = static_cast<K>(s[i + j]);
            if (!is_finite_score(static_cast<double>(key))) return;
            const int64_t at = interval_after_candidates(lookup.frame(j), block.first[j], key);
            block.at[j] = static_cast<int32_t>(at);
            block.used[j] = -1;
            flagged[j >> 6] &= ~(uint64_t(1) << (j & 63));
          });
          pass2_gradient_lanes(s + i, from, by_interval, block, g + i);
          for_each_flagged(flagged, [&](int64_t j) { g[i + j] = entry(i + j, j); });
        }
      }
#endif
      for (int64_t j = from; j < m; ++j) g[i + j] = entry(i + j, j);
    });
  });
}

// Pass 2 from the intervals pass1_over recorded: each entry's gradient from its
// interval's piece, 0 for interval 0 and for a number past the index's last (not from
// this index's pass 1). The lanes' gradient sweep, without their interval sweep.
template <typename scalar_t, typename K, typename Index>
void recorded_pass2_over(const at::Tensor& scores, const uint32_t* recorded, const Index& index,
                         const StateView& st, double delta, double scale, at::Tensor& grad) {
  const int64_t n = scores.numel();
  const std::unique_ptr<IntervalGradient<K>[]> pieces =
      interval_pieces<K>(index, st, delta, scale);
  const IntervalGradient<K>* by_interval = pieces.get();
  const uint32_t last = static_cast<uint32_t>(index.intervals() - 1);
  const bool lanes = lanes_usable<K>(index.lanes_span());
  const scalar_t* s = scores.const_data_ptr<scalar_t>();
  scalar_t* g = grad.data_ptr<scalar_t>();
  at::parallel_for(0, n, 1 << 14, [&](int64_t begin, int64_t end) {
    for_each_block(begin, end, [&](int64_t i, int64_t m) {
      Pass2Block block;
      for (int64_t j = 0; j < m; ++j) {
        // 1 <= r <= last, in one unsigned comparison.
        const uint32_t r = recorded[i + j];
        const bool has_piece = r - 1u < last;
        block.at[j] = static_cast<int32_t>(has_piece ? r : 0u);
        block.used[j] = has_piece ? -1 : 0;
      }
      int64_t from = 0;
#ifdef APLOSS_AVX2_LANES
      if constexpr (kHasLanes<K>) {
        if (lanes) {
          from = m / 4 * 4;
          pass2_gradient_lanes(s + i, from, by_interval, block, g + i);
        }
      }
#endif
      for (int64_t j = from; j < m; ++j) {
        g[i + j] = block.used[j] != 0 ? static_cast<scalar_t>(gradient_in_interval(
                                            by_interval[block.at[j]], static_cast<K>(s[i + j])))
                                      : scalar_t(0);
      }
    });
  });
}

// The single ranking's index as the passes read it.
template <typename K>
struct OneRankingTables {
  const OwnedIntervalIndex<K>& index;
  int64_t intervals() const { return index.count() + 1; }
  int64_t lanes_span() const { return intervals(); }
  int64_t lo(int64_t m) const { return index.lo(m); }
  int64_t hi(int64_t m) const { return index.hi(m); }
  int64_t begin(int64_t) const { return 0; }
  K left(int64_t m) const { return index.get().thresholds[m > 0 ? m - 1 : 0]; }
  K right(int64_t m) const { return index.get().thresholds[m]; }
  const double* shifts() const { return index.shifts(); }
};

// The grouped index as the passes read it; the lanes index its records in int32.
template <typename K>
struct GroupedTables {
  const OwnedGroupedIndex<K>& index;
  int64_t intervals() const { return index.intervals(); }
  int64_t lanes_span() const { return std::max(index.intervals(), 2 * index.records()); }
  int64_t lo(int64_t m) const { return index.lo(m); }
  int64_t hi(int64_t m) const { return index.hi(m); }
  int64_t begin(int64_t m) const { return index.begin(m); }
  K left(int64_t m) const { return index.left(m); }
  K right(int64_t m) const { return index.right(m); }
  const double* shifts() const { return index.shifts(); }
};

template <typename scalar_t, typename label_t>
void pass1_of(const at::Tensor& scores, const at::Tensor& labels, const at::Tensor& positives,
              double delta, at::Tensor& out) {
  using K = KeyOf<scalar_t>;
  const int64_t num_pos = positives.size(1);
  const double* qp = positives.const_data_ptr<double>();
  const auto index = interval_index<K>(qp, qp + num_pos, num_pos, delta);
  const auto lookup = [&] {
    return OneRanking<K>(index->get(), index->one_cluster(), index->shifts()[0]);
  };
  pass1_over<scalar_t, label_t, K>(scores, labels, OneRankingTables<K>{*index}, lookup, delta,
                                   out);
}

template <typename scalar_t, typename label_t>
void pass2_of(const at::Tensor& scores, const at::Tensor& labels, const StateView& st,
              double delta, double scale, at::Tensor& grad) {
  using K = KeyOf<scalar_t>;
  const auto index = interval_index<K>(st.q, st.shift, st.num_pos, delta);
  const auto lookup = [&] { return OneRanking<K>(index->get(), false, 0.0); };
  pass2_over<scalar_t, label_t, K>(scores, labels, OneRankingTables<K>{*index}, lookup, st, delta,
                                   scale, grad);
}

}  // namespace

at::Tensor sorted_pass1(const at::Tensor& scores, const at::Tensor& labels,
                        const at::Tensor& positives, double delta) {
  at::Tensor out = at::zeros({3, positives.size(1) + 1}, positives.options());
  APLOSS_DISPATCH_SCORES_AND_LABELS(scores.scalar_type(), labels.scalar_type(),
                                    "aploss_sorted_pass1_cpu", [&] {
    pass1_of<scalar_t, label_t>(scores, labels, positives, delta, out);
  });
  return out;
}

void sorted_pass2(const at::Tensor& scores, const at::Tensor& labels, const at::Tensor& state,
                  double delta, const at::Tensor& grad_output, at::Tensor& grad) {
  const StateView st = view_state(state);
  const double scale = grad_output.item<double>();
  APLOSS_DISPATCH_SCORES_AND_LABELS(scores.scalar_type(), labels.scalar_type(),
                                    "aploss_sorted_pass2_cpu", [&] {
    pass2_of<scalar_t, label_t>(scores, labels, st, delta, scale, grad);
  });
}

namespace {

at::Tensor grouped_pass1_of(const at::Tensor& scores, const at::Tensor& labels,
                            const at::Tensor& codes, int64_t code_repeat,
                            const at::Tensor& positives, const at::Tensor& offsets, double delta,
                            uint32_t* record) {
  const int64_t num_pos = positives.size(1);
  at::Tensor out = at::zeros({3, num_pos + 1}, positives.options());
  const double* qp = positives.const_data_ptr<double>();
  const CodeLayout layout{codes.const_data_ptr<int32_t>(), codes.numel(), code_repeat};
  APLOSS_DISPATCH_SCORES_AND_LABELS(scores.scalar_type(), labels.scalar_type(),
                                    "aploss_grouped_pass1_cpu", [&] {
    using K = KeyOf<scalar_t>;
    const auto index = grouped_index<K>(qp, qp + num_pos, num_pos,
                                        offsets.const_data_ptr<int64_t>(), offsets.numel() - 1,
                                        delta);
    TORCH_CHECK_VALUE(record == nullptr || index->intervals() <= (int64_t(1) << 32),
                      "a grouped ranking on the CPU has at most 2^32 intervals, got ",
                      index->intervals());
    const auto periodic =
        periodic_frames(index->get(), layout, index->group_shifts(), scores.numel());
    const auto lookup = [&] {
      return GroupedRanking<K>(index->get(), layout, index->group_shifts(),
                               periodic.empty() ? nullptr : periodic.data());
    };
    pass1_over<scalar_t, label_t, K>(scores, labels, GroupedTables<K>{*index}, lookup, delta,
                                     out, record);
  });
  return out;
}

}  // namespace

at::Tensor grouped_pass1(const at::Tensor& scores, const at::Tensor& labels,
                         const at::Tensor& codes, int64_t code_repeat, const at::Tensor& positives,
                         const at::Tensor& offsets, double delta) {
  return grouped_pass1_of(scores, labels, codes, code_repeat, positives, offsets, delta, nullptr);
}

// Each block reads its codes (GroupedRanking::start_block) before its entries' intervals
// are written over them, and no block reads another chunk's codes.
at::Tensor grouped_pass1_recording(const at::Tensor& scores, const at::Tensor& labels,
                                   const at::Tensor& codes, const at::Tensor& positives,
                                   const at::Tensor& offsets, double delta) {
  TORCH_CHECK(codes.is_contiguous() && codes.numel() == scores.numel() &&
                  codes.scalar_type() == at::kInt,
              "grouped_pass1_recording writes one int32 interval per entry over its codes");
  uint32_t* record = reinterpret_cast<uint32_t*>(codes.data_ptr<int32_t>());
  return grouped_pass1_of(scores, labels, codes, 1, positives, offsets, delta, record);
}

void recorded_pass2(const at::Tensor& scores, const at::Tensor& intervals, const at::Tensor& state,
                    const at::Tensor& offsets, double delta, const at::Tensor& grad_output,
                    at::Tensor& grad) {
  TORCH_CHECK(intervals.is_contiguous() && intervals.numel() == scores.numel() &&
                  intervals.scalar_type() == at::kInt,
              "recorded_pass2 reads one int32 interval per entry");
  const StateView st = view_state(state);
  const double scale = grad_output.item<double>();
  const uint32_t* recorded = reinterpret_cast<const uint32_t*>(intervals.const_data_ptr<int32_t>());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, scores.scalar_type(),
                                  "aploss_recorded_pass2_cpu", [&] {
    using K = KeyOf<scalar_t>;
    const auto index = grouped_index<K>(st.q, st.shift, st.num_pos,
                                        offsets.const_data_ptr<int64_t>(), offsets.numel() - 1,
                                        delta);
    recorded_pass2_over<scalar_t, K>(scores, recorded, GroupedTables<K>{*index}, st, delta,
                                     scale, grad);
  });
}

void grouped_pass2(const at::Tensor& scores, const at::Tensor& labels, const at::Tensor& codes,
                   int64_t code_repeat, const at::Tensor& state, const at::Tensor& offsets,
                   double delta, const at::Tensor& grad_output, at::Tensor& grad) {
  const StateView st = view_state(state);
  const double scale = grad_output.item<double>();
  const CodeLayout layout{codes.const_data_ptr<int32_t>(), codes.numel(), code_repeat};
  APLOSS_DISPATCH_SCORES_AND_LABELS(scores.scalar_type(), labels.scalar_type(),
                                    "aploss_grouped_pass2_cpu", [&] {
    using K = KeyOf<scalar_t>;
    const auto index = grouped_index<K>(st.q, st.shift, st.num_pos,
                                        offsets.const_data_ptr<int64_t>(), offsets.numel() - 1,
                                        delta);
    const auto periodic = periodic_frames(index->get(), layout, nullptr, scores.numel());
    const auto lookup = [&] {
      return GroupedRanking<K>(index->get(), layout, nullptr,
                               periodic.empty() ? nullptr : periodic.data());
    };
    pass2_over<scalar_t, label_t, K>(scores, labels, GroupedTables<K>{*index}, lookup, st, delta,
                                     scale, grad);
  });
}

}  // namespace cpu
}  // namespace aploss
