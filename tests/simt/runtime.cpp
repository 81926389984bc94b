// The emulated device's runtime: fibers, the per-block scheduler with its strict
// barrier and warp-collective checks, shared memory, launch checks and the CUDA runtime
// calls the kernels' host code makes. See simt.h for what it proves.
#include "runtime.h"

#include <signal.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <mutex>
#include <random>
#include <sstream>

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#define SIMT_ASAN 1
#else
#define SIMT_ASAN 0
#endif

#if !defined(__x86_64__)
#include <ucontext.h>
#endif

namespace simt {

Coords* detail::running_coords = nullptr;

namespace {

// ---- fibers ----------------------------------------------------------------------------------

#if SIMT_ASAN
constexpr size_t kStackBytes = 1 << 20;  // instrumented frames are larger
#else
constexpr size_t kStackBytes = 256 << 10;
#endif
const size_t kPageBytes = static_cast<size_t>(sysconf(_SC_PAGESIZE));

enum class State : uint8_t { kReady, kBarrier, kCollective, kExited, kFailed };

struct Fiber {
  void* sp = nullptr;  // saved stack pointer while not running
  char* stack = nullptr;  // lowest usable byte (the guard page lies below)
  Coords coords;
  State state = State::kExited;
  // What the fiber waits at.
  Site site{nullptr, 0};
  Op op = Op::kSyncthreads;
  unsigned mask = 0;
  uint64_t value = 0;
  int arg = 0;
  int width = 32;
  uint64_t result = 0;
  size_t shared_calls = 0;
#if SIMT_ASAN
  void* fake_stack = nullptr;
#endif
#if !defined(__x86_64__)
  ucontext_t context;
#endif
};

#if defined(__x86_64__)
// Saves the callee-saved registers, the SSE and x87 control words and the stack pointer
// of the running context into *save_sp, then resumes the context saved at load_sp.
extern "C" void simt_switch_stack(void** save_sp, void* load_sp);
asm(R"(
    .text
    .p2align 4
    .globl simt_switch_stack
    .hidden simt_switch_stack
    .type simt_switch_stack, @function
simt_switch_stack:
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    subq $16, %rsp
    stmxcsr 8(%rsp)
    fnstcw (%rsp)
    movq %rsp, (%rdi)
    movq %rsi, %rsp
    ldmxcsr 8(%rsp)
    fldcw (%rsp)
    addq $16, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret
    .size simt_switch_stack, .-simt_switch_stack
)");
#endif

extern "C" [[noreturn]] void simt_fiber_entry();

// ---- one launch --------------------------------------------------------------------------------

struct SharedRegion {
  char* base = nullptr;
  size_t bytes = 0;
  Site site{nullptr, 0};
};

// A block's shared memory: one arena, larger than any profile's opt-in limit, with a
// guard page after it. Regions (the dynamic one first, then each static array) are
// filled with garbage and separated by canaries; the rest is canary. A write past a
// region lands in a canary, checked when the block ends, or in the guard page.
constexpr size_t kCanaryBytes = 64;
constexpr size_t kArenaBytes = (227 << 10) + (64 << 10);
constexpr size_t kTailCheckBytes = 64 << 10;  // canary checked past the last region
constexpr unsigned char kCanary = 0xA5;
constexpr unsigned char kGarbage = 0xFF;  // as a double: NaN; as an integer: -1

struct KernelInfo {
  int max_dynamic_smem = -1;  // cudaFuncSetAttribute; -1: the 48 KiB default
  size_t static_smem = 0;     // learnt from its runs (0 until it has run)
};

struct Block {
  const detail::LaunchInfo* launch = nullptr;
  detail::Body body{};
  KernelInfo* kernel = nullptr;
  dim3 index;
  int threads = 0;
  Fiber* running = nullptr;
  void* scheduler_sp = nullptr;
#if !defined(__x86_64__)
  ucontext_t scheduler_context;
#endif
  std::vector<SharedRegion> shared;
  size_t static_bytes = 0;
  SharedRegion dynamic;
  size_t arena_used = 0;
  bool failed = false;
  std::string error;
};

struct Runtime {
  std::mutex mutex;  // one launch at a time
  char* arena = nullptr;
  Config config;
  std::vector<Fiber> fibers;
  std::map<std::pair<const void*, int>, KernelInfo> kernels;  // per kernel and device
  std::vector<LaunchRecord> log;
  cudaError_t last_error = cudaSuccess;
  std::string detail;
  uint64_t launches = 0;
  Block* block = nullptr;
#if SIMT_ASAN
  const void* scheduler_stack_bottom = nullptr;
  size_t scheduler_stack_size = 0;
#endif
};

Runtime& rt() {
  static Runtime* runtime = [] {
    auto* r = new Runtime;
    r->config.device = 0;
    r->config.thread_order = Order::kForward;
    r->config.block_order = Order::kForward;
    r->config.seed = 0;
    return r;
  }();
  return *runtime;
}

const DeviceProfile& current_device(const Runtime& r) {
  return devices()[static_cast<size_t>(r.config.device)];
}

KernelInfo& kernel_info(Runtime& r, const void* kernel) {
  return r.kernels[{kernel, r.config.device}];
}

const char* op_name(Op op) {
  switch (op) {
    case Op::kSyncthreads: return "__syncthreads";
    case Op::kSyncthreadsOr: return "__syncthreads_or";
    case Op::kSyncthreadsAnd: return "__syncthreads_and";
    case Op::kSyncthreadsCount: return "__syncthreads_count";
    case Op::kShfl: return "__shfl_sync";
    case Op::kShflUp: return "__shfl_up_sync";
    case Op::kShflDown: return "__shfl_down_sync";
    case Op::kShflXor: return "__shfl_xor_sync";
    case Op::kBallot: return "__ballot_sync";
    case Op::kAny: return "__any_sync";
    case Op::kAll: return "__all_sync";
  }
  return "?";
}

std::string str(dim3 d) {
  std::ostringstream s;
  s << "(" << d.x << "," << d.y << "," << d.z << ")";
  return s.str();
}

std::string str(Site site) {
  std::ostringstream s;
  s << (site.file != nullptr ? site.file : "?") << ":" << site.line;
  return s.str();
}

bool same_site(Site a, Site b) {
  return a.line == b.line && (a.file == b.file || std::strcmp(a.file, b.file) == 0);
}

std::string waits_at(const Fiber& f) {
  std::ostringstream s;
  s << op_name(f.op) << " (" << str(f.site);
  if (f.state == State::kCollective) s << ", mask 0x" << std::hex << f.mask;
  s << ")";
  return s.str();
}

std::string where(const Block& b) {
  return std::string("kernel '") + b.launch->name + "' launched at " + str(b.launch->site) +
         ", block " + str(b.index) + " of " + str(b.launch->grid);
}

void fail(Block& b, const std::string& what) {
  if (b.failed) return;
  b.failed = true;
  b.error = where(b) + ": " + what;
}

// ---- switching ---------------------------------------------------------------------------------

void init_stack(Fiber& f) {
#if SIMT_ASAN
  ASAN_UNPOISON_MEMORY_REGION(f.stack, kStackBytes);
#endif
#if defined(__x86_64__)
  auto* top = reinterpret_cast<uint64_t*>(f.stack + kStackBytes);  // 16-byte aligned
  uint64_t* sp = top - 10;
  uint32_t mxcsr;
  uint16_t fcw;
  asm volatile("stmxcsr %0" : "=m"(mxcsr));
  asm volatile("fnstcw %0" : "=m"(fcw));
  std::memset(sp, 0, 10 * sizeof(uint64_t));
  std::memcpy(reinterpret_cast<char*>(sp), &fcw, sizeof(fcw));
  std::memcpy(reinterpret_cast<char*>(sp) + 8, &mxcsr, sizeof(mxcsr));
  sp[8] = reinterpret_cast<uint64_t>(&simt_fiber_entry);  // where the first switch "returns"
  f.sp = sp;
#else
  getcontext(&f.context);
  f.context.uc_stack.ss_sp = f.stack;
  f.context.uc_stack.ss_size = kStackBytes;
  f.context.uc_link = nullptr;
  makecontext(&f.context, reinterpret_cast<void (*)()>(&simt_fiber_entry), 0);
#endif
}

// Scheduler -> fiber; returns when the fiber waits, ends or fails.
void resume(Block& b, Fiber& f) {
  b.running = &f;
  detail::running_coords = &f.coords;
#if SIMT_ASAN
  void* fake = nullptr;
  __sanitizer_start_switch_fiber(&fake, f.stack, kStackBytes);
#endif
#if defined(__x86_64__)
  simt_switch_stack(&b.scheduler_sp, f.sp);
#else
  swapcontext(&b.scheduler_context, &f.context);
#endif
#if SIMT_ASAN
  __sanitizer_finish_switch_fiber(fake, nullptr, nullptr);
#endif
  b.running = nullptr;
  detail::running_coords = nullptr;
}

// Fiber -> scheduler; returns when the scheduler resumes this fiber.
void yield(Block& b, Fiber& f, bool final) {
  Runtime& r = rt();
#if SIMT_ASAN
  __sanitizer_start_switch_fiber(final ? nullptr : &f.fake_stack, r.scheduler_stack_bottom,
                                 r.scheduler_stack_size);
#else
  (void)final;
  (void)r;
#endif
#if defined(__x86_64__)
  simt_switch_stack(&f.sp, b.scheduler_sp);
#else
  swapcontext(&f.context, &b.scheduler_context);
#endif
#if SIMT_ASAN
  __sanitizer_finish_switch_fiber(f.fake_stack, nullptr, nullptr);
#endif
}

extern "C" [[noreturn]] void simt_fiber_entry() {
  Runtime& r = rt();
#if SIMT_ASAN
  __sanitizer_finish_switch_fiber(nullptr, &r.scheduler_stack_bottom, &r.scheduler_stack_size);
#endif
  Block& b = *r.block;
  Fiber& f = *b.running;
  b.body.call(b.body.object);
  f.state = State::kExited;
  yield(b, f, /*final=*/true);
  std::abort();  // an exited fiber is never resumed
}

// Waits from inside a fiber: records what it waits at and lets the others run.
Fiber& current_fiber() {
  Block* b = rt().block;
  if (b == nullptr || b->running == nullptr) {
    std::fprintf(stderr, "simt: a device function was called outside a kernel\n");
    std::abort();
  }
  return *b->running;
}

void fail_here(const std::string& what) {
  Block& b = *rt().block;
  Fiber& f = *b.running;
  fail(b, "thread " + str(f.coords.thread_idx) + " " + what);
  f.state = State::kFailed;
  yield(b, f, /*final=*/true);
  std::abort();  // a failed block is abandoned, never resumed
}

// ---- the scheduler -----------------------------------------------------------------------------

std::vector<int> thread_order(int n, Order order, std::mt19937_64& rng) {
  std::vector<int> ids(static_cast<size_t>(n));
  for (int i = 0; i < n; ++i) ids[static_cast<size_t>(i)] = i;
  if (order == Order::kReverse) std::reverse(ids.begin(), ids.end());
  if (order == Order::kRandom) std::shuffle(ids.begin(), ids.end(), rng);
  return ids;
}

int lane_of(int thread) { return thread & 31; }

std::string thread_name(const Fiber& f, int thread) {
  return "thread " + str(f.coords.thread_idx) + " (lane " + std::to_string(lane_of(thread)) + ")";
}

// Completes the warp collectives whose lanes have all arrived; false if none could.
// Messages are built only on failure: this runs after every round of every block.
bool complete_collectives(Block& b, std::vector<Fiber>& fibers) {
  bool progress = false;
  for (int t = 0; t < b.threads; ++t) {
    Fiber& a = fibers[static_cast<size_t>(t)];
    if (a.state != State::kCollective) continue;
    const int warp_base = t & ~31;
    const int warp_lanes = std::min(32, b.threads - warp_base);
    const auto who = [&] { return thread_name(a, t) + " waits at " + waits_at(a); };
    if ((a.mask & (1u << lane_of(t))) == 0) {
      fail(b, who() + ": its mask does not include its own lane");
      return false;
    }
    if (a.width <= 0 || a.width > 32 || (a.width & (a.width - 1)) != 0) {
      fail(b, who() + ": width " + std::to_string(a.width) + " is not a power of 2 up to 32");
      return false;
    }
    uint32_t ballot = 0;
    for (int k = 0; k < 32; ++k) {
      if ((a.mask & (1u << k)) == 0) continue;
      if (k >= warp_lanes) {
        fail(b, who() + ", but lane " + std::to_string(k) + " of its mask does not exist (" +
                    std::to_string(b.threads) + " threads per block)");
        return false;
      }
      const Fiber& o = fibers[static_cast<size_t>(warp_base + k)];
      if (o.state == State::kExited) {
        fail(b, who() + ", but " + thread_name(o, warp_base + k) + " has exited");
        return false;
      }
      if (o.state != State::kCollective || o.op != a.op || o.mask != a.mask ||
          o.width != a.width || !same_site(o.site, a.site)) {
        fail(b, who() + ", but " + thread_name(o, warp_base + k) + " waits at " + waits_at(o));
        return false;
      }
      if (o.value != 0) ballot |= 1u << k;
    }
    // Every lane of the mask is here: exchange. Results first, then release.
    for (int k = 0; k < 32; ++k) {
      if ((a.mask & (1u << k)) == 0) continue;
      Fiber& f = fibers[static_cast<size_t>(warp_base + k)];
      const int w = f.width;
      int source = k;
      switch (f.op) {
        case Op::kBallot: f.result = ballot; continue;
        case Op::kAny: f.result = ballot != 0; continue;
        case Op::kAll: f.result = ballot == a.mask; continue;
        case Op::kShfl: source = k / w * w + ((f.arg % w) + w) % w; break;
        case Op::kShflUp: source = (k % w) >= f.arg ? k - f.arg : k; break;
        case Op::kShflDown: source = (k % w) + f.arg < w ? k + f.arg : k; break;
        case Op::kShflXor: {
          const int target = k ^ f.arg;
          source = (target >= 0 && target < 32 && target / w <= k / w) ? target : k;
          break;
        }
        default: break;
      }
      if ((a.mask & (1u << source)) == 0) {
        fail(b, thread_name(f, warp_base + k) + " at " + waits_at(f) + " reads lane " +
                    std::to_string(source) + ", which is not in the mask");
        return false;
      }
      f.result = fibers[static_cast<size_t>(warp_base + source)].value;
    }
    for (int k = 0; k < 32; ++k) {
      if (a.mask & (1u << k)) fibers[static_cast<size_t>(warp_base + k)].state = State::kReady;
    }
    progress = true;
  }
  return progress;
}

// Releases a block barrier that every live thread has reached; fails otherwise.
void complete_barrier(Block& b, std::vector<Fiber>& fibers) {
  int first_id = -1;
  for (int t = 0; t < b.threads && first_id < 0; ++t) {
    if (fibers[static_cast<size_t>(t)].state == State::kBarrier) first_id = t;
  }
  if (first_id < 0) {
    fail(b, "deadlock: no thread can make progress");
    return;
  }
  const Fiber& first = fibers[static_cast<size_t>(first_id)];
  const auto who = [&] {
    return "thread " + str(first.coords.thread_idx) + " waits at " + waits_at(first);
  };
  uint64_t count = 0;
  for (int t = 0; t < b.threads; ++t) {
    const Fiber& o = fibers[static_cast<size_t>(t)];
    if (o.state == State::kExited) {
      fail(b, who() + ", but thread " + str(o.coords.thread_idx) + " has exited");
      return;
    }
    if (o.state != State::kBarrier || o.op != first.op || !same_site(o.site, first.site)) {
      fail(b, who() + ", but thread " + str(o.coords.thread_idx) + " waits at " + waits_at(o));
      return;
    }
    count += o.value;
  }
  uint64_t result = 0;
  switch (first.op) {
    case Op::kSyncthreadsOr: result = count > 0; break;
    case Op::kSyncthreadsAnd: result = count == static_cast<uint64_t>(b.threads); break;
    case Op::kSyncthreadsCount: result = count; break;
    default: break;
  }
  for (int t = 0; t < b.threads; ++t) {
    fibers[static_cast<size_t>(t)].result = result;
    fibers[static_cast<size_t>(t)].state = State::kReady;
  }
}

char* shared_arena(Runtime& r) {
  if (r.arena == nullptr) {
    void* region = mmap(nullptr, kArenaBytes + kPageBytes, PROT_READ | PROT_WRITE,
                        MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (region == MAP_FAILED) {
      std::fprintf(stderr, "simt: cannot map the shared-memory arena\n");
      std::abort();
    }
    r.arena = static_cast<char*>(region);
    mprotect(r.arena + kArenaBytes, kPageBytes, PROT_NONE);
    std::memset(r.arena, kCanary, kArenaBytes);
  }
  return r.arena;
}

// Places a region after the previous ones (16-byte aligned, a canary between).
SharedRegion place_region(Runtime& r, Block& b, size_t bytes, Site site) {
  const size_t offset = b.arena_used == 0 ? 0 : (b.arena_used + kCanaryBytes + 15) / 16 * 16;
  if (offset + bytes + kCanaryBytes > kArenaBytes) {
    std::fprintf(stderr, "simt: shared memory beyond the emulator's arena\n");
    std::abort();  // unreachable: the launch and allocation checks keep far below it
  }
  SharedRegion region{shared_arena(r) + offset, bytes, site};
#if SIMT_ASAN
  ASAN_UNPOISON_MEMORY_REGION(region.base, bytes);
#endif
  std::memset(region.base, kGarbage, bytes);
  b.arena_used = offset + bytes;
  return region;
}

// Every byte of the arena outside the regions (up to kTailCheckBytes past the last)
// still holds the canary; then the arena is reset for the next block.
bool arena_intact(Runtime& r, Block& b) {
  char* arena = shared_arena(r);
  const size_t end = std::min(kArenaBytes, b.arena_used + kTailCheckBytes);
#if SIMT_ASAN
  ASAN_UNPOISON_MEMORY_REGION(arena, kArenaBytes);
#endif
  std::vector<char> in_region(end, 0);
  for (const SharedRegion* region : {&b.dynamic}) {
    std::memset(in_region.data() + (region->base - arena), 1, region->bytes);
  }
  for (const SharedRegion& region : b.shared) {
    std::memset(in_region.data() + (region.base - arena), 1, region.bytes);
  }
  bool intact = true;
  for (size_t i = 0; i < end; ++i) {
    if (!in_region[i] && static_cast<unsigned char>(arena[i]) != kCanary) intact = false;
  }
  std::memset(arena, kCanary, end);
#if SIMT_ASAN
  ASAN_POISON_MEMORY_REGION(arena, kArenaBytes);
#endif
  return intact;
}

void run_block(Runtime& r, Block& b, std::mt19937_64& rng) {
  const dim3 block = b.launch->block;
  for (int t = 0; t < b.threads; ++t) {
    Fiber& f = r.fibers[static_cast<size_t>(t)];
    f.coords.thread_idx = dim3(static_cast<unsigned>(t) % block.x,
                               (static_cast<unsigned>(t) / block.x) % block.y,
                               static_cast<unsigned>(t) / (block.x * block.y));
    f.coords.block_idx = b.index;
    f.coords.block_dim = block;
    f.coords.grid_dim = b.launch->grid;
    f.state = State::kReady;
    f.shared_calls = 0;
    init_stack(f);
  }
#if SIMT_ASAN
  ASAN_POISON_MEMORY_REGION(shared_arena(r), kArenaBytes);
#endif
  b.dynamic = place_region(r, b, b.launch->dynamic_smem, b.launch->site);
  bool alive = true;
  while (alive && !b.failed) {
    for (int t : thread_order(b.threads, r.config.thread_order, rng)) {
      Fiber& f = r.fibers[static_cast<size_t>(t)];
      if (f.state == State::kReady) resume(b, f);
      if (b.failed) break;
    }
    if (b.failed) break;
    alive = false;
    for (int t = 0; t < b.threads; ++t) {
      alive |= r.fibers[static_cast<size_t>(t)].state != State::kExited;
    }
    if (alive && !complete_collectives(b, r.fibers) && !b.failed) complete_barrier(b, r.fibers);
  }
  if (!arena_intact(r, b) && !b.failed) {
    std::string regions = "the dynamic shared memory (" + std::to_string(b.dynamic.bytes) +
                          " bytes requested at launch)";
    for (const SharedRegion& region : b.shared) {
      regions += ", the shared array declared at " + str(region.site) + " (" +
                 std::to_string(region.bytes) + " bytes)";
    }
    fail(b, "a thread wrote past the end of one of: " + regions);
  }
  b.shared.clear();
}

// ---- stacks and their guard pages ---------------------------------------------------------------

struct sigaction previous_segv_action;

bool in_guard_page(const void* address) {
  Runtime& r = rt();
  const auto* a = static_cast<const char*>(address);
  for (const Fiber& f : r.fibers) {
    if (f.stack != nullptr && a >= f.stack - kPageBytes && a < f.stack) return true;
  }
  return false;
}

void on_segv(int signal, siginfo_t* info, void* context) {
  const char* a = static_cast<const char*>(info->si_addr);
  Runtime& r = rt();
  if (r.arena != nullptr && a >= r.arena + kArenaBytes && a < r.arena + kArenaBytes + kPageBytes) {
    const char message[] = "simt: a shared-memory access far past every region (guard page hit)\n";
    (void)!write(2, message, sizeof(message) - 1);
    std::abort();
  }
  if (in_guard_page(info->si_addr)) {
    const char message[] = "simt: stack overflow in an emulated CUDA thread (guard page hit)\n";
    (void)!write(2, message, sizeof(message) - 1);
    std::abort();
  }
  // Not ours: let the previous handler (or the default action) see it.
  sigaction(SIGSEGV, &previous_segv_action, nullptr);
  (void)signal;
  (void)context;
}

void ensure_fibers(Runtime& r, int threads) {
  static bool handler_installed = false;
  if (!handler_installed) {
    // The handler needs a stack of its own: the overflowing one is unusable.
    static char alternate_stack[1 << 16];
    stack_t current{};
    if (sigaltstack(nullptr, &current) == 0 && (current.ss_flags & SS_DISABLE)) {
      stack_t ss{};
      ss.ss_sp = alternate_stack;
      ss.ss_size = sizeof(alternate_stack);
      sigaltstack(&ss, nullptr);
    }
    struct sigaction action {};
    action.sa_sigaction = &on_segv;
    action.sa_flags = SA_SIGINFO | SA_ONSTACK;
    sigemptyset(&action.sa_mask);
    sigaction(SIGSEGV, &action, &previous_segv_action);
    handler_installed = true;
  }
  while (r.fibers.size() < static_cast<size_t>(threads)) {
    void* region = mmap(nullptr, kPageBytes + kStackBytes, PROT_READ | PROT_WRITE,
                        MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (region == MAP_FAILED) {
      std::fprintf(stderr, "simt: cannot map a fiber stack\n");
      std::abort();
    }
    mprotect(region, kPageBytes, PROT_NONE);  // the guard page below the stack
    Fiber f;
    f.stack = static_cast<char*>(region) + kPageBytes;
    r.fibers.push_back(f);
  }
}

void set_error(Runtime& r, cudaError_t error, const std::string& detail) {
  r.last_error = error;
  r.detail = detail;
}

std::string launch_name(const detail::LaunchInfo& info) {
  return std::string("kernel '") + info.name + "' launched at " + str(info.site);
}

}  // namespace

// ---- device-side entry points -------------------------------------------------------------------

int detail::block_barrier(Site site, Op op, int predicate) {
  Fiber& f = current_fiber();
  f.state = State::kBarrier;
  f.site = site;
  f.op = op;
  f.value = static_cast<uint64_t>(predicate);
  yield(*rt().block, f, /*final=*/false);
  return static_cast<int>(f.result);
}

uint64_t detail::warp_collective(Site site, Op op, unsigned mask, uint64_t value, int arg,
                                 int width) {
  Fiber& f = current_fiber();
  f.state = State::kCollective;
  f.site = site;
  f.op = op;
  f.mask = mask;
  f.value = value;
  f.arg = arg;
  f.width = width;
  yield(*rt().block, f, /*final=*/false);
  return f.result;
}

void* detail::shared_array(Site site, size_t bytes) {
  Runtime& r = rt();
  Block& b = *r.block;
  Fiber& f = current_fiber();
  const size_t k = f.shared_calls++;
  if (k < b.shared.size()) {
    if (b.shared[k].bytes != bytes || !same_site(b.shared[k].site, site)) {
      fail_here("declares its shared array #" + std::to_string(k) + " at " + str(site) +
                " with " + std::to_string(bytes) + " bytes, another thread at " +
                str(b.shared[k].site) + " with " + std::to_string(b.shared[k].bytes));
    }
    return b.shared[k].base;
  }
  b.static_bytes += (bytes + 15) / 16 * 16;
  const DeviceProfile& d = current_device(r);
  if (b.static_bytes > d.smem_per_block) {
    fail_here("declares " + std::to_string(b.static_bytes) + " bytes of static shared memory (at " +
              str(site) + "), over the " + std::to_string(d.smem_per_block) + "-byte limit");
  }
  if (b.static_bytes + b.launch->dynamic_smem > d.smem_per_block_optin) {
    fail_here("needs " + std::to_string(b.static_bytes) + " bytes of static and " +
              std::to_string(b.launch->dynamic_smem) + " of dynamic shared memory, over the " +
              std::to_string(d.smem_per_block_optin) + "-byte opt-in limit");
  }
  b.kernel->static_smem = std::max(b.kernel->static_smem, b.static_bytes);
  b.shared.push_back(place_region(r, b, bytes, site));
  return b.shared.back().base;
}

void* detail::dynamic_shared(Site) {
  current_fiber();
  return rt().block->dynamic.base;
}

void detail::run_grid(const LaunchInfo& info, Body body) {
  Runtime& r = rt();
  std::lock_guard<std::mutex> lock(r.mutex);
  const DeviceProfile& d = current_device(r);
  KernelInfo& kernel = kernel_info(r, info.kernel);
  LaunchRecord record{info.name, str(info.site), info.grid, info.block, info.dynamic_smem, 0, true};

  const dim3 g = info.grid, bl = info.block;
  const uint64_t threads = uint64_t(bl.x) * bl.y * bl.z;
  const uint64_t blocks = uint64_t(g.x) * g.y * g.z;
  std::string problem;
  cudaError_t code = cudaErrorInvalidConfiguration;
  if (threads == 0 || blocks == 0) {
    problem = "a grid or block dimension is 0";
  } else if (threads > static_cast<uint64_t>(d.max_threads_per_block) || bl.x > 1024 ||
             bl.y > 1024 || bl.z > 64) {
    problem = "block " + str(bl) + " has more than " + std::to_string(d.max_threads_per_block) +
              " threads or exceeds (1024, 1024, 64)";
  } else if (g.x > 2147483647u || g.y > 65535 || g.z > 65535) {
    problem = "grid " + str(g) + " exceeds (2^31-1, 65535, 65535)";
  } else if (blocks > (uint64_t(1) << 26)) {
    problem = "grid " + str(g) + " has more blocks than the emulator runs (2^26)";
  } else {
    const size_t allowed = kernel.max_dynamic_smem >= 0
                               ? static_cast<size_t>(kernel.max_dynamic_smem)
                               : d.smem_per_block - std::min(d.smem_per_block, kernel.static_smem);
    if (info.dynamic_smem > allowed) {
      code = cudaErrorInvalidValue;
      problem = std::to_string(info.dynamic_smem) + " bytes of dynamic shared memory exceed the " +
                std::to_string(allowed) + " this kernel may use" +
                (kernel.max_dynamic_smem < 0
                     ? " without cudaFuncSetAttribute(cudaFuncAttributeMaxDynamicSharedMemorySize)"
                     : " (its cudaFuncAttributeMaxDynamicSharedMemorySize)");
    }
  }
  if (!problem.empty()) {
    set_error(r, code, launch_name(info) + ": the GPU would refuse this launch: " + problem);
    r.log.push_back(record);
    return;
  }

  ensure_fibers(r, static_cast<int>(threads));
  std::mt19937_64 rng(r.config.seed * 0x9E3779B97F4A7C15ull + ++r.launches);
  std::vector<uint64_t> order(blocks);
  for (uint64_t i = 0; i < blocks; ++i) order[i] = i;
  if (r.config.block_order == Order::kReverse) std::reverse(order.begin(), order.end());
  if (r.config.block_order == Order::kRandom) std::shuffle(order.begin(), order.end(), rng);

  for (uint64_t linear : order) {
    Block b;
    b.launch = &info;
    b.body = body;
    b.kernel = &kernel;
    b.threads = static_cast<int>(threads);
    b.index = dim3(static_cast<unsigned>(linear % g.x), static_cast<unsigned>((linear / g.x) % g.y),
                   static_cast<unsigned>(linear / (uint64_t(g.x) * g.y)));
    r.block = &b;
    run_block(r, b, rng);
    r.block = nullptr;
    if (b.failed) {
      set_error(r, cudaErrorLaunchFailure, b.error);
      r.log.push_back(record);
      return;
    }
  }
  record.static_smem = kernel.static_smem;
  record.failed = false;
  r.log.push_back(record);
}

const char* error_detail() { return rt().detail.c_str(); }

// ---- configuration -------------------------------------------------------------------------

const std::vector<DeviceProfile>& devices() {
  static const std::vector<DeviceProfile> list{
      {"h100", 132, 1024, 2048, 32, 65536, 32, 48 << 10, 227 << 10, 228 << 10, 1 << 10},
      {"small", 3, 1024, 2048, 32, 65536, 32, 8 << 10, 8 << 10, 16 << 10, 1 << 10},
  };
  return list;
}

int device_named(const std::string& name) {
  for (size_t i = 0; i < devices().size(); ++i) {
    if (devices()[i].name == name) return static_cast<int>(i);
  }
  return -1;
}

void configure(const Config& config) {
  Runtime& r = rt();
  std::lock_guard<std::mutex> lock(r.mutex);
  r.config = config;
  r.launches = 0;
}

Config current_config() { return rt().config; }

std::vector<LaunchRecord> take_launch_log() {
  Runtime& r = rt();
  std::lock_guard<std::mutex> lock(r.mutex);
  std::vector<LaunchRecord> log;
  log.swap(r.log);
  return log;
}

}  // namespace simt

// ---- the CUDA runtime calls of the kernels' host code ------------------------------------------

using simt::rt;

cudaError_t cudaGetDevice(int* device) {
  *device = rt().config.device;
  return cudaSuccess;
}

cudaError_t cudaDeviceGetAttribute(int* value, cudaDeviceAttr attr, int device) {
  if (device < 0 || static_cast<size_t>(device) >= simt::devices().size()) {
    return cudaErrorInvalidDevice;
  }
  const simt::DeviceProfile& d = simt::devices()[static_cast<size_t>(device)];
  switch (attr) {
    case cudaDevAttrMaxThreadsPerBlock: *value = d.max_threads_per_block; break;
    case cudaDevAttrMaxSharedMemoryPerBlock: *value = static_cast<int>(d.smem_per_block); break;
    case cudaDevAttrWarpSize: *value = 32; break;
    case cudaDevAttrMaxRegistersPerBlock: *value = d.registers_per_sm; break;
    case cudaDevAttrMultiProcessorCount: *value = d.sm_count; break;
    case cudaDevAttrMaxSharedMemoryPerMultiprocessor: *value = static_cast<int>(d.smem_per_sm); break;
    case cudaDevAttrMaxSharedMemoryPerBlockOptin: *value = static_cast<int>(d.smem_per_block_optin); break;
    default: return cudaErrorInvalidValue;
  }
  return cudaSuccess;
}

cudaError_t cudaFuncGetAttributes(cudaFuncAttributes* attributes, const void* kernel) {
  simt::Runtime& r = rt();
  std::lock_guard<std::mutex> lock(r.mutex);
  const simt::KernelInfo& k = simt::kernel_info(r, kernel);
  const simt::DeviceProfile& d = simt::current_device(r);
  *attributes = {};
  attributes->sharedSizeBytes = k.static_smem;
  attributes->maxThreadsPerBlock = d.max_threads_per_block;
  attributes->numRegs = d.registers_per_thread;
  attributes->maxDynamicSharedSizeBytes =
      k.max_dynamic_smem >= 0 ? k.max_dynamic_smem
                              : static_cast<int>(d.smem_per_block - std::min(d.smem_per_block, k.static_smem));
  return cudaSuccess;
}

cudaError_t cudaFuncSetAttribute(const void* kernel, cudaFuncAttribute attr, int value) {
  simt::Runtime& r = rt();
  std::lock_guard<std::mutex> lock(r.mutex);
  if (attr != cudaFuncAttributeMaxDynamicSharedMemorySize) return cudaErrorInvalidValue;
  simt::KernelInfo& k = simt::kernel_info(r, kernel);
  const simt::DeviceProfile& d = simt::current_device(r);
  if (value < 0 || static_cast<size_t>(value) + k.static_smem > d.smem_per_block_optin) {
    r.last_error = cudaErrorInvalidValue;
    r.detail = "cudaFuncSetAttribute: " + std::to_string(value) +
               " bytes of dynamic shared memory exceed the opt-in limit of " +
               std::to_string(d.smem_per_block_optin) + " bytes minus the kernel's static " +
               std::to_string(k.static_smem);
    return cudaErrorInvalidValue;
  }
  k.max_dynamic_smem = value;
  return cudaSuccess;
}

cudaError_t cudaOccupancyMaxActiveBlocksPerMultiprocessor(int* blocks, const void* kernel,
                                                          int block_size, size_t dynamic_smem) {
  simt::Runtime& r = rt();
  std::lock_guard<std::mutex> lock(r.mutex);
  const simt::DeviceProfile& d = simt::current_device(r);
  const simt::KernelInfo& k = simt::kernel_info(r, kernel);
  *blocks = 0;
  if (block_size <= 0 || block_size > d.max_threads_per_block) return cudaSuccess;
  const size_t smem = k.static_smem + dynamic_smem;
  if (smem > d.smem_per_block_optin) return cudaSuccess;
  const int threads = (block_size + 31) / 32 * 32;
  int result = std::min(d.max_blocks_per_sm, d.max_threads_per_sm / threads);
  result = std::min(result, d.registers_per_sm / (d.registers_per_thread * threads));
  if (smem > 0) {
    result = std::min(result, static_cast<int>(d.smem_per_sm / (smem + d.smem_reserved_per_block)));
  }
  *blocks = std::max(result, 0);
  return cudaSuccess;
}

cudaError_t cudaGetLastError() {
  simt::Runtime& r = rt();
  const cudaError_t e = r.last_error;
  r.last_error = cudaSuccess;
  return e;
}

cudaError_t cudaPeekAtLastError() { return rt().last_error; }

const char* cudaGetErrorString(cudaError_t error) {
  switch (error) {
    case cudaSuccess: return "no error";
    case cudaErrorInvalidValue: return "invalid argument";
    case cudaErrorInvalidConfiguration: return "invalid configuration argument";
    case cudaErrorInvalidDevice: return "invalid device ordinal";
    case cudaErrorLaunchOutOfResources: return "too many resources requested for launch";
    case cudaErrorLaunchFailure: return "unspecified launch failure";
  }
  return "unknown error";
}
