// The CPU executor's core: one fiber per CUDA thread (glibc ucontext), blocks run one after another,
// __syncthreads and warp/warpgroup rendezvous, the shared-memory arena with its shadow (races,
// reads of in-flight async copies, bounds, alignment), cp.async completion, the TMA engine's delayed
// completions, and the deadlock report. The PTX instructions themselves are in ptx.cpp.
#include <sys/mman.h>

#include <algorithm>
#include <cstdio>
#include <mutex>
#include <numeric>
#include <random>
#include <stdexcept>

#include "runtime_internal.h"

namespace ak_emu {

namespace {

constexpr size_t kStackBytes = 256 * 1024;  // kernels keep <= 64 floats of registers; -O0 frames are larger
constexpr size_t kStaticSmemLimit = 48 * 1024;
constexpr size_t kDefaultDynamicLimit = 48 * 1024;  // above it a kernel must opt in (cudaFuncSetAttribute)
constexpr uint8_t kPoison = 0xFF;                   // NaN in fp32, fp16 and bf16

thread_local Block* g_block = nullptr;
thread_local Fiber* g_fiber = nullptr;
thread_local ucontext_t g_scheduler;
thread_local std::vector<char*> g_stack_pool;

struct GlobalRange {
  const uint8_t* begin;
  size_t bytes;
  bool writable;
  std::string name;
};
std::mutex g_globals_mutex;
std::vector<GlobalRange> g_globals;
std::map<const void*, size_t> g_smem_limits;

char* take_stack() {
  if (!g_stack_pool.empty()) {
    char* s = g_stack_pool.back();
    g_stack_pool.pop_back();
    return s;
  }
  void* p = mmap(nullptr, kStackBytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (p == MAP_FAILED) throw std::runtime_error("accelkernels emulator: out of memory for thread stacks");
  return static_cast<char*>(p);
}

std::string dim_str(const uint3& d) {
  return "(" + std::to_string(d.x) + "," + std::to_string(d.y) + "," + std::to_string(d.z) + ")";
}

void entry();

void release_barrier(Block& b) {
  VC m(b.agents(), 0);
  for (int t : b.barrier_arrived) join(m, b.fibers[t]->vc);
  for (int t : b.barrier_arrived) {
    Fiber& f = *b.fibers[t];
    f.vc = m;
    f.vc[f.gid] += 1;
    f.state = State::kRunnable;
    f.blocked_on.clear();
  }
  b.barrier_arrived.clear();
  b.barrier_where.clear();
}

int live_threads(const Block& b) {
  int n = 0;
  for (const auto& f : b.fibers) n += f->state != State::kDone;
  return n;
}

// Thread ranges with the same description: "threads 0-31, 64: waiting at ...".
std::string summarize(const std::vector<std::pair<int, std::string>>& items) {
  std::map<std::string, std::vector<int>> by;
  for (const auto& [t, s] : items) by[s].push_back(t);
  std::ostringstream os;
  for (const auto& [s, ts] : by) {
    os << "\n  thread" << (ts.size() > 1 ? "s " : " ");
    for (size_t i = 0; i < ts.size();) {
      size_t j = i;
      while (j + 1 < ts.size() && ts[j + 1] == ts[j] + 1) ++j;
      os << (i ? "," : "") << ts[i];
      if (j > i) os << "-" << ts[j];
      i = j + 1;
    }
    os << ": " << s;
  }
  return os.str();
}

std::string deadlock_report(const Cluster& cl) {
  std::ostringstream os;
  os << "every live thread is blocked and nothing is in flight:";
  for (const Block* bp : cl.blocks) {
    const Block& b = *bp;
    std::vector<std::pair<int, std::string>> items;
    for (const auto& f : b.fibers)
      if (f->state != State::kDone) items.emplace_back(f->tid, f->blocked_on.empty() ? "?" : f->blocked_on);
    if (cl.blocks.size() > 1) os << "\n block " << dim_str(b.idx) << " (cluster rank " << b.rank << "):";
    os << summarize(items);
    if (!b.wg_reg_request.empty())
      os << "\n  registers: " << b.reg_pool_free << " free in the block's pool (" << b.regs_at_entry
         << " per thread at launch)";
    for (const auto& [addr, m] : b.mbarriers) {
      if (!m.live) continue;
      os << "\n  mbarrier at shared 0x" << std::hex << addr << std::dec << ": phase " << m.phase << ", pending "
         << m.pending << " of " << m.expected << ", tx-count " << m.tx;
    }
  }
  return os.str();
}

}  // namespace

Settings& settings() {
  static Settings s;
  return s;
}

Block& block() {
  if (!g_block) throw std::runtime_error("accelkernels emulator: a device built-in was used outside a kernel launch");
  return *g_block;
}
Fiber& fiber() {
  if (!g_fiber) throw std::runtime_error("accelkernels emulator: a device built-in was used outside a kernel launch");
  return *g_fiber;
}
const ThreadView& current() { return fiber().view; }

std::string describe_kernel() {
  const Block& b = block();
  std::ostringstream os;
  os << "kernel `" << b.spec->callee << "` launched by " << b.spec->launcher << " (" << b.spec->file << ":"
     << b.spec->line << "), grid " << dim_str(uint3{b.spec->grid.x, b.spec->grid.y, b.spec->grid.z}) << ", block "
     << dim_str(uint3{b.spec->block.x, b.spec->block.y, b.spec->block.z});
  return os.str();
}

std::string where_am_i() {
  const Block& b = block();
  const std::string rank = b.cluster->blocks.size() > 1 ? " (cluster rank " + std::to_string(b.rank) + ")" : "";
  return describe_kernel() + ", block " + dim_str(b.idx) + rank + ", thread " + std::to_string(fiber().tid);
}

void fail(const std::string& rule, const std::string& detail) {
  Block& b = block();
  if (b.error.empty()) b.error = "accelkernels emulator: " + rule + ": " + detail + "\n  in " + where_am_i();
  Fiber& f = fiber();
  f.state = State::kFaulted;
  swapcontext(&f.ctx, &g_scheduler);
  std::abort();  // a faulted fiber is never resumed
}

void yield_blocked(State why, const std::string& what) {
  Fiber& f = fiber();
  f.state = why;
  f.blocked_on = what;
  swapcontext(&f.ctx, &g_scheduler);
}

void join(VC& into, const VC& from) {
  for (size_t i = 0; i < into.size(); ++i) into[i] = std::max(into[i], from[i]);
}

void syncthreads(const char* file, int line) {
  Block& b = block();
  Fiber& f = fiber();
  const std::string where = std::string("__syncthreads at ") + file + ":" + std::to_string(line);
  if (b.barrier_arrived.empty()) {
    b.barrier_where = where;
  } else if (b.barrier_where != where) {
    fail("barrier divergence", "thread " + std::to_string(f.tid) + " reached " + where + " while thread " +
                                   std::to_string(b.barrier_arrived.front()) + " waits at " + b.barrier_where);
  }
  b.barrier_arrived.push_back(f.tid);
  if (static_cast<int>(b.barrier_arrived.size()) == live_threads(b)) {
    release_barrier(b);
    return;
  }
  yield_blocked(State::kBarrier, "waiting at " + where);
}

void rendezvous(int size, const void* site, const std::string& where, void* payload,
                const std::function<void(const std::vector<Fiber*>&)>& exec) {
  Block& b = block();
  Fiber& f = fiber();
  const int group = f.tid / size, first = group * size, last = std::min(first + size, b.nthreads);
  for (int t = first; t < last; ++t)
    if (b.fibers[t]->state == State::kDone)
      fail(size == 32 ? "warp collective with an exited lane" : "warpgroup collective with an exited thread",
           where + " needs all " + std::to_string(last - first) + " threads (.sync.aligned), but thread " +
               std::to_string(t) + " has exited");
  auto& arrived = b.coll_arrived[{size, group}];
  for (int t : arrived)
    if (b.fibers[t]->coll_site != site)
      fail(".aligned violated", "thread " + std::to_string(f.tid) + " is at " + where + " while thread " +
                                    std::to_string(t) + " of its " + (size == 32 ? "warp" : "warpgroup") +
                                    " is at " + b.fibers[t]->coll_where);
  f.coll_site = site;
  f.coll_where = where;
  f.coll_payload = payload;
  arrived.push_back(f.tid);
  if (static_cast<int>(arrived.size()) < last - first) {
    yield_blocked(State::kCollective, "in " + where + " (waiting for the rest of its " +
                                          (size == 32 ? std::string("warp") : std::string("warpgroup")) + ")");
    return;
  }
  std::vector<Fiber*> members;
  for (int t = first; t < last; ++t) members.push_back(b.fibers[t].get());
  arrived.clear();
  exec(members);
  for (Fiber* m : members) {
    m->coll_site = nullptr;
    if (m != &f) {
      m->state = State::kRunnable;
      m->blocked_on.clear();
    }
  }
}

uint32_t shfl_down_bits(unsigned mask, uint32_t bits, unsigned delta, const char* file, int line) {
  struct Payload { uint32_t in, out; unsigned delta, mask; } p{bits, 0, delta, mask};
  const std::string where = std::string("__shfl_down_sync at ") + file + ":" + std::to_string(line);
  static const char site_tag = 0;
  if (mask != 0xFFFFFFFFu) fail("unsupported shuffle", where + " with a partial mask is not emulated");
  rendezvous(32, &site_tag, where, &p, [&](const std::vector<Fiber*>& lanes) {
    for (size_t l = 0; l < lanes.size(); ++l) {
      auto* me = static_cast<Payload*>(lanes[l]->coll_payload);
      const size_t src = l + me->delta;
      me->out = src < lanes.size() ? static_cast<Payload*>(lanes[src]->coll_payload)->in : me->in;
    }
  });
  return p.out;
}

// ---- shared memory ---------------------------------------------------------------------------------

unsigned cvta_generic_to_shared(const void* p) {
  Block& b = block();
  const auto* q = static_cast<const uint8_t*>(p);
  if (q < b.arena || q >= b.arena + b.window)
    fail("not a shared-memory address", "__cvta_generic_to_shared of a pointer outside the block's shared memory");
  return static_cast<unsigned>(q - b.arena);
}

void* dynamic_shared(size_t align) {
  Block& b = block();
  if (align > 1024) fail("shared alignment", "extern __shared__ aligned to more than 1024 bytes");
  return b.arena + b.dyn_offset;
}

void* static_shared(const void* site, size_t bytes, size_t align, const char* name) {
  Block& b = block();
  for (const auto& [s, off] : b.static_sites)
    if (s == site) return b.arena + off;
  size_t off = (b.static_end + align - 1) / align * align;
  const size_t used = off + bytes - (b.dyn_offset + ((b.dyn_size + 1023) / 1024 * 1024) + 1024);
  if (used > kStaticSmemLimit)
    fail("static shared memory over 48 KB", std::string("__shared__ ") + name + " brings the static total to " +
                                                std::to_string(used) + " bytes");
  if (used + b.dyn_size > settings().smem_per_block_optin)
    fail("shared memory over the per-block limit", std::to_string(used) + " static + " + std::to_string(b.dyn_size) +
                                                       " dynamic bytes > " +
                                                       std::to_string(settings().smem_per_block_optin));
  b.static_sites.emplace_back(site, off);
  b.static_end = off + bytes;
  b.window = std::max(b.window, b.static_end);
  return b.arena + off;
}

// PTX-visible shared accesses: dynamic region [dyn_offset, +dyn_size) and the static arrays; the
// 1024-byte gap between them is a red zone.
uint8_t* shared_ptr(uint32_t addr, size_t bytes, size_t align, const char* what) {
  Block& b = block();
  std::ostringstream os;
  if (align > 1 && addr % align != 0) {
    os << what << " at shared address 0x" << std::hex << addr << std::dec << " is not " << align << "-byte aligned";
    fail("misaligned shared access", os.str());
  }
  const bool in_dynamic = addr >= b.dyn_offset && addr + bytes <= b.dyn_offset + b.dyn_size;
  bool in_static = false;
  const size_t static_base = b.dyn_offset + (b.dyn_size + 1023) / 1024 * 1024 + 1024;
  if (addr >= static_base && addr + bytes <= b.static_end) in_static = true;
  if (!in_dynamic && !in_static) {
    os << what << " of " << bytes << " bytes at shared address 0x" << std::hex << addr << std::dec
       << " is outside the launch's shared memory (" << b.dyn_size << " dynamic bytes";
    if (b.static_end > static_base) os << ", static arrays at 0x" << std::hex << static_base << "-0x" << b.static_end;
    os << ")";
    fail("out-of-bounds shared access", os.str());
  }
  return b.arena + addr;
}

bool overlaps_mbarrier(uint32_t addr, size_t bytes) {
  for (const auto& [a, m] : block().mbarriers)
    if (m.live && a < addr + bytes && addr < a + 8) return true;
  return false;
}

std::string agent_name(const Block& b, int agent) {
  const int rank = agent / b.local_agents(), local = agent % b.local_agents();
  const std::string where = b.cluster->blocks.size() > 1 ? " of cluster rank " + std::to_string(rank) : "";
  if (local < b.nthreads) return "thread " + std::to_string(local) + where;
  if (local < b.nthreads + kTmaAgents) return "the TMA engine (slot " + std::to_string(local - b.nthreads) + ")" + where;
  return "a TMA store (slot " + std::to_string(local - b.nthreads - kTmaAgents) + ")" + where;
}

namespace {
std::string hex(uint32_t a) {
  std::ostringstream os;
  os << "0x" << std::hex << a;
  return os.str();
}
}  // namespace

void shadow_read(uint32_t addr, size_t bytes, int agent, const VC& vc, const char* what) {
  Block& b = block();
  for (uint32_t g = addr / 16; g <= (addr + bytes - 1) / 16; ++g) {
    Granule& s = b.shadow[g];
    if (s.pending >= 0)
      fail("read of an async-copy destination before the wait that covers it",
           std::string(what) + " by " + agent_name(b, agent) + " reads shared " + hex(g * 16) + ", still in flight (" +
               s.pending_what + " issued by thread " + std::to_string(s.pending) + ")");
    if (s.writer >= 0 && s.writer != agent && vc[s.writer] < s.wclock)
      fail("shared-memory race (read after write)",
           std::string(what) + " by " + agent_name(b, agent) + " reads shared " + hex(g * 16) + " written by " +
               agent_name(b, s.writer) + " with no barrier, wait or mbarrier phase ordering the two");
    bool found = false;
    for (auto& r : s.reads)
      if (r.first == agent) { r.second = vc[agent]; found = true; }
    if (!found) s.reads.emplace_back(agent, vc[agent]);
  }
}

void shadow_write(uint32_t addr, size_t bytes, int agent, const VC& vc, const char* what, int pending_issuer) {
  Block& b = block();
  for (uint32_t g = addr / 16; g <= (addr + bytes - 1) / 16; ++g) {
    Granule& s = b.shadow[g];
    if (s.pending >= 0)
      fail("shared-memory race (write after write)",
           std::string(what) + " by " + agent_name(b, agent) + " writes shared " + hex(g * 16) +
               " while an earlier " + s.pending_what + " by thread " + std::to_string(s.pending) + " is in flight");
    for (const auto& [r, c] : s.reads)
      if (r != agent && vc[r] < c)
        fail("shared-memory race (write after read)",
             std::string(what) + " by " + agent_name(b, agent) + " overwrites shared " + hex(g * 16) +
                 " that " + agent_name(b, r) + " read with nothing ordering that read before this write "
                 "(a stage refilled while it is still being read)");
    if (s.writer >= 0 && s.writer != agent && vc[s.writer] < s.wclock)
      fail("shared-memory race (write after write)",
           std::string(what) + " by " + agent_name(b, agent) + " writes shared " + hex(g * 16) + " written by " +
               agent_name(b, s.writer) + " with nothing ordering the two");
    s.reads.clear();
    if (pending_issuer >= 0) {
      s.pending = pending_issuer;
      s.pending_what = what;
    } else {
      s.writer = agent;
      s.wclock = vc[agent];
    }
  }
}

void shadow_land(uint32_t addr, size_t bytes, int agent, uint32_t clock) {
  Block& b = block();
  for (uint32_t g = addr / 16; g <= (addr + bytes - 1) / 16; ++g) {
    Granule& s = b.shadow[g];
    s.pending = -1;
    s.writer = agent;
    s.wclock = clock;
    s.reads.clear();
  }
}

void cp_async_land(Fiber& f, const std::vector<CpCopy>& group) {
  Block& b = block();
  for (const CpCopy& c : group) {
    uint8_t* dst = b.arena + c.dst;
    if (c.src_size) std::memcpy(dst, c.src, c.src_size);
    std::memset(dst + c.src_size, 0, 16 - c.src_size);
    shadow_land(c.dst, 16, f.gid, f.vc[f.gid]);
  }
}

// ---- global memory ---------------------------------------------------------------------------------

void register_global(const void* begin, size_t bytes, bool writable, const char* name) {
  std::lock_guard<std::mutex> lock(g_globals_mutex);
  g_globals.push_back({static_cast<const uint8_t*>(begin), bytes, writable, name});
}
void clear_globals() {
  std::lock_guard<std::mutex> lock(g_globals_mutex);
  g_globals.clear();
}
bool global_readable(const void* p, size_t bytes, std::string* which) {
  std::lock_guard<std::mutex> lock(g_globals_mutex);
  if (g_globals.empty()) return true;  // a launch from a unit test that registered nothing
  const auto* q = static_cast<const uint8_t*>(p);
  for (const auto& g : g_globals)
    if (q >= g.begin && q + bytes <= g.begin + g.bytes) {
      if (which) *which = g.name;
      return true;
    }
  return false;
}

bool global_writable(const void* p, size_t bytes) {
  std::lock_guard<std::mutex> lock(g_globals_mutex);
  if (g_globals.empty()) return true;
  const auto* q = static_cast<const uint8_t*>(p);
  for (const auto& g : g_globals)
    if (g.writable && q >= g.begin && q + bytes <= g.begin + g.bytes) return true;
  return false;
}

bool function_smem_limit(const void* function, size_t* limit) {
  std::lock_guard<std::mutex> lock(g_globals_mutex);
  auto it = g_smem_limits.find(function);
  if (it == g_smem_limits.end()) return false;
  *limit = it->second;
  return true;
}
void set_function_smem_limit(const void* function, size_t limit) {
  std::lock_guard<std::mutex> lock(g_globals_mutex);
  g_smem_limits[function] = limit;
}

// ---- the scheduler -----------------------------------------------------------------------------

namespace {

struct Current {
  void (*body)(void*);
  void* closure;
};
thread_local Current g_body;

void entry() {
  Fiber& f = *g_fiber;
  try {
    g_body.body(g_body.closure);
  } catch (const std::exception& e) {  // (an exception must not cross a fiber's boundary)
    fail("error in the kernel", e.what());
  }
  // Exit: TMA stores must have finished reading shared memory (the block's shared memory is handed to
  // the next block when its threads exit: CUTLASS's epilogue waits for its stores before it ends).
  if (!f.bulk_uncommitted.empty())
    fail("TMA store never committed", std::to_string(f.bulk_uncommitted.size()) +
                                          " TMA store(s) issued with no cp.async.bulk.commit_group after them at exit");
  if (!f.bulk_groups.empty())
    fail("TMA stores outstanding at exit",
         std::to_string(f.bulk_groups.size()) + " bulk group(s) of TMA stores not waited for "
         "(cp.async.bulk.wait_group[.read] 0) before the thread exits: the shared memory they read may be reused");
  // A warp or warpgroup waiting for this thread can never complete; a barrier waiting for every live
  // thread may now be complete.
  Block& b = *g_block;
  for (auto& [key, arrived] : b.coll_arrived) {
    const int first = key.second * key.first;
    if (!arrived.empty() && f.tid >= first && f.tid < first + key.first)
      fail(key.first == 32 ? "warp collective with an exited lane" : "warpgroup collective with an exited thread",
           "thread " + std::to_string(f.tid) + " exited while thread " + std::to_string(arrived.front()) +
               " waits for it in " + b.fibers[arrived.front()]->coll_where);
  }
  f.state = State::kDone;
  // The last thread of a block: every access of another block of the cluster to its shared memory must be
  // ordered before the block's exit, or that block may reach memory that is no longer this block's.
  if (b.exit_vc.empty()) b.exit_vc.assign(b.agents(), 0);
  join(b.exit_vc, f.vc);
  if (live_threads(b) == 0)
    for (const auto& [agent, clock] : b.remote_accesses)
      if (b.exit_vc[agent] < clock)
        fail("block exits while its cluster may still reach its shared memory",
             agent_name(b, agent) + " accessed this block's shared memory (a remote mbarrier arrive or a multicast copy) "
             "with nothing ordering that access before this block's exit (barrier.cluster before exit)");
  if (!b.barrier_arrived.empty() && static_cast<int>(b.barrier_arrived.size()) == live_threads(b)) release_barrier(b);
  swapcontext(&f.ctx, &g_scheduler);
}

void land_tma(Block& b, size_t i) {
  TmaLoad t = std::move(b.tma[i]);
  b.tma.erase(b.tma.begin() + static_cast<long>(i));
  t.land();
}

// The blocks of one cluster (one block without clusters) run together: their threads are fibers of one
// scheduler loop, so distributed shared memory, multicast TMA and barrier.cluster see each other.
void run_cluster(const LaunchSpec& spec, const std::vector<uint3>& idxs, int nthreads, uint64_t seed, bool reverse) {
  Cluster cl;
  std::vector<std::unique_ptr<Block>> blocks;
  for (size_t r = 0; r < idxs.size(); ++r) {
    blocks.push_back(std::make_unique<Block>());
    cl.blocks.push_back(blocks.back().get());
  }
  const size_t capacity = settings().smem_per_block_optin + 4096 + 2048;
  for (size_t r = 0; r < idxs.size(); ++r) {
    Block& b = *blocks[r];
    b.spec = &spec;
    b.idx = idxs[r];
    b.nthreads = nthreads;
    b.cluster = &cl;
    b.rank = static_cast<int>(r);
    b.agent_base = static_cast<int>(r) * b.local_agents();
    b.dyn_size = spec.dynamic_smem;
    b.storage.assign(capacity + 1024, kPoison);
    b.arena = reinterpret_cast<uint8_t*>((reinterpret_cast<uintptr_t>(b.storage.data()) + 1023) & ~uintptr_t{1023});
    b.dyn_offset = 0;
    b.static_end = b.dyn_offset + (b.dyn_size + 1023) / 1024 * 1024 + 1024;
    b.window = capacity;
    b.shadow.resize(capacity / 16 + 1);
    b.rng = seed;
    // Registers per thread at launch: the most a kernel of this size can have (65536 per SM in steps of
    // 8 per thread, at most 256: what __launch_bounds__(threads, 1) gives), all allocated, none free.
    // setmaxnreg moves registers within this pool (the SASS says CTAPOOL).
    const int warp_threads = (nthreads + 31) / 32 * 32;
    b.regs_at_entry = std::min(256, 65536 / warp_threads / 8 * 8);
    b.reg_pool_free = 0;
  }
  const int agents = blocks[0]->agents();
  cl.barrier_acc.assign(agents, 0);
  cl.barrier_done[0].assign(agents, 0);
  cl.barrier_done[1].assign(agents, 0);

  std::vector<Fiber*> order;  // every thread of the cluster, in the order the scheduler runs them
  for (auto& bp : blocks) {
    Block& b = *bp;
    g_block = &b;
    for (int t = 0; t < nthreads; ++t) {
      auto f = std::make_unique<Fiber>();
      f->tid = t;
      f->gid = b.agent_base + t;
      f->home = &b;
      f->view.thread_idx = uint3{static_cast<unsigned>(t % spec.block.x),
                                 static_cast<unsigned>((t / spec.block.x) % spec.block.y),
                                 static_cast<unsigned>(t / (spec.block.x * spec.block.y))};
      f->view.block_idx = b.idx;
      f->view.block_dim = spec.block;
      f->view.grid_dim = spec.grid;
      f->vc.assign(agents, 0);
      f->vc[f->gid] = 1;
      f->stack = take_stack();
      getcontext(&f->ctx);
      f->ctx.uc_stack.ss_sp = f->stack;
      f->ctx.uc_stack.ss_size = kStackBytes;
      f->ctx.uc_link = nullptr;
      makecontext(&f->ctx, entry, 0);
      order.push_back(f.get());
      b.fibers.push_back(std::move(f));
    }
  }
  if (seed != 0) {
    const uint3 idx = idxs[0];
    std::mt19937_64 gen(seed ^ (uint64_t{idx.x} << 32) ^ (uint64_t{idx.y} << 16) ^ idx.z);
    std::shuffle(order.begin(), order.end(), gen);
  }
  if (reverse) std::reverse(order.begin(), order.end());

  auto finish = [&]() {
    for (auto& bp : blocks)
      for (auto& f : bp->fibers) g_stack_pool.push_back(f->stack);
    g_fiber = nullptr;
    g_block = nullptr;
  };
  auto check_errors = [&]() {
    for (auto& bp : blocks)
      if (!bp->error.empty()) {
        const std::string msg = bp->error;
        finish();
        throw std::runtime_error(msg);
      }
  };
  auto land = [&](Block& b, size_t i) {
    g_block = &b;
    g_fiber = b.tma[i].issuer;
    land_tma(b, i);
    g_fiber = nullptr;
    check_errors();
  };
  auto live = [&]() {
    int n = 0;
    for (auto& bp : blocks) n += live_threads(*bp);
    return n;
  };
  auto in_flight = [&]() {
    size_t n = 0;
    for (auto& bp : blocks) n += bp->tma.size();
    return n;
  };
  std::mt19937_64 tma_gen(seed + 1);
  while (true) {
    for (Fiber* fp : order) {
      Fiber& f = *fp;
      if (f.state != State::kRunnable) continue;
      g_block = f.home;
      g_fiber = &f;
      swapcontext(&g_scheduler, &f.ctx);
      g_fiber = nullptr;
      check_errors();
    }
    // TMA loads land after a few scheduler passes (earlier ones first unless shuffled).
    for (auto& bp : blocks) {
      Block& b = *bp;
      for (auto& t : b.tma) t.countdown--;
      for (size_t i = 0; i < b.tma.size();) {
        if (b.tma[i].countdown <= 0) land(b, i);
        else ++i;
      }
    }
    if (live() == 0 && in_flight() == 0) break;
    bool runnable = false;
    for (Fiber* f : order) runnable = runnable || f->state == State::kRunnable;
    if (!runnable) {
      if (in_flight() != 0) {  // nothing runnable: a pending TMA load must land before a deadlock is declared
        size_t pick = seed ? tma_gen() % in_flight() : 0;
        for (auto& bp : blocks) {
          if (pick < bp->tma.size()) {
            land(*bp, pick);
            break;
          }
          pick -= bp->tma.size();
        }
        continue;
      }
      if (live() == 0) break;
      g_block = blocks[0].get();
      g_fiber = blocks[0]->fibers[0].get();
      const std::string msg = "accelkernels emulator: deadlock: " + deadlock_report(cl) + "\n  in " + describe_kernel() +
                              ", block " + dim_str(idxs[0]) + (idxs.size() > 1 ? "'s cluster" : "");
      finish();
      throw std::runtime_error(msg);
    }
  }
  finish();
}

}  // namespace

void run_launch(const LaunchSpec& spec, void (*body)(void*), void* closure) {
  if (g_block) throw std::runtime_error("accelkernels emulator: a kernel launched another kernel (not supported)");
  const uint64_t threads = uint64_t{spec.block.x} * spec.block.y * spec.block.z;
  std::ostringstream os;
  os << "accelkernels emulator: launch of `" << spec.callee << "` by " << spec.launcher << " (" << spec.file << ":" << spec.line << "): ";
  if (threads == 0 || threads > 1024 || spec.block.z > 64)
    throw std::runtime_error(os.str() + "invalid launch: " + std::to_string(threads) +
                             " threads per block (1..1024, blockDim.z <= 64)");
  if (spec.grid.x == 0 || spec.grid.y == 0 || spec.grid.z == 0 || spec.grid.y > 65535 || spec.grid.z > 65535 ||
      spec.grid.x > 2147483647u)
    throw std::runtime_error(os.str() + "invalid launch: " + "grid (" +
                             std::to_string(spec.grid.x) + "," + std::to_string(spec.grid.y) + "," +
                             std::to_string(spec.grid.z) + ") outside CUDA's limits");
  size_t limit = kDefaultDynamicLimit;
  function_smem_limit(spec.function, &limit);
  if (spec.dynamic_smem > limit)
    throw std::runtime_error(os.str() + "invalid launch: " + std::to_string(spec.dynamic_smem) +
                             " bytes of dynamic shared memory, above the kernel's limit of " + std::to_string(limit) +
                             " (cudaFuncSetAttribute(MaxDynamicSharedMemorySize) raises it)");
  const dim3 c = spec.cluster;
  const uint64_t cluster_blocks = uint64_t{c.x} * c.y * c.z;
  if (cluster_blocks == 0 || cluster_blocks > 8 || spec.grid.x % c.x || spec.grid.y % c.y || spec.grid.z % c.z)
    throw std::runtime_error(os.str() + "invalid launch: cluster (" + std::to_string(c.x) + "," + std::to_string(c.y) +
                             "," + std::to_string(c.z) + ") must hold 1 to 8 blocks (the portable limit) and divide "
                             "the grid (" + std::to_string(spec.grid.x) + "," + std::to_string(spec.grid.y) + "," +
                             std::to_string(spec.grid.z) + ")");
  g_body = Current{body, closure};
  auto run_grid = [&](bool reverse) {
    const unsigned sample = settings().grid_z_sample;
    for (unsigned z0 = 0; z0 < spec.grid.z; z0 += c.z) {
      if (sample && spec.grid.z > 2 * sample && z0 >= sample && z0 < spec.grid.z - sample) continue;
      for (unsigned y0 = 0; y0 < spec.grid.y; y0 += c.y)
        for (unsigned x0 = 0; x0 < spec.grid.x; x0 += c.x) {
          std::vector<uint3> members;  // rank order: x fastest (the cluster's block rank)
          for (unsigned z = z0; z < z0 + c.z; ++z)
            for (unsigned y = y0; y < y0 + c.y; ++y)
              for (unsigned x = x0; x < x0 + c.x; ++x) members.push_back(uint3{x, y, z});
          run_cluster(spec, members, static_cast<int>(threads), settings().seed, reverse);
        }
    }
  };
  if (!settings().replay) {
    run_grid(false);
    return;
  }
  // Replay: the same launch in the reverse thread order must write the same bits.
  std::vector<GlobalRange> outputs;
  {
    std::lock_guard<std::mutex> lock(g_globals_mutex);
    for (const auto& g : g_globals)
      if (g.writable) outputs.push_back(g);
  }
  std::vector<std::vector<uint8_t>> before, first;
  for (const auto& g : outputs) before.emplace_back(g.begin, g.begin + g.bytes);
  run_grid(false);
  for (const auto& g : outputs) first.emplace_back(g.begin, g.begin + g.bytes);
  for (size_t i = 0; i < outputs.size(); ++i) std::memcpy(const_cast<uint8_t*>(outputs[i].begin), before[i].data(), outputs[i].bytes);
  run_grid(true);
  for (size_t i = 0; i < outputs.size(); ++i) {
    const uint8_t* now = outputs[i].begin;
    for (size_t j = 0; j < outputs[i].bytes; ++j)
      if (now[j] != first[i][j])
        throw std::runtime_error(os.str() + "outputs differ between two thread orders (in order, then reversed) at byte " +
                                 std::to_string(j) + " of `" + outputs[i].name +
                                 "`: a race between plain shared- or global-memory accesses (a missing barrier)");
  }
}

void wake_mbarrier_waiters_in(Block& b, uint32_t bar) {
  for (auto& f : b.fibers)
    if (f->state == State::kMbarWait && f->wait_bar == bar) f->state = State::kRunnable;
}
void wake_mbarrier_waiters(uint32_t bar) { wake_mbarrier_waiters_in(block(), bar); }

void cluster_arrive(const std::string& where) {
  Block& b = block();
  Fiber& f = fiber();
  Cluster& cl = *b.cluster;
  if (f.cluster_arrived)
    fail("barrier.cluster misuse", where + ": a second arrive before the wait of the phase it arrived in");
  f.cluster_arrived = true;
  f.cluster_phase = cl.barrier_phase;
  join(cl.barrier_acc, f.vc);
  f.vc[f.gid] += 1;
  int total = 0;
  for (const Block* blk : cl.blocks) total += blk->nthreads;
  if (++cl.barrier_count == total) {
    cl.barrier_done[cl.barrier_phase & 1] = cl.barrier_acc;
    cl.barrier_acc.assign(b.agents(), 0);
    cl.barrier_count = 0;
    cl.barrier_phase += 1;
    for (Block* blk : cl.blocks)
      for (auto& g : blk->fibers)
        if (g->state == State::kClusterWait) g->state = State::kRunnable;
  }
}

void cluster_wait(const std::string& where) {
  Fiber& f = fiber();
  Cluster& cl = *block().cluster;
  if (!f.cluster_arrived) fail("barrier.cluster misuse", where + ": a wait with no arrive before it");
  while (cl.barrier_phase == f.cluster_phase) {
    int arrived = cl.barrier_count;
    yield_blocked(State::kClusterWait, "waiting at barrier.cluster.wait at " + where + " (" + std::to_string(arrived) +
                                           " threads of the cluster arrived)");
  }
  join(f.vc, cl.barrier_done[f.cluster_phase & 1]);
  f.cluster_arrived = false;
}

BlockScope::BlockScope(Block& b) : saved(g_block) { g_block = &b; }
BlockScope::~BlockScope() { g_block = saved; }
bool block_exited(const Block& b) { return live_threads(b) == 0; }

void wake_register_waiters() {
  for (auto& f : block().fibers)
    if (f->state == State::kRegWait) f->state = State::kRunnable;
}

// PTX bar.sync a, b (9.7.13.1): the barrier completes when b threads have arrived; b is a multiple of
// the warp size; every arrival with a count must use the same count. Arrivals join their clocks.
void named_barrier(int id, int count, const std::string& where) {
  Block& b = block();
  Fiber& f = fiber();
  if (id < 1 || id > 15)
    fail("bar.sync misuse", where + ": barrier id " + std::to_string(id) + " outside 1..15 (0 is __syncthreads' barrier)");
  if (count <= 0 || count % 32 != 0 || count > (b.nthreads + 31) / 32 * 32)
    fail("bar.sync misuse", where + ": thread count " + std::to_string(count) +
                                " is not a positive multiple of 32 up to the block's " + std::to_string(b.nthreads));
  NamedBarrier& nb = b.named_barriers[id];
  if (nb.arrived.empty()) {
    nb.count = count;
    nb.where = where;
  } else if (nb.count != count) {
    fail("bar.sync misuse", where + " arrives at barrier " + std::to_string(id) + " with count " + std::to_string(count) +
                                " while thread " + std::to_string(nb.arrived.front()) + " arrived with count " +
                                std::to_string(nb.count) + " at " + nb.where);
  }
  nb.arrived.push_back(f.tid);
  if (static_cast<int>(nb.arrived.size()) == nb.count) {
    VC m(b.agents(), 0);
    for (int t : nb.arrived) join(m, b.fibers[t]->vc);
    for (int t : nb.arrived) {
      Fiber& g = *b.fibers[t];
      g.vc = m;
      g.vc[g.gid] += 1;
      if (&g != &f) {
        g.state = State::kRunnable;
        g.blocked_on.clear();
      }
    }
    nb.arrived.clear();
    return;
  }
  yield_blocked(State::kBarrier, "waiting at bar.sync " + std::to_string(id) + ", " + std::to_string(count) + " at " +
                                     where + " (" + std::to_string(nb.arrived.size()) + " arrived)");
}

}  // namespace ak_emu
