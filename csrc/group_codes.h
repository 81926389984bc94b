// group_ids -> dense int32 codes, the form the grouped kernels read.
#pragma once

#include <ATen/core/Tensor.h>

namespace aploss {

struct Kernels;

// TypeError / ValueError naming the problem: integer dtype, device, broadcastable shape.
void check_group_ids(const at::Tensor& group_ids, const at::Tensor& scores);

struct GroupCodes {
  at::Tensor codes;  // int32, shaped like group_ids, values in [0, num_groups)
  int64_t num_groups;
};

// Dense codes for arbitrary non-negative ids: the ids themselves when they are small
// (no sort), else the backend's numbering of the distinct ids. One host sync (min, max),
// except off host memory for ids broadcast over the num_scores scores (fewer ids than
// scores): numbered on the device, negative ids left for the gather to raise.
GroupCodes dense_group_codes(const Kernels& k, const at::Tensor& group_ids,
                             int64_t num_scores);

// ValueError naming the lowest id when one is negative (a host read: for error paths).
void check_group_ids_non_negative(const at::Tensor& group_ids);

}  // namespace aploss
