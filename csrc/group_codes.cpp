#include "group_codes.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <limits>

#include "aploss/host_reads.h"
#include "aploss/kernels.h"

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

// The backend's numbering of the distinct ids.
GroupCodes numbered_codes(const Kernels& k, const at::Tensor& ids) {
  auto [codes, num_groups] = k.dense_codes(ids);
  TORCH_CHECK_VALUE(num_groups <= std::numeric_limits<int32_t>::max(),
                    "at most 2^31 - 1 distinct group ids, got ", num_groups);
  return {codes, num_groups};
}

}  // namespace

GroupCodes dense_group_codes(const Kernels& k, const at::Tensor& group_ids) {
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
  const auto [lowest, highest] = at::aminmax(ids);
  const at::Tensor bounds = read_to_host(at::stack({lowest, highest}).to(at::kLong));
  const int64_t min_id = bounds[0].item<int64_t>(), max_id = bounds[1].item<int64_t>();
  if (unsigned_64 && min_id < 0) return numbered_codes(k, ids);
  TORCH_CHECK_VALUE(min_id >= 0, "group_ids must be >= 0, found ", min_id);
  // Direct codes cost O(max id) per pass (each code owns a segment record), so sparse
  // ids beyond the numel/8 of the ids get the backend's numbering instead.
  const int64_t direct_limit = std::max<int64_t>(int64_t(1) << 16, group_ids.numel() / 8);
  constexpr int64_t kMaxCode = std::numeric_limits<int32_t>::max();
  if (max_id < std::min(direct_limit, kMaxCode)) return {as_codes(ids), max_id + 1};
  return numbered_codes(k, ids);
}

}  // namespace aploss
