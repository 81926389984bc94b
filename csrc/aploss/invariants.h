// Conditions on the values of an operator's inputs, computed where the values live and
// read back together: one host read for all of them (read_to_host), O(P) device work.
// Each condition must be computable whatever the values are (indices clamped before a
// gather), since none is known to hold when the others are evaluated.
#pragma once

#include <ATen/ATen.h>

#include <string>
#include <utility>
#include <vector>

#include "host_reads.h"

namespace aploss {

class Invariants {
 public:
  // `holds`: a bool tensor of any shape, all of which must be true.
  void require(const at::Tensor& holds, std::string message) {
    conditions_.push_back(holds.numel() == 1 ? holds.reshape({}) : holds.all());
    messages_.push_back(std::move(message));
  }

  // ValueError with the message of the first condition that does not hold.
  void raise_if_broken() const {
    if (conditions_.empty()) return;
    const at::Tensor held = read_to_host(at::stack(conditions_).to(at::kBool));
    const bool* ok = held.const_data_ptr<bool>();
    for (size_t i = 0; i < messages_.size(); ++i) {
      TORCH_CHECK_VALUE(ok[i], messages_[i]);
    }
  }

 private:
  std::vector<at::Tensor> conditions_;
  std::vector<std::string> messages_;
};

}  // namespace aploss
