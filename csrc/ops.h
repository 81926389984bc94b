// The aploss operators, implemented once over a kernel table (aploss/kernels.h). Each
// backend registers them for its dispatch key with its own table, as torchvision's ops
// do: register_backend<&cpu_device_kernels> (ops.cpp), <&cuda_kernels>
// (cuda/register_cuda.cpp). The schema is in ops.cpp.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>
#include <c10/util/string_view.h>
#include <torch/library.h>

#include <optional>
#include <tuple>

namespace aploss {

struct Kernels;

namespace ops {

// The one driver: gather, rank_positives, pass 1, positive stage. Returns (loss,
// state, offsets, codes, positive_grads, classes): codes are group_ids as dense int32
// codes (empty without group_ids); state (1-D bytes), offsets, positive_grads ((P, 2)
// [position, gradient]) and classes (the entries' packed classes, or empty: pass 2 reads
// the labels) are what the backward needs (kernels.h, segments.h, stages.h).
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> forward(
    const Kernels& k, const at::Tensor& scores, const at::Tensor& labels,
    const std::optional<at::Tensor>& group_ids, double delta, bool interpolate,
    c10::string_view method);

// The same driver with Rank & Sort loss's positive stage. Returns (loss, parts (ranking,
// sorting), state, offsets, codes, labels, positive_grads, classes): labels are the int8
// labels of the targets, which the backward reads.
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor,
           at::Tensor>
rank_sort_forward(const Kernels& k, const at::Tensor& scores, const at::Tensor& targets,
                  const std::optional<at::Tensor>& group_ids, double delta);

// The same driver with aLRP loss's positive stage. Returns (cls_loss, loc_weights, state,
// offsets, codes, positive_grads, classes); loc_loss = sum_k regression_losses[k]
// loc_weights[k].
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>
alrp_forward(
    const Kernels& k, const at::Tensor& scores, const at::Tensor& labels,
    const at::Tensor& regression_losses, const std::optional<at::Tensor>& group_ids,
    double delta);

// Pass 2, the backward of every loss: grad_output * the error-driven gradient, shaped
// like scores. classes, state, offsets, positive_grads: as the forward returned them.
at::Tensor backward(const Kernels& k, const at::Tensor& grad_output, const at::Tensor& scores,
                    const at::Tensor& labels, const at::Tensor& classes,
                    const std::optional<at::Tensor>& codes, const at::Tensor& state,
                    const at::Tensor& offsets, const at::Tensor& positive_grads, double delta,
                    c10::string_view method);

// The stages as operators, for callers that communicate between them
// (aploss_cuda/distributed.py). `codes`: dense int32 codes broadcastable to scores, a
// code outside [0, U) being a group without positives; none: the single ranking.
at::Tensor gather(const Kernels& k, const at::Tensor& scores, const at::Tensor& labels,
                  const std::optional<at::Tensor>& codes);
at::Tensor pass1(const Kernels& k, const at::Tensor& scores, const at::Tensor& labels,
                 const std::optional<at::Tensor>& codes, const at::Tensor& positives,
                 const at::Tensor& offsets, const at::Tensor& positive_group, double delta,
                 c10::string_view method);
std::tuple<at::Tensor, at::Tensor, at::Tensor> positive_stage(
    const Kernels& k, const at::Tensor& positives, const at::Tensor& offsets,
    const at::Tensor& positive_group, const at::Tensor& positions,
    const at::Tensor& false_positives, double delta, bool interpolate, at::ScalarType loss_dtype,
    c10::string_view method);

// The positive stages of Rank & Sort and aLRP loss as operators (for process_group):
// positives, offsets, positive_group, positions and memory_rank as rank_positives returns
// them; targets / regression_losses one float64 value per sorted positive.
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> rank_sort_stage(
    const Kernels& k, const at::Tensor& positives, const at::Tensor& offsets,
    const at::Tensor& positive_group, const at::Tensor& positions,
    const at::Tensor& false_positives, const at::Tensor& targets, double delta,
    at::ScalarType loss_dtype);
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> alrp_stage(
    const Kernels& k, const at::Tensor& positives, const at::Tensor& offsets,
    const at::Tensor& positive_group, const at::Tensor& positions, const at::Tensor& memory_rank,
    const at::Tensor& false_positives, const at::Tensor& regression_losses, double delta,
    at::ScalarType loss_dtype);

// What the user called, put in front of every ValueError and TypeError an operator raises
// (the kernels' messages do not know it): the losses' names for their forward operators
// (the Python API calls those), the operator's own name for the others.
inline constexpr char kApLoss[] = "ap_loss";
inline constexpr char kRankSortLoss[] = "rank_sort_loss";
inline constexpr char kALRPLoss[] = "alrp_loss";
inline constexpr char kPass2[] = "aploss::pass2";
inline constexpr char kGather[] = "aploss::gather";
inline constexpr char kPass1[] = "aploss::pass1";
inline constexpr char kPositiveStage[] = "aploss::positive_stage";
inline constexpr char kRankSortStage[] = "aploss::rank_sort_stage";
inline constexpr char kALRPStage[] = "aploss::alrp_stage";
inline constexpr char kRankPositives[] = "aploss::rank_positives";
inline constexpr char kRankSortLabels[] = "aploss::rank_sort_labels";

// f(), with `name: ` in front of the message of a ValueError or TypeError it raises.
template <const char* name, typename F>
auto named(F&& f) -> decltype(f()) {
  try {
    return f();
  } catch (const c10::ValueError& e) {
    TORCH_CHECK_VALUE(false, name, ": ", e.msg());
  } catch (const c10::TypeError& e) {
    TORCH_CHECK_TYPE(false, name, ": ", e.msg());
  }
}

// fn(table(), args...) as a plain function for m.impl: one operator bound to the table
// of one dispatch key, its errors named.
template <const Kernels& (*table)(), const char* name, auto fn>
struct WithTable;

template <const Kernels& (*table)(), const char* name, typename R, typename... Args,
          R (*fn)(const Kernels&, Args...)>
struct WithTable<table, name, fn> {
  static R call(Args... args) {
    return named<name>([&]() -> R { return fn(table(), args...); });
  }
};

template <const Kernels& (*table)()>
void register_backend(torch::Library& m) {
  m.impl("ap_loss_forward", &WithTable<table, kApLoss, &forward>::call);
  m.impl("rank_sort_forward", &WithTable<table, kRankSortLoss, &rank_sort_forward>::call);
  m.impl("alrp_forward", &WithTable<table, kALRPLoss, &alrp_forward>::call);
  m.impl("pass2", &WithTable<table, kPass2, &backward>::call);
  m.impl("gather", &WithTable<table, kGather, &gather>::call);
  m.impl("pass1", &WithTable<table, kPass1, &pass1>::call);
  m.impl("positive_stage", &WithTable<table, kPositiveStage, &positive_stage>::call);
  m.impl("rank_sort_stage", &WithTable<table, kRankSortStage, &rank_sort_stage>::call);
  m.impl("alrp_stage", &WithTable<table, kALRPStage, &alrp_stage>::call);
}

}  // namespace ops
}  // namespace aploss
