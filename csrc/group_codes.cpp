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
                   "ap_loss: group_ids must be an integer tensor, got ", type);
  TORCH_CHECK_VALUE(group_ids.device() == scores.device(), "ap_loss: scores are on ",
                    scores.device(), " but group_ids are on ", group_ids.device());
  bool broadcastable = group_ids.dim() <= scores.dim();
  for (int64_t d = 1; broadcastable && d <= group_ids.dim(); ++d) {
    const int64_t size = group_ids.size(-d);
    broadcastable = size == 1 || size == scores.size(-d);
  }
  TORCH_CHECK_VALUE(broadcastable, "ap_loss: group_ids.shape ", group_ids.sizes(),
                    " is not broadcastable to scores.shape ", scores.sizes());
}

GroupCodes dense_group_codes(const Kernels& k, const at::Tensor& group_ids) {
  // Always a new, contiguous tensor: the codes are an output of the operator, so they
  // must not alias its input and their layout must not depend on the ids' values.
  const auto as_codes = [](const at::Tensor& t) {
    return at::empty(t.sizes(), t.options().dtype(at::kInt)).copy_(t);
  };
  if (group_ids.numel() == 0) return {as_codes(group_ids), 0};
  const auto [lowest, highest] = at::aminmax(group_ids);
  const at::Tensor bounds = read_to_host(at::stack({lowest, highest}).to(at::kLong));
  const int64_t min_id = bounds[0].item<int64_t>(), max_id = bounds[1].item<int64_t>();
  TORCH_CHECK_VALUE(min_id >= 0, "ap_loss: group_ids must be >= 0, found ", min_id);
  // Direct codes cost O(max id) per pass (each code owns a segment record), so sparse
  // ids beyond the numel/8 of the ids get the backend's numbering instead.
  const int64_t direct_limit = std::max<int64_t>(int64_t(1) << 16, group_ids.numel() / 8);
  constexpr int64_t kMaxCode = std::numeric_limits<int32_t>::max();
  if (max_id < std::min(direct_limit, kMaxCode)) return {as_codes(group_ids), max_id + 1};
  auto [codes, num_groups] = k.dense_codes(group_ids);
  TORCH_CHECK_VALUE(num_groups <= kMaxCode, "ap_loss: at most 2^31 - 1 distinct group ids, got ",
                    num_groups);
  return {codes, num_groups};
}

}  // namespace aploss
