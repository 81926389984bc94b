// The device-specific layer: each backend (CPU, CUDA) provides this table of kernels
// and registers the operators with it for its dispatch key (../ops.h). Everything else
// (input preparation, sorting P values, the losses' positive stages) is device-agnostic
// ATen code in ../stages.cpp and the losses' files (../losses.h).
//
// Conventions for every kernel:
//   scores, labels: 1-D views of the same N entries in memory order (../flat_inputs.h),
//                   scores floating (fp16/bf16/fp32/fp64), labels in their own dtype.
//   positives:      (2, P) float64, P >= 1: row 0 the positives' scores sorted ascending
//                   (q), row 1 each one's cluster shift (math.h, StepParams).
//   state:          (kStateRows, P+1) float64, built by the positive stage (see below).
#pragma once

#include <ATen/core/Tensor.h>

#include <optional>
#include <tuple>

namespace aploss {

class Invariants;

// Rows of the O(P) state the forward keeps for the backward.
enum StateRow : int64_t {
  kRowQ = 0,        // sorted positive scores (last column repeats q[P-1])
  kRowShift = 1,    // cluster shift of each positive (last column repeats)
  kRowW = 2,        // w_i / P                  (last column 0)
  kRowPrefixW = 3,  // W(k) = sum_{i<k} w_i / P, k = 0..P
  kRowPrefixQ = 4,  // Q(k) = sum_{i<k} (q_i - shift_i) w_i / P
  kStateRows = 5,
};

// The rows of a contiguous state tensor as pointers (host side; the CUDA kernels take
// the same layout from a device pointer).
struct StateView {
  int64_t num_pos;
  const double* q;
  const double* shift;
  const double* w;
  const double* prefix_w;
  const double* prefix_q;
};

inline StateView view_state(const at::Tensor& state) {
  const int64_t width = state.size(1);
  const double* base = state.const_data_ptr<double>();
  return {width - 1,
          base + kRowQ * width,
          base + kRowShift * width,
          base + kRowW * width,
          base + kRowPrefixW * width,
          base + kRowPrefixQ * width};
}

// One ungrouped ranking evaluated by the sorted method, for a backend that runs it as a
// whole (Kernels::ranking_forward).
enum class LossKind { kAP, kRankSort, kALRP };

struct RankingInputs {
  at::Tensor scores;  // 1-D, memory order (../flat_inputs.h)
  at::Tensor labels;  // 1-D, same order: labels, or Rank & Sort's targets
  LossKind loss;
  double delta;
  bool interpolate;              // AP-loss
  at::Tensor regression_losses;  // aLRP: one per positive, in the positives' memory order
};

struct RankingOutputs {
  at::Tensor loss;            // 0-dim, scores' dtype
  at::Tensor parts;           // Rank & Sort: (2,) float64 ranking and sorting loss
  at::Tensor loc_weights;     // aLRP: (P,) float64, d loc_loss / d regression_losses
  at::Tensor state;           // 1-D uint8: what ranking_backward reads
  at::Tensor offsets;         // (2,) int64: [0, P]
  at::Tensor positive_grads;  // (P, 2) float64: each positive's [position, gradient]
  at::Tensor classes;         // int64: the entries' classes, 32 per word (ranking_backward),
                              // or empty: pass 2 reads the labels
  at::Tensor labels;          // Rank & Sort, where pass 2 reads labels: its int8 labels
};

// Dense int32 codes and how many distinct ids there are (Kernels::dense_codes), and the
// lowest id where the backend found it on the way (the CPU's pass reads every id; a GPU
// would need one more host read), else nullopt.
struct CodesAndCount {
  at::Tensor codes;
  int64_t count;
  std::optional<int64_t> lowest;
};

// The table's entry points, each written once, with its contract:
// X(return type, name, (parameters)). The Kernels struct below holds a pointer per entry,
// and each backend declares its functions and fills its table from the same lists (the
// expansions after them).
#define APLOSS_KERNEL_ENTRIES(X)                                                                  \
  /* Validates every label (ValueError naming the first bad value) and every score that           \
     takes part; returns the positives as (3, P) float64 [score; code; position], in no           \
     particular order: each positive's score, its group code (`codes` below; 0 when codes         \
     is undefined, the single ranking) and its index in the flat entries. */                      \
  X(at::Tensor, gather,                                                                           \
    (const at::Tensor& scores, const at::Tensor& labels, const at::Tensor& codes,                 \
     int64_t code_repeat))                                                                        \
                                                                                                  \
  /* Sorted pass 1: (3, P+1) float64 difference arrays d1, da, db summed over the                 \
     negatives (math.h, negative_contributions). ValueError on a non-finite negative. */          \
  X(at::Tensor, sorted_pass1,                                                                     \
    (const at::Tensor& scores, const at::Tensor& labels, const at::Tensor& positives,             \
     double delta))                                                                               \
                                                                                                  \
  /* Pairwise pass 1: (P,) float64, fp(i) = sum over negatives of H(s_j - q_i). */                \
  X(at::Tensor, pairwise_pass1,                                                                   \
    (const at::Tensor& scores, const at::Tensor& labels, const at::Tensor& positives,             \
     double delta))                                                                               \
                                                                                                  \
  /* Pass 2: writes grad_output * d loss / d s for every negative into `grad` (same               \
     dtype and memory order as scores), 0 for every other entry: the positives' gradients         \
     come from the positive stage, by position (../stages.h, pass2). grad_output is a             \
     0-dim tensor on the device. */                                                               \
  X(void, sorted_pass2,                                                                           \
    (const at::Tensor& scores, const at::Tensor& labels, const at::Tensor& state,                 \
     double delta, const at::Tensor& grad_output, at::Tensor& grad))                              \
  X(void, pairwise_pass2,                                                                         \
    (const at::Tensor& scores, const at::Tensor& labels, const at::Tensor& state,                 \
     double delta, const at::Tensor& grad_output, at::Tensor& grad))                              \
                                                                                                  \
  /* Grouped rankings (grouped_intervals.h). `codes`: 1-D int32 dense group codes in              \
     [0, U) (other codes: no group), one per entry in the order of scores (code_repeat            \
     1); or, with broadcast_codes, as code_layout.h lays them out: entry i's code is              \
     codes[(i / code_repeat) % codes.numel()] (group_ids broadcast over the scores, e.g.          \
     one per class or one per image). `offsets`: (U+1) int64, group u's positives are             \
     columns [offsets[u], offsets[u+1]) of `positives` / `state`. */                              \
                                                                                                  \
  /* As sorted_pass1, each negative against its own group's segment. */                           \
  X(at::Tensor, grouped_pass1,                                                                    \
    (const at::Tensor& scores, const at::Tensor& labels, const at::Tensor& codes,                 \
     int64_t code_repeat, const at::Tensor& positives, const at::Tensor& offsets,                 \
     double delta))                                                                               \
  /* As sorted_pass2, each entry against its own group's segment. */                              \
  X(void, grouped_pass2,                                                                          \
    (const at::Tensor& scores, const at::Tensor& labels, const at::Tensor& codes,                 \
     int64_t code_repeat, const at::Tensor& state, const at::Tensor& offsets, double delta,       \
     const at::Tensor& grad_output, at::Tensor& grad))                                            \
                                                                                                  \
  /* Sums among the positives, for the losses whose positive stage weighs positives by a          \
     value and by a second key (Rank & Sort: the targets; aLRP: the regression losses).           \
     `offsets` as above ([0, P] for a single ranking); `values` (V, P) float64 and `keys`         \
     (P,) float64 (undefined: no key condition) are in the columns' order. Returns (V, P)         \
     float64: for every positive x and row r, the sum over the positives m of x's segment         \
     with keys[m] < keys[x] (below) or keys[m] >= keys[x] (not below) of                          \
       H(q_m - q_x) values[r][m]      (transpose false), or                                       \
       H(q_x - q_m) values[r][m]      (transpose true). */                                        \
  X(at::Tensor, positive_window_sums,                                                             \
    (const at::Tensor& positives, const at::Tensor& offsets, const at::Tensor& keys,              \
     const at::Tensor& values, double delta, bool below, bool transpose))                         \
                                                                                                  \
  /* Deterministic pass 1 of one ranking (pass1_record.h): (3, N) float64 rows lo, hi, a      \
     of every entry. */                                                                           \
  X(at::Tensor, pass1_records,                                                                    \
    (const at::Tensor& scores, const at::Tensor& labels, const at::Tensor& positives,             \
     double delta))                                                                               \
                                                                                                  \
  /* Dense int32 codes (shaped like ids, contiguous) of arbitrary int64 ids, how many           \
     distinct ids there are, and optionally the lowest (../group_codes.cpp uses it for           \
     large ids and refuses negative signed ids). */                                               \
  X(CodesAndCount, dense_codes, (const at::Tensor& ids))                                          \
                                                                                                  \
  /* The forward of one ungrouped ranking by the sorted method as a whole, with at most           \
     one host read (nullptr: the driver strings the stages above). */                             \
  X(RankingOutputs, ranking_forward, (const RankingInputs& in))

// The backward of a ranking_forward that returns entry classes, from its state,
// positive_grads and classes. Only such a backend provides these (the others: nullptr).
#define APLOSS_RANKING_BACKWARD_ENTRIES(X)                                                        \
  /* Pass 2 from the forward's state: grad (1-D, like scores). */                                 \
  X(void, ranking_backward,                                                                       \
    (const at::Tensor& scores, const at::Tensor& classes, const at::Tensor& state,                \
     const at::Tensor& positive_grads, const at::Tensor& grad_output, at::Tensor& grad))          \
  /* What ranking_backward requires of its state, classes and positive_grads when they do         \
     not come straight from ranking_forward (the operators' callers other than the losses'        \
     autograd, ../op_checks.h): their sizes (raised at once) and their invariants (added          \
     to `inv`). */                                                                                \
  X(void, check_ranking_state,                                                                    \
    (Invariants& inv, const at::Tensor& scores, const at::Tensor& classes,                        \
     const at::Tensor& state, const at::Tensor& positive_grads))

// Grouped rankings with one code per entry, where pass 2 need not find each entry's
// interval again: pass 1 writes it over the entry's code (in the forward's own codes, an
// N-sized int32 tensor that nothing else reads after pass 1), and pass 2 reads it back.
// A backend that records intervals provides both (the others: nullptr).
#define APLOSS_RECORDED_INTERVAL_ENTRIES(X)                                                       \
  /* grouped_pass1 with code_repeat 1, which also overwrites each entry's code with its          \
     interval as recorded_pass2 reads it (0: no gradient). */                                     \
  X(at::Tensor, grouped_pass1_recording,                                                          \
    (const at::Tensor& scores, const at::Tensor& labels, const at::Tensor& codes,                 \
     const at::Tensor& positives, const at::Tensor& offsets, double delta))                       \
  /* grouped_pass2 from those intervals (1-D int32, one per entry; read as unsigned, an           \
     interval past the index's last has no gradient): no labels or codes are read. */             \
  X(void, recorded_pass2,                                                                         \
    (const at::Tensor& scores, const at::Tensor& intervals, const at::Tensor& state,              \
     const at::Tensor& offsets, double delta, const at::Tensor& grad_output, at::Tensor& grad))

// The lists' expansions: the table's field; a backend's declaration (in its namespace);
// a backend's table entry, its function of that name (expanded in its namespace); an
// entry the backend does not provide.
#define APLOSS_KERNEL_FIELD(ret, name, params) ret(*name) params;
#define APLOSS_DECLARE_KERNEL(ret, name, params) ret name params;
#define APLOSS_KERNEL_POINTER(ret, name, params) &name,
#define APLOSS_NO_KERNEL(ret, name, params) nullptr,

struct Kernels {
  APLOSS_KERNEL_ENTRIES(APLOSS_KERNEL_FIELD)
  APLOSS_RANKING_BACKWARD_ENTRIES(APLOSS_KERNEL_FIELD)
  APLOSS_RECORDED_INTERVAL_ENTRIES(APLOSS_KERNEL_FIELD)

  // Whether sorted_pass1 adds with float atomics (order-dependent last bits): under
  // torch.use_deterministic_algorithms(True) pass 1 then sums pass1_records instead
  // (../deterministic_pass1.cpp). grouped_pass1 must be the same in every run.
  bool pass1_float_atomics;

  // Whether gather / grouped_pass1 / grouped_pass2 read broadcast codes (above);
  // otherwise they get one code per entry.
  bool broadcast_codes;

  // Whether the kernels' tensors are in host memory, where the driver may read and write
  // them directly (the CPU; not a GPU, emulated or not).
  bool host_memory;
};

const Kernels& cpu_kernels();
// The table behind the CPU dispatch key: the emulated device's when the tests set one.
const Kernels& cpu_device_kernels();
#if defined(APLOSS_WITH_CUDA) || defined(APLOSS_SIMT)
const Kernels& cuda_kernels();
#endif

// The emulated CUDA device of the test suite (tests/simt): the CUDA kernel table compiled
// for the host, which the driver then uses for CPU tensors. nullptr (the default, and
// always outside the tests): CPU tensors use the CPU kernels.
void set_emulated_device_kernels(const Kernels* table);
const Kernels* emulated_device_kernels();

// The name of a PyCapsule holding a `const Kernels*`. The build defines
// APLOSS_KERNELS_ABI from this header's text and torch's version (setup.py,
// tests/simt/build.py), so a table compiled from other sources is refused, not misread.
#define APLOSS_STRINGIFY_(x) #x
#define APLOSS_STRINGIFY(x) APLOSS_STRINGIFY_(x)
#ifdef APLOSS_KERNELS_ABI
#define APLOSS_KERNELS_CAPSULE "aploss.Kernels." APLOSS_STRINGIFY(APLOSS_KERNELS_ABI)
#else
#define APLOSS_KERNELS_CAPSULE "aploss.Kernels.unversioned"
#endif

}  // namespace aploss
