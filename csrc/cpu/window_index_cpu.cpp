// The last window index built, shared by the passes of one ranking (window_index_cpu.h).
#include "window_index_cpu.h"

#include <mutex>

namespace aploss {
namespace cpu {

std::shared_ptr<const OwnedWindowIndex> window_index(const double* q, int64_t num_pos,
                                                     double delta) {
  static std::mutex mutex;
  static std::shared_ptr<const OwnedWindowIndex> last;
  {
    const std::lock_guard<std::mutex> lock(mutex);
    if (last != nullptr && last->indexes(q, num_pos, delta)) return last;
  }
  auto built = std::make_shared<const OwnedWindowIndex>(q, num_pos, delta);
  const std::lock_guard<std::mutex> lock(mutex);
  last = built;
  return built;
}

}  // namespace cpu
}  // namespace aploss
