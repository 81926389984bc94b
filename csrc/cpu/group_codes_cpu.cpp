// Dense group codes on the CPU: arbitrary int64 ids -> 0, 1, 2, ... in order of first
// appearance, with open-addressing hash tables. One pass over the ids; a table
// holds the distinct ids only (a few thousand for retrieval-style groups), so every
// probe hits cache, where at::_unique sorts or hashes through the allocator.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdint>
#include <limits>
#include <vector>

#include "cpu_kernels.h"
#include "ids_ahead.h"

namespace aploss {
namespace cpu {
namespace {

class IdTable {
 public:
  IdTable() : slots_(kInitialSlots, Slot{0, kEmpty}) {}

  int32_t code_of(int64_t id) {
    size_t at = slot_of(id);
    while (slots_[at].code != kEmpty) {
      if (slots_[at].id == id) return slots_[at].code;
      at = (at + 1) & (slots_.size() - 1);
    }
    const int32_t code = static_cast<int32_t>(count_++);
    slots_[at] = {id, code};
    in_order_.push_back(id);
    if (2 * count_ > slots_.size()) grow();  // load factor <= 1/2
    return code;
  }
  int64_t size() const { return count_; }
  const std::vector<int64_t>& ids_in_order() const { return in_order_; }

 private:
  static constexpr size_t kInitialSlots = 1024;
  static constexpr int kInitialBits = 10;
  static constexpr int32_t kEmpty = -1;

  struct Slot {  // an id and its code together: one cache line per probe
    int64_t id;
    int32_t code;
  };

  // Fibonacci hashing (the top bits of one product): ids that are multiples spread out.
  size_t slot_of(int64_t id) const {
    return static_cast<size_t>((static_cast<uint64_t>(id) * 0x9E3779B97F4A7C15ULL) >>
                               (64 - bits_));
  }

  void grow() {
    std::vector<Slot> old(2 * slots_.size(), Slot{0, kEmpty});
    old.swap(slots_);
    ++bits_;
    for (const Slot& s : old) {
      if (s.code == kEmpty) continue;
      size_t at = slot_of(s.id);
      while (slots_[at].code != kEmpty) at = (at + 1) & (slots_.size() - 1);
      slots_[at] = s;
    }
  }

  std::vector<Slot> slots_;
  int bits_ = kInitialBits;
  std::vector<int64_t> in_order_;
  size_t count_ = 0;
};

}  // namespace

// Each chunk numbers its ids in its own table (in order of first appearance within the
// chunk); the chunks' tables are then merged in chunk order, which gives every id its
// code in order of first appearance overall (as one sequential pass would), and each
// chunk but the first (whose codes are already the merged ones) maps its local codes to
// those. The lowest id comes with the pass.
CodesAndCount dense_codes(const at::Tensor& ids) {
  const at::Tensor values = ids.to(at::kLong).contiguous();
  at::Tensor codes = at::empty(ids.sizes(), ids.options().dtype(at::kInt));
  const int64_t* v = values.const_data_ptr<int64_t>();
  int32_t* c = codes.data_ptr<int32_t>();
  const int64_t n = values.numel();
  if (n == 0) return {codes, 0, std::nullopt};
  constexpr int64_t kMinChunk = int64_t(1) << 16;
  const int64_t count =
      std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads(), n / kMinChunk));
  const int64_t size = (n + count - 1) / count;
  std::vector<IdTable> local(count);
  std::vector<int64_t> lowest(count, std::numeric_limits<int64_t>::max());
  at::parallel_for(0, count, 1, [&](int64_t first, int64_t last) {
    for (int64_t k = first; k < last; ++k) {
      int64_t low = lowest[k];
      for (int64_t i = k * size, end = std::min(n, (k + 1) * size); i < end; ++i) {
        if ((i & 7) == 0) __builtin_prefetch(v + i + kIdsAhead);
        low = std::min(low, v[i]);
        c[i] = local[k].code_of(v[i]);
      }
      lowest[k] = low;
    }
  });
  IdTable global;
  std::vector<std::vector<int32_t>> to_global(count);
  for (int64_t k = 0; k < count; ++k) {
    for (const int64_t id : local[k].ids_in_order()) to_global[k].push_back(global.code_of(id));
  }
  TORCH_CHECK_VALUE(global.size() < (int64_t(1) << 31), "at most 2^31 - 1 distinct group ids");
  // The entries after the first chunk, not the chunks, are shared among the threads: by
  // chunk, count - 1 threads would map them, one of two on two cores.
  at::parallel_for(size, n, int64_t(1) << 15, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end;) {
      const int64_t k = i / size, stop = std::min(end, (k + 1) * size);
      const int32_t* map = to_global[k].data();
      for (; i < stop; ++i) {
        if ((i & 15) == 0) __builtin_prefetch(c + i + 2 * kIdsAhead, 1);
        c[i] = map[c[i]];
      }
    }
  });
  return {codes, global.size(), *std::min_element(lowest.begin(), lowest.end())};
}

}  // namespace cpu
}  // namespace aploss
