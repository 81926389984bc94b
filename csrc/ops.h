// The aploss operators, implemented once over a kernel table (aploss/kernels.h). Each
// backend registers them for its dispatch key with its own table, as torchvision's ops
// do: register_backend<&cpu_device_kernels> (ops.cpp), <&cuda_kernels>
// (cuda/register_cuda.cpp). The schema is in ops.cpp. Operators are named for what they
// do: loss_forward / loss_backward for every loss, and the stages by their names.
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

// Every loss's forward: the pipeline (pipeline.h) for the loss named `loss` (losses.h).
// Returns (loss, extra, state, offsets, codes, labels, positive_grads, classes), as
// pipeline.h's ForwardOutputs; all but loss and extra are what loss_backward reads.
using ForwardTuple = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor,
                                at::Tensor, at::Tensor, at::Tensor>;
ForwardTuple loss_forward(const Kernels& k, c10::string_view loss, const at::Tensor& scores,
                          const at::Tensor& labels, const std::optional<at::Tensor>& values,
                          const std::optional<at::Tensor>& group_ids, double delta,
                          bool interpolate, c10::string_view method);

// Every loss's backward, pass 2: grad_output * the error-driven gradient, shaped like
// scores. labels: the forward's labels output where it is not empty, else its input;
// classes, state, offsets, positive_grads: as the forward returned them.
at::Tensor loss_backward(const Kernels& k, const at::Tensor& grad_output,
                         const at::Tensor& scores, const at::Tensor& labels,
                         const at::Tensor& classes, const std::optional<at::Tensor>& codes,
                         const at::Tensor& state, const at::Tensor& offsets,
                         const at::Tensor& positive_grads, double delta,
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
// The loss's positive stage: positives, offsets, positive_group, positions and
// memory_rank as rank_positives returns them; values (the loss's, LossDef::values_name)
// one float64 per positive in the positives' memory order. Returns (loss, extra, state,
// positive_grads).
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> positive_stage(
    const Kernels& k, c10::string_view loss, const at::Tensor& positives,
    const at::Tensor& offsets, const at::Tensor& positive_group, const at::Tensor& positions,
    const at::Tensor& memory_rank, const at::Tensor& false_positives,
    const std::optional<at::Tensor>& values, double delta, bool interpolate,
    at::ScalarType loss_dtype, c10::string_view method);

// What the user called, put in front of every ValueError and TypeError an operator raises
// (the kernels' messages do not know it): the loss's name for its forward (the Python API
// calls it), the operator's own name for the others.
inline constexpr char kLossForward[] = "aploss::loss_forward";  // before the loss is known
inline constexpr char kLossBackward[] = "aploss::loss_backward";
inline constexpr char kLossLabels[] = "aploss::loss_labels";
inline constexpr char kPositiveValues[] = "aploss::positive_values";
inline constexpr char kGather[] = "aploss::gather";
inline constexpr char kPass1[] = "aploss::pass1";
inline constexpr char kPositiveStage[] = "aploss::positive_stage";
inline constexpr char kRankPositives[] = "aploss::rank_positives";

// f(), with `name: ` in front of the message of a ValueError or TypeError it raises.
template <typename F>
auto named(const char* name, F&& f) -> decltype(f()) {
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
    if (name == nullptr) return fn(table(), args...);  // fn names its errors itself
    return named(name, [&]() -> R { return fn(table(), args...); });
  }
};

// The loss's forward names its errors by the loss, which only it knows.
inline constexpr const char* kNamedByLoss = nullptr;

template <const Kernels& (*table)()>
void register_backend(torch::Library& m) {
  m.impl("loss_forward", &WithTable<table, kNamedByLoss, &loss_forward>::call);
  m.impl("loss_backward", &WithTable<table, kLossBackward, &loss_backward>::call);
  m.impl("gather", &WithTable<table, kGather, &gather>::call);
  m.impl("pass1", &WithTable<table, kPass1, &pass1>::call);
  m.impl("positive_stage", &WithTable<table, kPositiveStage, &positive_stage>::call);
}

}  // namespace ops
}  // namespace aploss
