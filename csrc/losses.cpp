#include "losses.h"

#include <c10/util/Exception.h>

#include <string>

namespace aploss {

// The registration list: a new loss adds its definition (its own file) here.
extern const LossDef kApLossDef;
extern const LossDef kRankSortLossDef;
extern const LossDef kALRPLossDef;

namespace {

const LossDef* const kLosses[] = {&kApLossDef, &kRankSortLossDef, &kALRPLossDef};

}  // namespace

const LossDef& find_loss(c10::string_view name) {
  for (const LossDef* loss : kLosses) {
    if (name == loss->name) return *loss;
  }
  std::string known;
  for (const LossDef* loss : kLosses) {
    known += std::string(known.empty() ? "'" : ", '") + loss->name + "'";
  }
  TORCH_CHECK_VALUE(false, "loss must be one of ", known, "; got '", std::string(name), "'");
}

}  // namespace aploss
