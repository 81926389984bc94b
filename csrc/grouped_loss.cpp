// Grouped rankings: ap_loss with group_ids. Entries with the same id form one ranking;
// the loss is the mean of the AP-losses of the groups that have a positive. The same two
// streaming passes as the single ranking, each entry searched against its own group's
// segment of the positives (aploss/segments.h); the only extra work is a sort of the P
// positives by (group, score) and one int32 code per entry.
#include <ATen/ATen.h>
#include <torch/library.h>

#include <algorithm>
#include <limits>
#include <string>

#include "ap_loss.h"
#include "deterministic_pass1.h"
#include "aploss/kernels.h"
#include "cpu/cpu_kernels.h"
#include "flat_inputs.h"
#include "positive_stage.h"

namespace aploss {
namespace {

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

struct GroupCodes {
  at::Tensor codes;    // int32, shaped like group_ids, values in [0, num_groups)
  int64_t num_groups;
};

// Dense codes for arbitrary non-negative ids: the ids themselves when they are small
// (no sort), else their rank among the distinct ids. One host sync (min and max).
GroupCodes dense_group_codes(const at::Tensor& group_ids) {
  // Always a new, contiguous tensor: the codes are an output of the operator, so they
  // must not alias its input and their layout must not depend on the ids' values.
  const auto as_codes = [](const at::Tensor& t) {
    return at::empty(t.sizes(), t.options().dtype(at::kInt)).copy_(t);
  };
  if (group_ids.numel() == 0) return {as_codes(group_ids), 0};
  const auto [lowest, highest] = at::aminmax(group_ids);
  const at::Tensor bounds = at::stack({lowest, highest}).to(at::kLong).cpu();
  const int64_t min_id = bounds[0].item<int64_t>(), max_id = bounds[1].item<int64_t>();
  TORCH_CHECK_VALUE(min_id >= 0, "ap_loss: group_ids must be >= 0, found ", min_id);
  const int64_t direct_limit = std::max<int64_t>(int64_t(1) << 16, 2 * group_ids.numel());
  constexpr int64_t kMaxCode = std::numeric_limits<int32_t>::max();
  if (max_id < std::min(direct_limit, kMaxCode)) return {as_codes(group_ids), max_id + 1};
  // Any dense numbering works (the codes never leave this call): on the CPU a hash
  // table in order of first appearance, elsewhere ATen's unique.
  if (group_ids.is_cpu()) {
    auto [codes, num_groups] = cpu::dense_codes(group_ids);
    return {codes, num_groups};
  }
  const auto unique = at::_unique(group_ids, /*sorted=*/true, /*return_inverse=*/true);
  const int64_t num_groups = std::get<0>(unique).numel();
  TORCH_CHECK_VALUE(num_groups <= kMaxCode, "ap_loss: at most 2^31 - 1 distinct group ids, got ",
                    num_groups);
  return {as_codes(std::get<1>(unique)), num_groups};
}

struct GroupedPositives {
  at::Tensor positives;       // (2, P) float64: q sorted by (group, score); cluster shifts
  at::Tensor offsets;         // (U+1) int64: group u owns columns [offsets[u], offsets[u+1])
  at::Tensor positive_group;  // (P,) int64, non-decreasing
};

// From the gather's (2, P) [score; code]: sort by (group, score), then segment offsets.
GroupedPositives group_positives(const at::Tensor& gathered, int64_t num_groups, double delta) {
  const at::Tensor score = gathered[0];
  const at::Tensor code = gathered[1].to(at::kLong);
  const at::Tensor by_score = std::get<1>(score.sort(/*stable=*/true, 0, false));
  const at::Tensor by_group =
      by_score.index_select(0, std::get<1>(code.index_select(0, by_score).sort(true, 0, false)));
  const at::Tensor q = score.index_select(0, by_group);
  const at::Tensor group = code.index_select(0, by_group);
  at::Tensor offsets = at::zeros({num_groups + 1}, code.options());
  offsets.narrow(0, 1, num_groups).copy_(at::bincount(group, {}, num_groups).cumsum(0));
  return {make_positives(q, delta, group), offsets, group};
}

// Pass 1 over 1-D entries with their codes: the (3, P+1) difference arrays. Float
// atomics (CUDA) are replaced by a deterministic reduction when asked for.
at::Tensor grouped_histograms(const Kernels& k, const at::Tensor& scores, const at::Tensor& labels,
                              const at::Tensor& codes, const GroupedPositives& gp, double delta) {
  return needs_deterministic_pass1(k)
             ? deterministic_pass1(k, scores, labels, codes, gp.positives, gp.offsets, delta)
             : k.grouped_pass1(scores, labels, codes, gp.positives, gp.offsets, delta);
}

// Pass 1 of the entries against their groups' segments: fp(i) for every positive.
at::Tensor false_positives_flat(const Kernels& k, const FlatInputs& in, const at::Tensor& codes,
                                const GroupedPositives& gp, double delta) {
  return sums_from_histograms(gp.positives,
                              grouped_histograms(k, in.scores, in.labels, codes, gp, delta), delta);
}

// Ranks among the positives (pass 1 with the positives as the "negatives"), then the
// positive stage: (loss, state).
std::tuple<at::Tensor, at::Tensor> finish(const Kernels& k, const GroupedPositives& gp,
                                          const at::Tensor& false_positives, double delta,
                                          bool interpolate, at::ScalarType loss_dtype) {
  const at::Tensor q = gp.positives[0];
  const at::Tensor all_negative = at::zeros({q.numel()}, q.options().dtype(at::kChar));
  const at::Tensor positive_sums = sums_from_histograms(
      gp.positives, grouped_histograms(k, q, all_negative, gp.positive_group.to(at::kInt), gp, delta),
      delta);
  return ap_positive_stage(gp.positives, false_positives, positive_sums, interpolate, loss_dtype,
                           gp.positive_group, gp.offsets);
}

void check_codes(const at::Tensor& codes, const at::Tensor& scores, const char* what) {
  check_group_ids(codes, scores);
  TORCH_CHECK(codes.scalar_type() == at::kInt, what, ": codes must be int32");
}

GroupedPositives check_positives(const at::Tensor& positives, const at::Tensor& offsets,
                                 const at::Tensor& positive_group, const at::Tensor& scores,
                                 const char* what) {
  TORCH_CHECK(positives.dim() == 2 && positives.size(0) == 2 && positives.size(1) >= 1 &&
                  positives.scalar_type() == at::kDouble && positives.device() == scores.device(),
              what, ": malformed positives");
  TORCH_CHECK(offsets.dim() == 1 && offsets.numel() >= 2 && offsets.scalar_type() == at::kLong &&
                  offsets.device() == scores.device(),
              what, ": malformed offsets");
  TORCH_CHECK(positive_group.dim() == 1 && positive_group.numel() == positives.size(1) &&
                  positive_group.scalar_type() == at::kLong,
              what, ": malformed positive_group");
  return {positives.contiguous(), offsets.contiguous(), positive_group.contiguous()};
}

}  // namespace

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> ap_loss_grouped_forward(
    const at::Tensor& scores, const at::Tensor& labels, const at::Tensor& group_ids,
    double delta, bool interpolate, c10::string_view method) {
  check_inputs(scores, labels, delta);
  check_group_ids(group_ids, scores);
  TORCH_CHECK_VALUE(parse_method(method) == Method::kSorted,
                    "ap_loss: group_ids work with method 'sorted' or 'auto', not '",
                    std::string(method), "'");
  const Kernels& k = kernels_for(scores);
  const GroupCodes groups = dense_group_codes(group_ids);
  const auto f64 = scores.options().dtype(at::kDouble);
  const at::Tensor no_positive_offsets = at::zeros({groups.num_groups + 1}, f64.dtype(at::kLong));
  const auto no_positive = [&] {
    return std::make_tuple(at::zeros({}, scores.options()), at::zeros({kStateRows, 1}, f64),
                           no_positive_offsets, groups.codes);
  };
  if (scores.numel() == 0) return no_positive();
  const FlatInputs in = flatten(scores, labels);
  const at::Tensor codes = flatten_like(groups.codes, scores, in);

  const at::Tensor gathered = k.grouped_gather(in.scores, in.labels, codes);  // the host sync
  if (gathered.size(1) == 0) return no_positive();
  const GroupedPositives gp = group_positives(gathered, groups.num_groups, delta);
  auto [loss, state] = finish(k, gp, false_positives_flat(k, in, codes, gp, delta), delta,
                              interpolate, scores.scalar_type());
  return {loss, state, gp.offsets, groups.codes};
}

// ---- the stages as operators, for callers that insert communication between them
// (aploss_cuda/distributed.py). `codes` are dense int32 codes broadcastable to scores;
// a code outside [0, U) is a group without positives.

at::Tensor grouped_gather_op(const at::Tensor& scores, const at::Tensor& labels,
                             const at::Tensor& codes) {
  check_inputs(scores, labels, 1.0);
  check_codes(codes, scores, "aploss::_grouped_gather");
  const auto f64 = scores.options().dtype(at::kDouble);
  if (scores.numel() == 0) return at::empty({2, 0}, f64);
  const FlatInputs in = flatten(scores, labels);
  return kernels_for(scores).grouped_gather(in.scores, in.labels, flatten_like(codes, scores, in));
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> group_positives_op(const at::Tensor& gathered,
                                                                  int64_t num_groups,
                                                                  double delta) {
  TORCH_CHECK(gathered.dim() == 2 && gathered.size(0) == 2 && gathered.size(1) >= 1 &&
                  gathered.scalar_type() == at::kDouble,
              "aploss::_group_positives: expected (2, P) float64 [scores; codes], P >= 1");
  TORCH_CHECK(num_groups >= 1, "aploss::_group_positives: num_groups must be >= 1");
  const GroupedPositives gp = group_positives(gathered, num_groups, delta);
  return {gp.positives, gp.offsets, gp.positive_group};
}

at::Tensor grouped_false_positives_op(const at::Tensor& scores, const at::Tensor& labels,
                                      const at::Tensor& codes, const at::Tensor& positives,
                                      const at::Tensor& offsets, const at::Tensor& positive_group,
                                      double delta) {
  check_inputs(scores, labels, delta);
  check_codes(codes, scores, "aploss::_grouped_false_positives");
  const GroupedPositives gp =
      check_positives(positives, offsets, positive_group, scores, "aploss::_grouped_false_positives");
  if (scores.numel() == 0) return at::zeros({positives.size(1)}, positives.options());
  const FlatInputs in = flatten(scores, labels);
  return false_positives_flat(kernels_for(scores), in, flatten_like(codes, scores, in), gp, delta);
}

std::tuple<at::Tensor, at::Tensor> grouped_positive_stage_op(
    const at::Tensor& positives, const at::Tensor& offsets, const at::Tensor& positive_group,
    const at::Tensor& false_positives, double delta, bool interpolate,
    at::ScalarType loss_dtype) {
  const GroupedPositives gp = check_positives(positives, offsets, positive_group, positives,
                                              "aploss::_grouped_positive_stage");
  TORCH_CHECK(false_positives.dim() == 1 && false_positives.numel() == positives.size(1) &&
                  false_positives.scalar_type() == at::kDouble,
              "aploss::_grouped_positive_stage: malformed false_positives");
  return finish(kernels_for(positives), gp, false_positives.contiguous(), delta, interpolate,
                loss_dtype);
}

at::Tensor ap_loss_grouped_backward(const at::Tensor& grad_output, const at::Tensor& scores,
                                    const at::Tensor& labels, const at::Tensor& group_codes,
                                    const at::Tensor& state, const at::Tensor& offsets,
                                    double delta, c10::string_view method) {
  check_inputs(scores, labels, delta);
  check_group_ids(group_codes, scores);
  TORCH_CHECK(group_codes.scalar_type() == at::kInt, "ap_loss_grouped_backward: codes must be int32");
  TORCH_CHECK(offsets.dim() == 1 && offsets.numel() >= 1 && offsets.scalar_type() == at::kLong,
              "ap_loss_grouped_backward: malformed offsets");
  TORCH_CHECK(state.dim() == 2 && state.size(0) == kStateRows && state.scalar_type() == at::kDouble,
              "ap_loss_grouped_backward: malformed state");
  (void)parse_method(method);
  const FlatInputs in = flatten(scores, labels);
  auto [grad, flat_grad] = gradient_like(scores, in);
  if (state.size(1) == 1 || scores.numel() == 0) return grad.zero_();

  const at::Tensor codes = flatten_like(group_codes, scores, in);
  const at::Tensor scale = grad_output.to(at::kDouble).reshape({});
  kernels_for(scores).grouped_pass2(in.scores, in.labels, codes, state, offsets.contiguous(),
                                    delta, scale, flat_grad);
  return grad;
}

TORCH_LIBRARY_FRAGMENT(aploss, m) {
  m.def("_grouped_gather(Tensor scores, Tensor labels, Tensor codes) -> Tensor");
  m.def("_group_positives(Tensor gathered, int num_groups, float delta) -> (Tensor, Tensor, Tensor)");
  m.def(
      "_grouped_false_positives(Tensor scores, Tensor labels, Tensor codes, Tensor positives,"
      " Tensor offsets, Tensor positive_group, float delta) -> Tensor");
  m.def(
      "_grouped_positive_stage(Tensor positives, Tensor offsets, Tensor positive_group,"
      " Tensor false_positives, float delta, bool interpolate, ScalarType loss_dtype)"
      " -> (Tensor, Tensor)");
  m.def(
      "ap_loss_grouped_forward(Tensor scores, Tensor labels, Tensor group_ids, float delta,"
      " bool interpolate, str method) -> (Tensor, Tensor, Tensor, Tensor)");
  m.def(
      "ap_loss_grouped_backward(Tensor grad_output, Tensor scores, Tensor labels,"
      " Tensor group_codes, Tensor state, Tensor offsets, float delta, str method) -> Tensor");
}

TORCH_LIBRARY_IMPL(aploss, CPU, m) {
  m.impl("ap_loss_grouped_forward", &ap_loss_grouped_forward);
  m.impl("ap_loss_grouped_backward", &ap_loss_grouped_backward);
}

// The stages call the kernels of their inputs' device themselves (kernels_for).
TORCH_LIBRARY_IMPL(aploss, CompositeExplicitAutograd, m) {
  m.impl("_grouped_gather", &grouped_gather_op);
  m.impl("_group_positives", &group_positives_op);
  m.impl("_grouped_false_positives", &grouped_false_positives_op);
  m.impl("_grouped_positive_stage", &grouped_positive_stage_op);
}

}  // namespace aploss
