// What the operators accept: the losses' options, and the internal tensors that the stage
// operators and pass 2 take from a caller (aploss_cuda/distributed.py, or anyone calling
// torch.ops.aploss.* directly). Each internal tensor is checked for its structure (dtype,
// device, shape: O(1), TypeError / ValueError) and for the invariants that the kernels rely
// on and that the forward establishes (Invariants: O(P) work and one host read), so that
// no input can crash a kernel or make it read out of bounds, and a tensor that is not what
// the forward returned is refused rather than turned into a gradient.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>

#include "aploss/invariants.h"
#include "stages.h"

namespace aploss {
namespace checks {

// delta: finite and at least the smallest normal float64 (1 / (2 delta) must be finite).
void check_delta(double delta);
// And a delta whose inverse the scores' key type holds (float32 for float32 and 16-bit
// scores, csrc/aploss/intervals.h): delta >= float32's smallest normal unless float64.
void check_delta_for_scores(at::ScalarType scores_dtype, double delta);

// `t` is a `dtype` tensor of `rank` dims on `device` (TypeError / ValueError naming it).
void expect_tensor(const at::Tensor& t, const char* name, at::ScalarType dtype, int64_t rank,
                   const at::Device& device);

// (U + 1) offsets: from 0 to P, not decreasing.
void check_offsets(Invariants& inv, const at::Tensor& offsets, int64_t num_pos);

// The positives as rank_positives returns them: (2, P) float64 [q; cluster shift], P >= 1,
// (U + 1) int64 offsets, (P,) int64 positive_group. Invariants: offsets from 0 to P, not
// decreasing; each positive's group owns its column; q finite and sorted within each
// group; the shifts those of q under delta.
void check_positives(Invariants& inv, const Positives& pos, double delta);

// (P,) int64 `name` (positions, memory ranks) with values in [0, bound).
void check_indices(Invariants& inv, const at::Tensor& t, const char* name, int64_t num_pos,
                   int64_t bound, const at::Device& device);

// (P,) float64 `name` with finite values >= 0 (and <= 1 with `at_most_one`).
void check_per_positive(Invariants& inv, const at::Tensor& t, const char* name,
                        int64_t num_pos, bool at_most_one, const at::Device& device);

// Pass 2's inputs when the state holds the stages' rows ((kStateRows, P + 1) float64 as
// bytes, kernels.h), whose shapes the caller checked: the rows' invariants (q and the
// shifts as check_positives has them, the weights finite and >= 0, their prefix sums
// finite and not decreasing), offsets from 0 to P, positive_grads' distinct positions in
// [0, n) and finite gradients.
void check_state_rows(Invariants& inv, const at::Tensor& rows, const at::Tensor& offsets,
                      const at::Tensor& positive_grads, int64_t n, double delta);

// (P, 2) float64 [position; gradient]: distinct integral positions in [0, n), finite
// gradients.
void check_positive_grads(Invariants& inv, const at::Tensor& positive_grads, int64_t n,
                          const at::Device& device);

// While one is alive on this thread, pass 2 takes its state, offsets and positive
// gradients as given, without the O(P) invariants: the losses' autograd passes the
// forward's own outputs, saved for backward, which autograd refuses to use once they
// have been modified in place.
class TrustForwardOutputs {
 public:
  TrustForwardOutputs();
  ~TrustForwardOutputs();
  TrustForwardOutputs(const TrustForwardOutputs&) = delete;
  TrustForwardOutputs& operator=(const TrustForwardOutputs&) = delete;

 private:
  bool previous_;
};
bool forward_outputs_trusted();
// The same switch for Python (aploss_cuda/distributed.py's backward): returns the previous
// setting.
bool set_forward_outputs_trusted(bool trusted);

}  // namespace checks
}  // namespace aploss
