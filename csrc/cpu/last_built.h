// The last object of a type that a pass built from its inputs, kept while the next
// request is for the same inputs, bit for bit: a ranking's pass 1, its positive stage
// and its pass 2 index the same positives, so they build the index once.
#pragma once

#include <memory>
#include <mutex>

namespace aploss {
namespace cpu {

template <typename T>
class LastBuilt {
 public:
  // The kept object if matches(it), else build()'s, which is then kept.
  template <typename Matches, typename Build>
  static std::shared_ptr<const T> get(const Matches& matches, const Build& build) {
    {
      const std::lock_guard<std::mutex> lock(mutex());
      if (last() != nullptr && matches(*last())) return last();
    }
    std::shared_ptr<const T> built = build();
    const std::lock_guard<std::mutex> lock(mutex());
    last() = built;
    return built;
  }

 private:
  static std::mutex& mutex() {
    static std::mutex m;
    return m;
  }
  static std::shared_ptr<const T>& last() {
    static std::shared_ptr<const T> kept;
    return kept;
  }
};

}  // namespace cpu
}  // namespace aploss
