// Internals of the CPU executor shared by runtime.cpp (fibers, scheduler, shared memory, races),
// ptx.cpp (the PTX handlers) and cuda_api.cpp (the CUDA runtime/driver calls the host code makes).
#pragma once

#include <ucontext.h>

#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "ak_emu.h"

namespace ak_emu {

// Vector clock over the cluster's agents: each block's threads, TMA load slots and TMA store slots, block
// after block in rank order (a launch without clusters is a cluster of one block). Agent ids below are
// these cluster-wide indices (Fiber::gid, Block::agent_base + ...).
using VC = std::vector<uint32_t>;
constexpr int kTmaAgents = 16;     // TMA loads take agent slots round-robin (see Block::tma_agent)
constexpr int kStoreAgents = 8;    // TMA stores' shared-memory reads take their own slots, round-robin

enum class State { kRunnable, kBarrier, kCollective, kMbarWait, kRegWait, kClusterWait, kDone, kFaulted };

struct Block;

struct CpCopy {  // one cp.async: 16 bytes, src_size of them from global memory
  uint32_t dst;
  const uint8_t* src;
  uint32_t src_size;
};

struct WgmmaOp {  // one wgmma.mma_async of a warpgroup, applied when its group retires
  uint64_t desc_a, desc_b;
  bool scale_d;
  bool bf16;
  bool trans_a, trans_b;           // imm-trans-a/b: the operand is MN-major (M- or N-contiguous rows)
  int n;                           // the shape's N (m64nNk16): N/2 accumulator registers per thread
  std::vector<float*> regs;        // 128 lanes x N/2 accumulator registers (the lanes' own frames)
};

// The accumulators of in-flight wgmmas: the registers hold poison (reading them before wgmma.wait_group
// is undefined) while the chain's true value lives here; it is written back when the last op in
// flight on those registers retires. Ops chained on the same registers (no wait between them: one
// group in flight while the next is issued) accumulate in issue order.
struct WgmmaChain {
  std::vector<float*> regs;
  std::vector<float> value;
  int n = 0;
  int inflight = 0;
};

struct BulkStore {  // a TMA store whose shared-memory read is tracked as agent `agent` at `clock`
  int agent;
  uint32_t clock;
};

struct Fiber {
  ucontext_t ctx;
  char* stack = nullptr;
  int tid = 0;         // thread index in its block
  int gid = 0;         // its agent id in the cluster (the VC index)
  Block* home = nullptr;
  ThreadView view{};
  State state = State::kRunnable;
  std::string blocked_on;  // what it waits for (deadlock reports)
  VC vc;
  // collectives
  const void* coll_site = nullptr;
  std::string coll_where;
  void* coll_payload = nullptr;
  // cp.async groups: uncommitted copies, then committed groups oldest first
  std::vector<CpCopy> cp_uncommitted;
  std::deque<std::vector<CpCopy>> cp_groups;
  // mbarrier wait
  uint32_t wait_bar = 0;
  // fence.proxy.async.shared::cta: this thread's clock at each (for the TMA stores' proxy check)
  std::vector<uint32_t> proxy_fences;
  // TMA stores (cp.async.bulk ... bulk_group): uncommitted, then committed groups oldest first
  std::vector<BulkStore> bulk_uncommitted;
  std::deque<std::vector<BulkStore>> bulk_groups;
  // barrier.cluster: arrived in the cluster barrier's phase `cluster_phase`, not yet waited
  bool cluster_arrived = false;
  uint64_t cluster_phase = 0;
};

struct Granule {  // shadow of 16 bytes of shared memory, for the accesses the PTX handlers see
  int32_t writer = -1;   // agent of the last write (-1: none seen)
  uint32_t wclock = 0;
  int32_t pending = -1;  // a cp.async or TMA write in flight: the issuing thread
  std::string pending_what;
  std::vector<std::pair<int32_t, uint32_t>> reads;  // (agent, clock) since the last write
};

struct Mbarrier {
  bool live = false;
  uint32_t phase = 0;
  int64_t expected = 0, pending = 0, tx = 0;
  VC acc;               // releases of the current phase
  VC completed[2];      // by parity of the completed phase
  bool observed = true; // the last completed phase was seen by a successful try_wait
  bool fenced = false;   // fence.mbarrier_init by the initialising thread (needed before TMA uses it)
  int init_tid = -1;      // agent id (gid) of the initialising thread
  uint32_t init_clock = 0;
};

struct TmaLoad {
  uint32_t dst;
  uint32_t bar;
  int countdown;
  uint32_t bar_phase;
  Fiber* issuer;               // (a multicast's issuer may be in another block of the cluster)
  std::function<void()> land;  // copies the box, completes the transaction (ptx.cpp)
};

// The blocks of one cluster, run together; barrier.cluster's state.
struct Cluster {
  std::vector<Block*> blocks;  // by rank
  uint64_t barrier_phase = 0;
  int barrier_count = 0;
  VC barrier_acc;
  VC barrier_done[2];          // by parity of the completed phase
};

struct NamedBarrier {  // bar.sync id, count
  int count = 0;
  std::vector<int> arrived;
  std::string where;
};

struct Block {
  const LaunchSpec* spec = nullptr;
  uint3 idx{};
  int nthreads = 0;
  Cluster* cluster = nullptr;
  int rank = 0;        // in its cluster
  int agent_base = 0;  // its agents' first id in the cluster's clocks
  std::vector<std::unique_ptr<Fiber>> fibers;
  std::vector<uint8_t> storage;
  uint8_t* arena = nullptr;  // the shared window (1024-byte aligned)
  size_t static_end = 0, dyn_offset = 0, dyn_size = 0, window = 0;
  std::vector<std::pair<const void*, size_t>> static_sites;
  // __syncthreads
  std::vector<int> barrier_arrived;
  std::string barrier_where;
  // warp (32) and warpgroup (128) rendezvous, keyed by (size, index)
  std::map<std::pair<int, int>, std::vector<int>> coll_arrived;
  std::vector<Granule> shadow;
  std::map<uint32_t, Mbarrier> mbarriers;
  std::deque<TmaLoad> tma;
  int tma_next_agent = 0;
  uint32_t tma_clock[kTmaAgents] = {};
  // wgmma groups per warpgroup: uncommitted ops, committed groups oldest first
  std::map<int, std::vector<WgmmaOp>> wg_uncommitted;
  std::map<int, std::deque<std::vector<WgmmaOp>>> wg_groups;
  std::map<int, bool> wg_fenced;  // a wgmma.fence since the warpgroup's last wgmma.wait_group
  std::map<float*, WgmmaChain> wg_chains;  // keyed by the first accumulator register of lane 0
  // TMA stores
  int store_next_agent = 0;
  uint32_t store_clock[kStoreAgents] = {};
  // named barriers (bar.sync 1..15)
  std::map<int, NamedBarrier> named_barriers;
  // registers (setmaxnreg): per-thread count at launch, the block's free pool, each warpgroup's
  // count and its pending .inc request
  int regs_at_entry = 0;
  int64_t reg_pool_free = 0;
  std::map<int, int> wg_regs, wg_reg_request;
  // accesses of other blocks of the cluster to this block's shared memory (remote arrives, multicast
  // copies): (agent, clock); each must be ordered before this block exits (barrier.cluster)
  std::vector<std::pair<int, uint32_t>> remote_accesses;
  VC exit_vc;  // the clocks of its exited threads, joined
  std::string error;
  uint64_t rng = 0;
  int local_agents() const { return nthreads + kTmaAgents + kStoreAgents; }
  int agents() const { return static_cast<int>(cluster->blocks.size()) * local_agents(); }  // the VC size
  int tma_agent(int slot) const { return agent_base + nthreads + slot; }
  int store_agent(int slot) const { return agent_base + nthreads + kTmaAgents + slot; }
  bool is_thread(int agent) const { return agent >= agent_base && agent < agent_base + nthreads; }
};

// The running block and fiber of this OS thread.
Block& block();
Fiber& fiber();

// Report a broken rule: the launch fails with this message (never returns into the kernel).
[[noreturn]] void fail(const std::string& rule, const std::string& detail);
std::string where_am_i();  // "kernel K, block (x,y,z), thread t"
std::string describe_kernel();
std::string agent_name(const Block& b, int agent);  // "thread 5 of cluster rank 1", "the TMA engine (slot 3)"

// Suspend the running fiber until something makes it runnable again.
void yield_blocked(State why, const std::string& what);
// A rendezvous of `size` consecutive threads (32: warp, 128: warpgroup): every member passes the
// same site; the last to arrive runs `exec` for all of them (tid order).
void rendezvous(int size, const void* site, const std::string& where, void* payload,
                const std::function<void(const std::vector<Fiber*>&)>& exec);
void wake_mbarrier_waiters(uint32_t bar);
void wake_register_waiters();
void wake_mbarrier_waiters_in(Block& b, uint32_t bar);
// barrier.cluster.arrive / .wait (PTX 9.7.13.2): every thread of every block of the cluster arrives once
// per phase; wait returns once the phase it arrived in has completed.
void cluster_arrive(const std::string& where);
void cluster_wait(const std::string& where);
// Runs the enclosed handler code on another block of the cluster (distributed shared memory: a remote
// mbarrier arrive, a multicast TMA's destination): block() is that block, fiber() stays the caller.
struct BlockScope {
  Block* saved;
  explicit BlockScope(Block& b);
  ~BlockScope();
  BlockScope(const BlockScope&) = delete;
  BlockScope& operator=(const BlockScope&) = delete;
};
bool block_exited(const Block& b);  // every thread of it has exited
// bar.sync id, count: a barrier of `count` threads (whole warps) that need not be the whole block.
void named_barrier(int id, int count, const std::string& where);

// Shared memory: the byte at shared address `addr` (checked: inside the window, aligned).
uint8_t* shared_ptr(uint32_t addr, size_t bytes, size_t align, const char* what);
// Race checks on the granules covering [addr, addr + bytes): a read by `agent` with clock `vc`.
void shadow_read(uint32_t addr, size_t bytes, int agent, const VC& vc, const char* what);
void shadow_write(uint32_t addr, size_t bytes, int agent, const VC& vc, const char* what, int pending_issuer);
void shadow_land(uint32_t addr, size_t bytes, int agent, uint32_t clock);
bool overlaps_mbarrier(uint32_t addr, size_t bytes);
void join(VC& into, const VC& from);

// Global memory the host passed to the launch (register_global): whether [p, p+bytes) is inside.
bool global_readable(const void* p, size_t bytes, std::string* which);
bool global_writable(const void* p, size_t bytes);

// cp.async completion (the issuing thread's wait_group), and the scheduler's TMA engine.
void cp_async_land(Fiber& f, const std::vector<CpCopy>& group);
bool function_smem_limit(const void* function, size_t* limit);  // cudaFuncSetAttribute's opt-in
void set_function_smem_limit(const void* function, size_t limit);

}  // namespace ak_emu
