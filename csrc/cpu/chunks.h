// How the CPU kernels split N entries into chunks that each own a private
// accumulator. The split depends only on N, the accumulator length and the thread
// count, never on scheduling, so the merged sums are bitwise reproducible.
#pragma once

#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdint>

namespace aploss {
namespace cpu {

struct Chunks {
  int64_t count;  // number of chunks (and private accumulators)
  int64_t size;   // entries per chunk (the last one may be shorter)

  int64_t begin(int64_t c) const { return c * size; }
  int64_t end(int64_t c, int64_t n) const { return std::min(n, (c + 1) * size); }
};

// At most one chunk per thread, at least kMinChunk entries per chunk, and the private
// accumulators together no larger than ~64 MiB (or one accumulator).
inline Chunks split_into_chunks(int64_t n, int64_t accumulator_doubles) {
  constexpr int64_t kMinChunk = 1 << 15;
  constexpr int64_t kAccumulatorBudget = (64 << 20) / sizeof(double);
  int64_t count = std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads(), n / kMinChunk));
  if (accumulator_doubles > 0) {
    count = std::max<int64_t>(1, std::min(count, kAccumulatorBudget / accumulator_doubles));
  }
  const int64_t size = n == 0 ? 1 : (n + count - 1) / count;
  return {count, size};
}

// Runs fn(chunk_index, begin, end) for every chunk, in parallel.
template <typename Fn>
void for_each_chunk(const Chunks& chunks, int64_t n, const Fn& fn) {
  at::parallel_for(0, chunks.count, 1, [&](int64_t first, int64_t last) {
    for (int64_t c = first; c < last; ++c) fn(c, chunks.begin(c), chunks.end(c, n));
  });
}

// Lowest flagged index over chunks (-1 if none); each chunk records its own first.
inline int64_t first_flagged(const int64_t* per_chunk, int64_t count) {
  int64_t best = -1;
  for (int64_t c = 0; c < count; ++c) {
    if (per_chunk[c] >= 0 && (best < 0 || per_chunk[c] < best)) best = per_chunk[c];
  }
  return best;
}

}  // namespace cpu
}  // namespace aploss
