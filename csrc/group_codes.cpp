#include "group_codes.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <atomic>
#include <limits>
#include <mutex>

#include "aploss/host_reads.h"
#include "aploss/kernels.h"
#include "cpu/ids_ahead.h"

namespace aploss {

void check_group_ids(const at::Tensor& group_ids, const at::Tensor& scores) {
  const auto type = group_ids.scalar_type();
  TORCH_CHECK_TYPE(at::isIntegralType(type, /*includeBool=*/false),
                   "group_ids must be an integer tensor, got ", type);
  TORCH_CHECK_VALUE(group_ids.device() == scores.device(), "scores are on ",
                    scores.device(), " but group_ids are on ", group_ids.device());
  bool broadcastable = group_ids.dim() <= scores.dim();
  for (int64_t d = 1; broadcastable && d <= group_ids.dim(); ++d) {
    const int64_t size = group_ids.size(-d);
    broadcastable = size == 1 || size == scores.size(-d);
  }
  TORCH_CHECK_VALUE(broadcastable, "group_ids.shape ", group_ids.sizes(),
                    " is not broadcastable to scores.shape ", scores.sizes());
}

namespace {

// The backend's numbering of the distinct ids; with refuse_negative, a negative id is a
// ValueError naming the lowest (found by the backend's pass, or read).
GroupCodes numbered_codes(const Kernels& k, const at::Tensor& ids, bool refuse_negative) {
  const CodesAndCount numbered = k.dense_codes(ids);
  if (refuse_negative && numbered.lowest.has_value()) {
    TORCH_CHECK_VALUE(*numbered.lowest >= 0, "group_ids must be >= 0, found ", *numbered.lowest);
  } else if (refuse_negative) {
    check_group_ids_non_negative(ids);
  }
  TORCH_CHECK_VALUE(numbered.count <= std::numeric_limits<int32_t>::max(),
                    "at most 2^31 - 1 distinct group ids, got ", numbered.count);
  return {numbered.codes, numbered.count};
}

// Host memory: the ids' int32 narrowing and their bounds in one parallel pass (where the
// bounds allow direct codes, the narrowing is the codes). The pass stops at the first id
// outside [0, limit), which direct codes cannot take (`direct` false): those ids are
// numbered instead, so narrowing them would be a wasted pass over N ids.
struct NarrowedIds {
  at::Tensor codes;
  int64_t lowest = 0, highest = 0;
  bool direct = true;
};

template <typename id_t>
NarrowedIds narrow_on_host(const at::Tensor& ids, int64_t limit) {
  const at::Tensor values = ids.contiguous();
  at::Tensor codes = at::empty(ids.sizes(), ids.options().dtype(at::kInt));
  const id_t* v = values.const_data_ptr<id_t>();
  int32_t* c = codes.data_ptr<int32_t>();
  std::mutex mutex;
  std::atomic<bool> outside{false};
  int64_t lowest = std::numeric_limits<int64_t>::max();
  int64_t highest = std::numeric_limits<int64_t>::min();
  constexpr int64_t kStride = int64_t(1) << 12;  // how often a chunk looks at the others
  at::parallel_for(0, values.numel(), int64_t(1) << 16, [&](int64_t begin, int64_t end) {
    id_t lo = v[begin], hi = v[begin];
    for (int64_t from = begin; from < end && !outside.load(std::memory_order_relaxed);
         from += kStride) {
      for (int64_t i = from, to = std::min(end, from + kStride); i < to; ++i) {
        if ((i & 7) == 0) __builtin_prefetch(v + i + cpu::kIdsAhead);
        lo = std::min(lo, v[i]);
        hi = std::max(hi, v[i]);
        c[i] = static_cast<int32_t>(v[i]);
      }
      if (lo < 0 || hi >= limit) outside.store(true, std::memory_order_relaxed);
    }
    const std::lock_guard<std::mutex> lock(mutex);
    lowest = std::min<int64_t>(lowest, lo);
    highest = std::max<int64_t>(highest, hi);
  });
  return {codes, lowest, highest, !outside.load()};
}

// Ids broadcast over the scores, off host memory: at most ids.numel() distinct values, so
// they are numbered on the device without a host read, and num_groups is that numel (a
// code no id takes is a group without entries, which counts nothing). Each id's code is
// the first index of its value: among the ids for a few of them (one comparison of every
// pair), among the sorted ids otherwise. A negative id's code is the id itself, clamped
// to int32: the gather, which reads the device anyway, raises ValueError naming it.
constexpr int64_t kPairwiseIds = 1024;

GroupCodes broadcast_codes_on_device(const at::Tensor& ids) {
  const at::Tensor flat = ids.reshape({-1}).to(at::kLong);
  const int64_t m = flat.numel();
  at::Tensor value = flat, first;
  if (m <= kPairwiseIds) {
    first = flat.unsqueeze(1).eq(flat.unsqueeze(0)).to(at::kByte).argmax(1);
  } else {
    at::Tensor order;
    std::tie(value, order) = flat.sort();
    const at::Tensor starts = at::ones({m}, flat.options().dtype(at::kBool));
    starts.narrow(0, 1, m - 1).copy_(value.narrow(0, 1, m - 1).ne(value.narrow(0, 0, m - 1)));
    // The rank of each run of equal ids, scattered back to the ids' order below.
    first = starts.cumsum(0).sub_(1);
    first = at::empty_like(first).index_put_({order}, first);
    value = flat;
  }
  const at::Tensor negative = value.clamp(std::numeric_limits<int32_t>::min(), -1);
  at::Tensor codes = at::empty(ids.sizes(), ids.options().dtype(at::kInt));
  codes.view({-1}).copy_(at::where(value.lt(0), negative, first));
  return {codes, m};
}

}  // namespace

GroupCodes dense_group_codes(const Kernels& k, const at::Tensor& group_ids,
                             int64_t num_scores) {
  // Always a new, contiguous tensor: the codes are an output of the operator, so they
  // must not alias its input and their layout must not depend on the ids' values.
  const auto as_codes = [](const at::Tensor& t) {
    return at::empty(t.sizes(), t.options().dtype(at::kInt)).copy_(t);
  };
  if (group_ids.numel() == 0) return {as_codes(group_ids), 0};
  // Unsigned ids: uint16 and uint32 widen exactly; uint64 ids are read as the int64 of their
  // bits (equal ids stay equal, distinct ones distinct), and those from 2^63 on, negative
  // there, get the backend's numbering below.
  const auto type = group_ids.scalar_type();
  const bool unsigned_64 = type == at::kUInt64;
  const at::Tensor ids = unsigned_64 ? group_ids.view(at::kLong)
                         : (type == at::kUInt16 || type == at::kUInt32) ? group_ids.to(at::kLong)
                                                                        : group_ids;
  if (!k.host_memory && !unsigned_64 && ids.numel() < num_scores) {
    return broadcast_codes_on_device(ids);
  }
  // Large int32 / int64 ids in host memory: bounds and codes from one pass.
  const bool narrow_here = k.host_memory && ids.numel() >= (int64_t(1) << 16) &&
                           (ids.scalar_type() == at::kLong || ids.scalar_type() == at::kInt);
  // Direct codes cost O(max id) per pass (each code owns a group frame), so sparse ids
  // beyond the numel/8 of the ids get the backend's numbering instead.
  const int64_t direct_limit = std::min<int64_t>(
      std::max<int64_t>(int64_t(1) << 16, group_ids.numel() / 8),
      std::numeric_limits<int32_t>::max());
  NarrowedIds narrowed;
  if (narrow_here) {
    narrowed = ids.scalar_type() == at::kLong ? narrow_on_host<int64_t>(ids, direct_limit)
                                              : narrow_on_host<int32_t>(ids, direct_limit);
    if (!narrowed.direct) return numbered_codes(k, ids, /*refuse_negative=*/!unsigned_64);
  } else {
    const auto [lowest, highest] = at::aminmax(ids);
    // One read of both bounds; then plain host memory.
    const at::Tensor bounds =
        read_to_host(at::stack({lowest, highest}).to(at::kLong)).contiguous();
    narrowed.lowest = bounds.const_data_ptr<int64_t>()[0];
    narrowed.highest = bounds.const_data_ptr<int64_t>()[1];
  }
  const int64_t min_id = narrowed.lowest, max_id = narrowed.highest;
  if (unsigned_64 && min_id < 0) return numbered_codes(k, ids, /*refuse_negative=*/false);
  TORCH_CHECK_VALUE(min_id >= 0, "group_ids must be >= 0, found ", min_id);
  if (max_id < direct_limit) {
    return {narrowed.codes.defined() ? narrowed.codes : as_codes(ids), max_id + 1};
  }
  return numbered_codes(k, ids, /*refuse_negative=*/false);
}

void check_group_ids_non_negative(const at::Tensor& group_ids) {
  if (group_ids.numel() == 0 || !at::isSignedType(group_ids.scalar_type())) return;
  const int64_t lowest = read_to_host(group_ids.min().to(at::kLong)).item<int64_t>();
  TORCH_CHECK_VALUE(lowest >= 0, "group_ids must be >= 0, found ", lowest);
}

}  // namespace aploss
