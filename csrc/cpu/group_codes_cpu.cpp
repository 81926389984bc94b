// Dense group codes on the CPU: arbitrary int64 ids -> 0, 1, 2, ... in order of first
// appearance, with open-addressing hash tables. One pass over the ids; a table
// holds the distinct ids only (a few thousand for retrieval-style groups), so every
// probe hits cache, where at::_unique sorts or hashes through the allocator.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdint>
#include <vector>

#include "cpu_kernels.h"

namespace aploss {
namespace cpu {
namespace {

class IdTable {
 public:
  IdTable() : keys_(kInitialSlots), codes_(kInitialSlots, kEmpty) {}

  int32_t code_of(int64_t id) {
    size_t slot = hash(id) & (keys_.size() - 1);
    while (codes_[slot] != kEmpty) {
      if (keys_[slot] == id) return codes_[slot];
      slot = (slot + 1) & (keys_.size() - 1);
    }
    const int32_t code = static_cast<int32_t>(count_++);
    keys_[slot] = id;
    codes_[slot] = code;
    in_order_.push_back(id);
    if (2 * count_ > keys_.size()) grow();  // load factor <= 1/2
    return code;
  }
  int64_t size() const { return count_; }
  const std::vector<int64_t>& ids_in_order() const { return in_order_; }

 private:
  static constexpr size_t kInitialSlots = 1024;
  static constexpr int32_t kEmpty = -1;

  static size_t hash(int64_t id) {  // splitmix64 finaliser: ids that are multiples spread out
    uint64_t x = static_cast<uint64_t>(id);
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
    return static_cast<size_t>(x ^ (x >> 31));
  }

  void grow() {
    std::vector<int64_t> old_keys(2 * keys_.size());
    std::vector<int32_t> old_codes(2 * keys_.size(), kEmpty);
    old_keys.swap(keys_);
    old_codes.swap(codes_);
    for (size_t i = 0; i < old_keys.size(); ++i) {
      if (old_codes[i] == kEmpty) continue;
      size_t slot = hash(old_keys[i]) & (keys_.size() - 1);
      while (codes_[slot] != kEmpty) slot = (slot + 1) & (keys_.size() - 1);
      keys_[slot] = old_keys[i];
      codes_[slot] = old_codes[i];
    }
  }

  std::vector<int64_t> keys_;
  std::vector<int32_t> codes_;
  std::vector<int64_t> in_order_;
  size_t count_ = 0;
};

}  // namespace

// Each chunk numbers its ids in its own table (in order of first appearance within the
// chunk); the chunks' tables are then merged in chunk order, which gives every id its
// code in order of first appearance overall (as one sequential pass would), and each
// chunk maps its local codes to those.
std::tuple<at::Tensor, int64_t> dense_codes(const at::Tensor& ids) {
  const at::Tensor values = ids.to(at::kLong).contiguous();
  at::Tensor codes = at::empty(ids.sizes(), ids.options().dtype(at::kInt));
  const int64_t* v = values.const_data_ptr<int64_t>();
  int32_t* c = codes.data_ptr<int32_t>();
  const int64_t n = values.numel();
  constexpr int64_t kMinChunk = int64_t(1) << 16;
  const int64_t count = std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads(), n / kMinChunk));
  const int64_t size = (n + count - 1) / count;
  std::vector<IdTable> local(count);
  at::parallel_for(0, count, 1, [&](int64_t first, int64_t last) {
    for (int64_t k = first; k < last; ++k) {
      for (int64_t i = k * size, end = std::min(n, (k + 1) * size); i < end; ++i) {
        c[i] = local[k].code_of(v[i]);
      }
    }
  });
  IdTable global;
  std::vector<std::vector<int32_t>> to_global(count);
  for (int64_t k = 0; k < count; ++k) {
    for (const int64_t id : local[k].ids_in_order()) to_global[k].push_back(global.code_of(id));
  }
  TORCH_CHECK_VALUE(global.size() < (int64_t(1) << 31), "at most 2^31 - 1 distinct group ids");
  at::parallel_for(0, count, 1, [&](int64_t first, int64_t last) {
    for (int64_t k = first; k < last; ++k) {
      const int32_t* map = to_global[k].data();
      for (int64_t i = k * size, end = std::min(n, (k + 1) * size); i < end; ++i) c[i] = map[c[i]];
    }
  });
  return {codes, global.size()};
}

}  // namespace cpu
}  // namespace aploss
