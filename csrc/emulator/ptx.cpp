// The PTX templates of csrc/kernels/, parsed once per asm statement and interpreted: cp.async
// (zero-fill, groups, wait_group), ldmatrix (x4, .trans), stmatrix (x4), mma.sync m16n8k16
// (f16/bf16 -> f32), mbarrier (init, arrive, expect_tx, try_wait.parity), selp, the fences, named
// barriers (bar.sync), TMA tile loads (cp.async.bulk.tensor.3d with complete_tx) and stores (bulk
// groups, wait_group[.read]), setmaxnreg, and wgmma (fence, mma_async m64n128k16 / m64n256k16 from
// SW128 K-major or MN-major descriptors, commit_group, wait_group, groups chained in flight). Semantics and
// sources: ../shared/EMULATION.md §1 and the comments at each handler.
// A template with an instruction that is not handled here is an error naming it (the build's
// rewriter refuses it first: accelkernels/emulator/rewrite.py KNOWN_PTX).
#include <algorithm>
#include <array>
#include <cmath>
#include <limits>
#include <mutex>
#include <stdexcept>

#include "runtime_internal.h"
#include "tensor_map.h"

namespace ak_emu {

struct Arg {
  enum Kind { kSlot, kAddr, kVec, kImm, kSink, kPred, kTensor } kind;
  int slot = -1;
  std::vector<int> slots;  // kVec; kTensor: coordinates
  int64_t imm = 0;
  std::string name;  // kPred
};
struct Instr {
  std::string op;
  std::vector<Arg> args;
};
struct PtxProgram {
  std::string text, where;
  std::vector<Instr> code;
};

namespace {

std::string trim(const std::string& s) {
  size_t a = s.find_first_not_of(" \t\n\r"), b = s.find_last_not_of(" \t\n\r");
  return a == std::string::npos ? "" : s.substr(a, b - a + 1);
}

[[noreturn]] void bad_template(const std::string& where, const std::string& text, const std::string& why) {
  throw std::runtime_error("accelkernels emulator: PTX template at " + where + " cannot be executed: " + why +
                           "\n  template: " + text);
}

std::vector<std::string> split_top(const std::string& s) {
  std::vector<std::string> out;
  int depth = 0;
  std::string cur;
  for (char c : s) {
    if (c == '{' || c == '[') depth++;
    if (c == '}' || c == ']') depth--;
    if (c == ',' && depth == 0) {
      out.push_back(trim(cur));
      cur.clear();
    } else {
      cur += c;
    }
  }
  if (!trim(cur).empty()) out.push_back(trim(cur));
  return out;
}

int parse_slot(const std::string& s, const std::string& where, const std::string& text) {
  if (s.size() < 2 || s[0] != '%') bad_template(where, text, "expected an operand %N, got '" + s + "'");
  return std::stoi(s.substr(1));
}

Arg parse_arg(const std::string& s, const std::string& where, const std::string& text) {
  Arg a{};
  if (s == "_") { a.kind = Arg::kSink; return a; }
  if (s[0] == '%') { a.kind = Arg::kSlot; a.slot = parse_slot(s, where, text); return a; }
  if (s[0] == '{') {
    a.kind = Arg::kVec;
    for (const auto& e : split_top(s.substr(1, s.size() - 2))) a.slots.push_back(parse_slot(e, where, text));
    return a;
  }
  if (s[0] == '[') {
    auto inner = split_top(s.substr(1, s.size() - 2));
    if (inner.size() == 1) { a.kind = Arg::kAddr; a.slot = parse_slot(inner[0], where, text); return a; }
    if (inner.size() == 2 && inner[1][0] == '{') {
      a.kind = Arg::kTensor;
      a.slot = parse_slot(inner[0], where, text);
      for (const auto& e : split_top(inner[1].substr(1, inner[1].size() - 2))) a.slots.push_back(parse_slot(e, where, text));
      return a;
    }
    bad_template(where, text, "unsupported address form '" + s + "'");
  }
  if (std::isdigit(static_cast<unsigned char>(s[0])) || s[0] == '-') { a.kind = Arg::kImm; a.imm = std::stoll(s); return a; }
  a.kind = Arg::kPred;
  a.name = s;
  return a;
}

// Instruction forms handled below, with their operand shapes (checked at parse time).
const std::map<std::string, std::string>& forms() {
  static const std::map<std::string, std::string> f = {
      {"cp.async.cg.shared.global", "AAIX"},
      {"cp.async.commit_group", ""},
      {"cp.async.wait_group", "X"},
      {"ldmatrix.sync.aligned.m8n8.x4.shared.b16", "VA"},
      {"ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16", "VA"},
      {"stmatrix.sync.aligned.m8n8.x4.shared.b16", "AV"},
      {"mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32", "VVVV"},
      {"mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32", "VVVV"},
      {"mbarrier.init.shared::cta.b64", "AX"},
      {"mbarrier.arrive.expect_tx.shared::cta.b64", "_AX"},
      {"mbarrier.arrive.shared::cta.b64", "_A"},
      {"mbarrier.try_wait.parity.shared::cta.b64", "PAX"},
      {"selp.u32", "SXXP"},
      {"fence.mbarrier_init.release.cluster", ""},
      {"fence.proxy.async.shared::cta", ""},
      {"cp.async.bulk.tensor.3d.shared::cluster.global.tile.mbarrier::complete_tx::bytes", "ATA"},
      {"cp.async.bulk.tensor.3d.shared::cluster.global.tile.mbarrier::complete_tx::bytes.multicast::cluster", "ATAX"},
      {"cp.async.bulk.tensor.4d.shared::cluster.global.im2col.mbarrier::complete_tx::bytes", "ATAV"},
      {"cp.async.bulk.tensor.3d.global.shared::cta.bulk_group", "TA"},
      {"mapa.shared::cluster.u32", "SXX"},
      {"mbarrier.arrive.release.cluster.shared::cluster.b64", "_A"},
      {"barrier.cluster.arrive.release", ""},
      {"barrier.cluster.wait.acquire", ""},
      {"cp.async.bulk.commit_group", ""},
      {"cp.async.bulk.wait_group", "X"},
      {"cp.async.bulk.wait_group.read", "X"},
      {"bar.sync", "XX"},
      {"setmaxnreg.inc.sync.aligned.u32", "X"},
      {"setmaxnreg.dec.sync.aligned.u32", "X"},
      {"wgmma.fence.sync.aligned", ""},
      {"wgmma.mma_async.sync.aligned.m64n128k16.f32.f16.f16", "VSSXIIII"},
      {"wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16", "VSSXIIII"},
      {"wgmma.mma_async.sync.aligned.m64n256k16.f32.f16.f16", "VSSXIIII"},
      {"wgmma.mma_async.sync.aligned.m64n256k16.f32.bf16.bf16", "VSSXIIII"},
      {"wgmma.commit_group.sync.aligned", ""},
      {"wgmma.wait_group.sync.aligned", "X"},
  };
  return f;
}

bool shape_ok(char want, const Arg& a) {
  switch (want) {
    case 'A': return a.kind == Arg::kAddr;
    case 'V': return a.kind == Arg::kVec;
    case 'I': return a.kind == Arg::kImm;
    case 'S': return a.kind == Arg::kSlot;
    case 'X': return a.kind == Arg::kSlot || a.kind == Arg::kImm;
    case 'P': return a.kind == Arg::kPred;
    case '_': return a.kind == Arg::kSink;
    case 'T': return a.kind == Arg::kTensor;
  }
  return false;
}

std::mutex g_programs_mutex;
std::map<std::pair<std::string, std::string>, std::unique_ptr<PtxProgram>> g_programs;

// ---- operand access --------------------------------------------------------------------------------
struct Regs {
  Operand* ops;
  size_t n;
  std::map<std::string, bool>* preds;
  uint64_t get(int slot) const {
    if (slot < 0 || static_cast<size_t>(slot) >= n) throw std::runtime_error("accelkernels emulator: operand out of range");
    if (!ops[slot].input && ops[slot].output) fail("PTX operand read before written", "operand %" + std::to_string(slot) + " is output-only");
    return ops[slot].value;
  }
  uint64_t val(const Arg& a) const { return a.kind == Arg::kImm ? static_cast<uint64_t>(a.imm) : get(a.slot); }
  void set32(int slot, uint32_t v) const {
    Operand& o = ops[slot];
    if (!o.output) fail("PTX operand written but not an output", "operand %" + std::to_string(slot));
    std::memcpy(o.where, &v, 4);
    o.value = v;
  }
  float getf(int slot) const {
    uint32_t b = static_cast<uint32_t>(get(slot));
    float f;
    std::memcpy(&f, &b, 4);
    return f;
  }
  void setf(int slot, float f) const {
    uint32_t b;
    std::memcpy(&b, &f, 4);
    set32(slot, b);
  }
};

float half_bits_to_float(uint16_t h, bool bf16) {
  if (bf16) {
    uint32_t b = uint32_t{h} << 16;
    float f;
    std::memcpy(&f, &b, 4);
    return f;
  }
  _Float16 x;
  std::memcpy(&x, &h, 2);
  return static_cast<float>(x);
}

std::string hexs(uint64_t a) {
  std::ostringstream os;
  os << "0x" << std::hex << a;
  return os.str();
}

// ---- cp.async ------------------------------------------------------------------------------------
void cp_async(const Instr& in, const Regs& r) {
  Fiber& f = fiber();
  const uint32_t dst = static_cast<uint32_t>(r.val(in.args[0]));
  const uint64_t src = r.val(in.args[1]);
  const int64_t cp_size = in.args[2].imm;
  const uint64_t src_size = r.val(in.args[3]);
  if (cp_size != 16) fail("cp.async", "cp-size must be 16 for .cg, got " + std::to_string(cp_size));
  if (src_size > 16) fail("cp.async src-size larger than cp-size", "src-size " + std::to_string(src_size));
  uint8_t* d = shared_ptr(dst, 16, 16, "cp.async destination");
  if (overlaps_mbarrier(dst, 16)) fail("cp.async over a live mbarrier", "destination " + hexs(dst));
  if (src_size > 0) {
    if (src % 16 != 0) fail("misaligned global access", "cp.async source " + hexs(src) + " is not 16-byte aligned");
    if (!global_readable(reinterpret_cast<const void*>(src), src_size, nullptr))
      fail("out-of-bounds global access", "cp.async reads " + std::to_string(src_size) + " bytes at " + hexs(src) +
                                              ", outside every tensor passed to the launch");
  }
  shadow_write(dst, 16, f.gid, f.vc, "cp.async", f.gid);
  std::memset(d, 0xFF, 16);  // poison until the covering wait_group
  f.cp_uncommitted.push_back(CpCopy{dst, reinterpret_cast<const uint8_t*>(src), static_cast<uint32_t>(src_size)});
}

void cp_async_wait(int64_t n) {
  Fiber& f = fiber();
  while (static_cast<int64_t>(f.cp_groups.size()) > n) {
    cp_async_land(f, f.cp_groups.front());
    f.cp_groups.pop_front();
  }
}

// ---- ldmatrix and mma.sync (warp collectives) ------------------------------------------------------
struct LaneOps {
  const Regs* regs;
  const Instr* instr;
};

void ldmatrix(const Instr& in, const Regs& r, bool trans, const std::string& where) {
  LaneOps mine{&r, &in};
  rendezvous(32, &in, where, &mine, [&](const std::vector<Fiber*>& lanes) {
    if (lanes.size() != 32) fail("ldmatrix", "needs a full warp");
    uint16_t mat[4][8][8];
    for (int l = 0; l < 32; ++l) {
      auto* lo = static_cast<LaneOps*>(lanes[l]->coll_payload);
      const uint32_t addr = static_cast<uint32_t>(lo->regs->val(lo->instr->args[1]));
      const uint8_t* row = shared_ptr(addr, 16, 16, "ldmatrix row");
      if (overlaps_mbarrier(addr, 16)) fail("ldmatrix of a live mbarrier", "row address " + hexs(addr));
      shadow_read(addr, 16, lanes[l]->gid, lanes[l]->vc, "ldmatrix");
      std::memcpy(mat[l >> 3][l & 7], row, 16);
    }
    for (int l = 0; l < 32; ++l) {
      auto* lo = static_cast<LaneOps*>(lanes[l]->coll_payload);
      for (int j = 0; j < 4; ++j) {
        uint16_t lo16, hi16;
        if (!trans) {  // row l/4, columns 2(l%4), +1
          lo16 = mat[j][l >> 2][2 * (l & 3)];
          hi16 = mat[j][l >> 2][2 * (l & 3) + 1];
        } else {  // rows 2(l%4), +1 of column l/4
          lo16 = mat[j][2 * (l & 3)][l >> 2];
          hi16 = mat[j][2 * (l & 3) + 1][l >> 2];
        }
        lo->regs->set32(lo->instr->args[0].slots[j], uint32_t{lo16} | (uint32_t{hi16} << 16));
      }
    }
  });
}

// stmatrix.sync.aligned.m8n8.x4.shared.b16 [addr], {r0, r1, r2, r3} (PTX 9.7.16.5.16): the inverse of
// ldmatrix without .trans: lane l gives the address of row l%8 of matrix l/8 (16 bytes, aligned);
// register j of lane l holds row l/4, columns 2(l%4) and 2(l%4)+1 of matrix j, low half first.
void stmatrix(const Instr& in, const Regs& r, const std::string& where) {
  LaneOps mine{&r, &in};
  rendezvous(32, &in, where, &mine, [&](const std::vector<Fiber*>& lanes) {
    if (lanes.size() != 32) fail("stmatrix", "needs a full warp");
    uint16_t mat[4][8][8];
    for (int l = 0; l < 32; ++l) {
      auto* lo = static_cast<LaneOps*>(lanes[l]->coll_payload);
      for (int j = 0; j < 4; ++j) {
        const uint32_t v = static_cast<uint32_t>(lo->regs->get(lo->instr->args[1].slots[j]));
        mat[j][l >> 2][2 * (l & 3)] = static_cast<uint16_t>(v & 0xFFFF);
        mat[j][l >> 2][2 * (l & 3) + 1] = static_cast<uint16_t>(v >> 16);
      }
    }
    for (int l = 0; l < 32; ++l) {
      auto* lo = static_cast<LaneOps*>(lanes[l]->coll_payload);
      const uint32_t addr = static_cast<uint32_t>(lo->regs->val(lo->instr->args[0]));
      uint8_t* row = shared_ptr(addr, 16, 16, "stmatrix row");
      if (overlaps_mbarrier(addr, 16)) fail("stmatrix over a live mbarrier", "row address " + hexs(addr));
      shadow_write(addr, 16, lanes[l]->gid, lanes[l]->vc, "stmatrix", -1);
      std::memcpy(row, mat[l >> 3][l & 7], 16);
    }
  });
}

// setmaxnreg.{inc,dec}.sync.aligned.u32 N (PTX 9.7.19.5): the warpgroup's per-thread register maximum
// becomes N (24..256, a multiple of 8); .dec returns the difference to the block's pool, .inc takes it
// from the pool and waits until the pool holds it (the SASS: USETMAXREG.TRY_ALLOC.CTAPOOL in a loop),
// so a split that does not add up never completes (a deadlock report). .inc below or .dec above the
// current count is an error.
void setmaxnreg(const Instr& in, const Regs& r, bool inc, const std::string& where) {
  const int64_t want = static_cast<int64_t>(r.val(in.args[0]));
  rendezvous(128, &in, where, nullptr, [&](const std::vector<Fiber*>& lanes) {
    Block& b = block();
    if (lanes.size() != 128) fail("setmaxnreg misuse", "needs a full warpgroup (.sync.aligned)");
    const int wg = lanes[0]->tid / 128;
    if (want < 24 || want > 256 || want % 8 != 0)
      fail("setmaxnreg misuse", "register count " + std::to_string(want) + " is not a multiple of 8 in 24..256");
    int& cur = b.wg_regs.try_emplace(wg, b.regs_at_entry).first->second;
    if (inc && want < cur)
      fail("setmaxnreg misuse", ".inc to " + std::to_string(want) + " below the current " + std::to_string(cur));
    if (!inc && want > cur)
      fail("setmaxnreg misuse", ".dec to " + std::to_string(want) + " above the current " + std::to_string(cur));
    if (!inc) {
      b.reg_pool_free += (cur - want) * 128;
      cur = static_cast<int>(want);
      wake_register_waiters();
    } else {
      b.wg_reg_request[wg] = static_cast<int>(want);
    }
  });
  if (!inc) return;
  Block& b = block();
  const int wg = fiber().tid / 128;
  while (true) {
    auto req = b.wg_reg_request.find(wg);
    if (req == b.wg_reg_request.end()) return;  // granted (to this warpgroup's first thread to look)
    int& cur = b.wg_regs[wg];
    const int64_t need = static_cast<int64_t>(req->second - cur) * 128;
    if (need <= b.reg_pool_free) {
      b.reg_pool_free -= need;
      cur = req->second;
      b.wg_reg_request.erase(req);
      return;
    }
    yield_blocked(State::kRegWait, "setmaxnreg.inc to " + std::to_string(req->second) + " at " + where +
                                       ": the warpgroup needs " + std::to_string(need) + " registers, the block's pool has " +
                                       std::to_string(b.reg_pool_free));
  }
}

void mma_16816(const Instr& in, const Regs& r, bool bf16, const std::string& where) {
  LaneOps mine{&r, &in};
  rendezvous(32, &in, where, &mine, [&](const std::vector<Fiber*>& lanes) {
    if (lanes.size() != 32) fail("mma.sync", "needs a full warp");
    float A[16][16], B[16][8], C[16][8];
    auto halves = [&](uint32_t v, float& a, float& b) {
      a = half_bits_to_float(static_cast<uint16_t>(v & 0xFFFF), bf16);
      b = half_bits_to_float(static_cast<uint16_t>(v >> 16), bf16);
    };
    for (int l = 0; l < 32; ++l) {
      auto* lo = static_cast<LaneOps*>(lanes[l]->coll_payload);
      const Instr& I = *lo->instr;
      const int g = l >> 2, t = l & 3;
      auto reg = [&](int which, int i) { return static_cast<uint32_t>(lo->regs->get(I.args[which].slots[i])); };
      halves(reg(1, 0), A[g][2 * t], A[g][2 * t + 1]);
      halves(reg(1, 1), A[g + 8][2 * t], A[g + 8][2 * t + 1]);
      halves(reg(1, 2), A[g][2 * t + 8], A[g][2 * t + 9]);
      halves(reg(1, 3), A[g + 8][2 * t + 8], A[g + 8][2 * t + 9]);
      halves(reg(2, 0), B[2 * t][g], B[2 * t + 1][g]);
      halves(reg(2, 1), B[2 * t + 8][g], B[2 * t + 9][g]);
      for (int e = 0; e < 4; ++e) {
        const uint32_t b = reg(3, e);
        std::memcpy(&C[g + (e >> 1) * 8][2 * t + (e & 1)], &b, 4);
      }
    }
    for (int l = 0; l < 32; ++l) {
      auto* lo = static_cast<LaneOps*>(lanes[l]->coll_payload);
      const int g = l >> 2, t = l & 3;
      for (int e = 0; e < 4; ++e) {
        const int m = g + (e >> 1) * 8, n = 2 * t + (e & 1);
        double acc = C[m][n];  // products are exact; one rounding at the end (hardware order is undocumented)
        for (int k = 0; k < 16; ++k) acc += static_cast<double>(A[m][k]) * B[k][n];
        lo->regs->setf(lo->instr->args[0].slots[e], static_cast<float>(acc));
      }
    }
  });
}

// ---- mbarrier --------------------------------------------------------------------------------------
Mbarrier& live_mbarrier(uint32_t addr, const char* what) {
  shared_ptr(addr, 8, 8, what);
  Block& b = block();
  auto it = b.mbarriers.find(addr);
  if (it == b.mbarriers.end() || !it->second.live)
    fail("mbarrier misuse", std::string(what) + " on shared " + hexs(addr) + ", which holds no initialised mbarrier");
  Mbarrier& m = it->second;
  Fiber& f = fiber();
  if (m.init_tid != f.gid && f.vc[m.init_tid] < m.init_clock)
    fail("mbarrier misuse", std::string(what) + " on shared " + hexs(addr) + " is not ordered after its init by " +
                                agent_name(block(), m.init_tid) + " (fence.mbarrier_init + a barrier)");
  return m;
}

void maybe_complete(uint32_t addr, Mbarrier& m) {
  if (m.pending == 0 && m.tx == 0) {
    m.completed[m.phase & 1] = m.acc;
    m.acc.assign(block().agents(), 0);
    m.phase += 1;
    m.pending = m.expected;
    m.observed = false;
    wake_mbarrier_waiters(addr);
  }
}

void check_tx(int64_t tx, uint32_t addr) {
  constexpr int64_t kMax = (1 << 20) - 1;
  if (tx > kMax || tx < -kMax) fail("mbarrier tx-count out of range", "tx-count " + std::to_string(tx) + " on shared " + hexs(addr));
}

void mbar_arrive(uint32_t addr, Mbarrier& m) {
  Fiber& f = fiber();
  if (m.phase >= 1 && !m.observed)
    fail("mbarrier misuse", "arrive on shared " + hexs(addr) + " in phase " + std::to_string(m.phase) + ", but no try_wait observed phase " +
                                std::to_string(m.phase - 1) + " complete");
  m.pending -= 1;
  if (m.pending < 0) fail("mbarrier misuse", "more arrivals than expected on shared " + hexs(addr));
  join(m.acc, f.vc);
  f.vc[f.gid] += 1;
  maybe_complete(addr, m);
}

void mbar_init(uint32_t addr, int64_t count) {
  Block& b = block();
  Fiber& f = fiber();
  shared_ptr(addr, 8, 8, "mbarrier.init");
  if (count < 1 || count > (1 << 20) - 1) fail("mbarrier misuse", "init count " + std::to_string(count) + " outside 1..2^20-1");
  auto& m = b.mbarriers[addr];
  if (m.live) fail("mbarrier misuse", "re-init of the live mbarrier at shared " + hexs(addr));
  m = Mbarrier{};
  m.live = true;
  m.expected = m.pending = count;
  m.acc.assign(b.agents(), 0);
  m.completed[0].assign(b.agents(), 0);
  m.completed[1].assign(b.agents(), 0);
  m.init_tid = f.gid;
  m.init_clock = f.vc[f.gid];
  f.vc[f.gid] += 1;
}

bool mbar_try_wait(uint32_t addr, uint32_t parity) {
  Fiber& f = fiber();
  while (true) {
    Mbarrier& m = live_mbarrier(addr, "mbarrier.try_wait.parity");
    if ((parity & 1) != (m.phase & 1)) {  // the phase of this parity (current - 1) has completed
      if (m.phase >= 1) {
        join(f.vc, m.completed[parity & 1]);
        m.observed = true;
      }
      return true;
    }
    f.wait_bar = addr;
    std::ostringstream os;
    os << "mbarrier.try_wait.parity " << parity << " on shared " << hexs(addr) << " (phase " << m.phase << ", pending "
       << m.pending << " of " << m.expected << ", tx-count " << m.tx << ")";
    yield_blocked(State::kMbarWait, os.str());
  }
}

// ---- distributed shared memory (clusters) ---------------------------------------------------------
// A shared::cluster address of another block: mapa's result. The emulator encodes it as (rank + 1) << 24
// | the shared::cta offset (windows are under 16 MB); an address below 1 << 24 is the executing block's
// own (PTX: a shared::cta address is a valid shared::cluster address of the executing CTA).
constexpr uint32_t kClusterWindowBits = 24;

uint32_t mapa(uint32_t addr, int64_t rank) {
  Block& b = block();
  if (addr >> kClusterWindowBits)
    fail("mapa misuse", "the address " + hexs(addr) + " is not a shared::cta address of this block");
  if (rank < 0 || rank >= static_cast<int64_t>(b.cluster->blocks.size()))
    fail("mapa misuse", "cluster rank " + std::to_string(rank) + " outside a cluster of " +
                            std::to_string(b.cluster->blocks.size()) + " blocks");
  return (static_cast<uint32_t>(rank + 1) << kClusterWindowBits) | addr;
}

// The block a shared::cluster address lies in, and its offset there; an exited block's shared memory is
// gone (a cluster must keep every block alive while others still access it: barrier.cluster before exit).
Block& cluster_target(uint32_t addr, uint32_t* local, const char* what) {
  Block& b = block();
  const uint32_t tag = addr >> kClusterWindowBits;
  *local = addr & ((1u << kClusterWindowBits) - 1);
  if (tag == 0) return b;
  if (tag > b.cluster->blocks.size()) fail("invalid shared::cluster address", std::string(what) + " at " + hexs(addr));
  Block& target = *b.cluster->blocks[tag - 1];
  if (block_exited(target))
    fail("access to an exited block's shared memory",
         std::string(what) + " reaches cluster rank " + std::to_string(tag - 1) + ", whose threads have all exited " +
             "(its shared memory may belong to another block now: barrier.cluster before exit)");
  return target;
}

// ---- TMA ----------------------------------------------------------------------------------------
void tma_load(const Instr& in, const Regs& r) {
  Block& b = block();
  Fiber& f = fiber();
  const uint32_t dst = static_cast<uint32_t>(r.val(in.args[0]));
  const uint64_t map_addr = r.get(in.args[1].slot);
  const uint32_t bar = static_cast<uint32_t>(r.val(in.args[2]));
  if (map_addr % 64 != 0) fail("misaligned tensor map", "CUtensorMap at " + hexs(map_addr) + " is not 64-byte aligned");
  TensorMapFields tm;
  std::string why;
  if (!decode_tensor_map(reinterpret_cast<const void*>(map_addr), &tm, &why)) fail("invalid tensor map", why);
  if (tm.rank != static_cast<int>(in.args[1].slots.size()))
    fail("TMA rank mismatch", "a " + std::to_string(in.args[1].slots.size()) + "-D copy with a rank-" + std::to_string(tm.rank) + " map");
  const bool im2col = in.op.find(".im2col.") != std::string::npos;
  if (im2col != tm.im2col)
    fail("TMA mode mismatch", std::string(im2col ? "an im2col copy with a tiled map" : "a tiled copy with an im2col map") +
                                  " (cuTensorMapEncodeTiled / cuTensorMapEncodeIm2col)");
  const size_t align = tm.swizzle == CU_TENSOR_MAP_SWIZZLE_128B ? 1024 : 128;
  size_t box_elems = 1;
  for (int d = 0; d < tm.rank; ++d) box_elems *= tm.box[d];
  if (im2col) box_elems = size_t{tm.pixels_per_column} * tm.channels_per_pixel;
  const size_t bytes = box_elems * tm.esize;
  shared_ptr(dst, bytes, align, "TMA destination");
  if (overlaps_mbarrier(dst, bytes)) fail("TMA over a live mbarrier", "destination " + hexs(dst));
  Mbarrier& m = live_mbarrier(bar, "cp.async.bulk.tensor's mbarrier");
  if (!m.fenced) fail("mbarrier misuse", "TMA completes on shared " + hexs(bar) + " before fence.mbarrier_init made its init visible");
  int64_t coord[5] = {};
  for (int d = 0; d < tm.rank; ++d) coord[d] = static_cast<int32_t>(static_cast<uint32_t>(r.get(in.args[1].slots[d])));
  std::array<int64_t, 3> offsets{};  // im2col: the filter tap's offset per spatial dimension (W first), u16
  if (im2col) {
    const int spatial = tm.rank - 2;
    if (static_cast<int>(in.args[3].slots.size()) != spatial)
      fail("TMA im2col misuse", "a rank-" + std::to_string(tm.rank) + " im2col copy takes " + std::to_string(spatial) +
                                    " im2col offsets, got " + std::to_string(in.args[3].slots.size()));
    for (int i = 0; i < spatial; ++i) {
      offsets[i] = static_cast<int64_t>(r.get(in.args[3].slots[i]) & 0xFFFF);
      // The offsets share 16 bits: 16, 8 or 5 each for 1, 2 or 3 spatial dimensions (CUTLASS: offset_limit).
      if (offsets[i] >= (int64_t{1} << (16 / spatial)))
        fail("TMA im2col misuse", "im2col offset " + std::to_string(offsets[i]) + " does not fit the " +
                                      std::to_string(16 / spatial) + " bits a rank-" + std::to_string(tm.rank) +
                                      " copy has per offset");
      // The traversal starts at a base position inside the bounding box (PTX: tensor im2col mode).
      if (coord[i + 1] < tm.lower[i] || coord[i + 1] >= static_cast<int64_t>(tm.dims[i + 1]) + tm.upper[i])
        fail("TMA im2col misuse", "the start coordinate " + std::to_string(coord[i + 1]) + " of spatial dimension " +
                                      std::to_string(i) + " lies outside the bounding box [" + std::to_string(tm.lower[i]) +
                                      ", " + std::to_string(static_cast<int64_t>(tm.dims[i + 1]) + tm.upper[i]) + ")");
    }
  }
  const int agent = b.tma_agent(b.tma_next_agent++ % kTmaAgents);
  shadow_write(dst, bytes, agent, f.vc, "TMA load", f.gid);
  std::memset(b.arena + dst, 0xFF, bytes);
  TmaLoad t;
  t.dst = dst;
  t.bar = bar;
  t.countdown = 1 + static_cast<int>(b.rng ? (b.rng = b.rng * 6364136223846793005ull + 1442695040888963407ull) >> 60 : 0) %
                        std::max(1, settings().tma_delay);
  t.bar_phase = m.phase;
  t.issuer = &f;
  t.land = [tm, coord0 = coord[0], coord1 = coord[1], coord2 = coord[2], coord3 = coord[3], coord4 = coord[4], offsets,
            dst, bar, bytes, agent, phase = m.phase, vc = f.vc]() mutable {
    Block& bb = block();
    const int64_t c[3] = {coord0, coord1, coord2};
    auto swizzled = [&](uint32_t a) {
      return tm.swizzle == CU_TENSOR_MAP_SWIZZLE_128B ? a ^ (((a >> 7) & 7) << 4) : a;  // chunk c of line r -> c ^ (r % 8)
    };
    auto copy_element = [&](uint32_t a, const int64_t* g) {  // g: the element's coordinates, dimension 0 first
      uint8_t* out = bb.arena + swizzled(a);
      bool inside = true;
      for (int d = 0; d < tm.rank; ++d) inside = inside && g[d] >= 0 && g[d] < static_cast<int64_t>(tm.dims[d]);
      if (!inside) {
        std::memset(out, 0, tm.esize);
        return;
      }
      uint64_t off = g[0] * tm.esize;
      for (int d = 1; d < tm.rank; ++d) off += g[d] * tm.strides[d - 1];
      const uint8_t* src = static_cast<const uint8_t*>(tm.address) + off;
      if (!global_readable(src, tm.esize, nullptr))
        fail("out-of-bounds global access", "a TMA box element at " + hexs(reinterpret_cast<uintptr_t>(src)) +
                                                " lies outside every tensor passed to the launch (tensor map dims/strides)");
      std::memcpy(out, src, tm.esize);
    };
    if (tm.im2col) {
      // Pixel j of the column: base position (W, H, D) stepping by the element strides from the start,
      // W fastest, wrapping to the lower corner at the bounding box's upper end, then to the next image;
      // it loads channels [c0, c0 + channelsPerPixel) at base + offsets, zeros outside the tensor.
      const int spatial = tm.rank - 2;
      int64_t base[3] = {coord1, coord2, coord3};
      int64_t image = std::array<int64_t, 5>{coord0, coord1, coord2, coord3, coord4}[tm.rank - 1];
      for (uint32_t j = 0; j < tm.pixels_per_column; ++j) {
        int64_t g[5] = {};
        for (int i = 0; i < spatial; ++i) g[i + 1] = base[i] + offsets[i];
        g[tm.rank - 1] = image;
        for (uint32_t e = 0; e < tm.channels_per_pixel; ++e) {
          g[0] = coord0 + e;
          copy_element(dst + static_cast<uint32_t>((j * tm.channels_per_pixel + e) * tm.esize), g);
        }
        for (int i = 0; i < spatial; ++i) {
          base[i] += tm.element_strides[i + 1];
          if (base[i] < static_cast<int64_t>(tm.dims[i + 1]) + tm.upper[i]) break;
          base[i] = tm.lower[i];
          if (i == spatial - 1) image += 1;
        }
      }
    }
    for (uint32_t i2 = 0; !tm.im2col && i2 < (tm.rank > 2 ? tm.box[2] : 1); ++i2)
      for (uint32_t i1 = 0; i1 < (tm.rank > 1 ? tm.box[1] : 1); ++i1)
        for (uint32_t i0 = 0; i0 < tm.box[0]; ++i0) {  // dense image, dimension 0 fastest
          const int64_t g[3] = {c[0] + i0, c[1] + i1, c[2] + i2};
          copy_element(dst + static_cast<uint32_t>(((i2 * (tm.rank > 1 ? tm.box[1] : 1) + i1) * tm.box[0] + i0) * tm.esize), g);
        }
    const uint32_t clock = ++bb.tma_clock[agent - bb.agent_base - bb.nthreads];
    shadow_land(dst, bytes, agent, clock);
    vc[agent] = clock;
    auto it = bb.mbarriers.find(bar);
    if (it == bb.mbarriers.end() || !it->second.live) fail("mbarrier misuse", "a TMA load completed on a dead mbarrier");
    Mbarrier& mb = it->second;
    if (mb.phase != phase)
      fail("mbarrier misuse", "a TMA load's complete_tx reached shared " + hexs(bar) + " in phase " + std::to_string(mb.phase) +
                                  ", after the phase it was issued in (" + std::to_string(phase) + ") had completed");
    mb.tx -= static_cast<int64_t>(bytes);
    check_tx(mb.tx, bar);
    join(mb.acc, vc);
    maybe_complete(bar, mb);
  };
  f.vc[f.gid] += 1;
  b.tma.push_back(std::move(t));
}

// .multicast::cluster (PTX 9.7.9.25.5.1): the same box lands at the same shared offset in every block of
// the cluster named in the 16-bit ctaMask, and each destination's mbarrier at the same offset receives the
// complete_tx of its copy. Each copy is issued as a TMA load of that block.
void tma_load_multicast(const Instr& in, const Regs& r) {
  Block& b = block();
  const uint64_t mask = r.val(in.args[3]) & 0xFFFF;
  const size_t size = b.cluster->blocks.size();
  if (mask == 0 || (mask >> size) != 0)
    fail("TMA multicast misuse", "ctaMask " + hexs(mask) + " names no block or a block outside the cluster of " +
                                     std::to_string(size));
  for (size_t rank = 0; rank < size; ++rank) {
    if (!(mask >> rank & 1)) continue;
    Block& target = *b.cluster->blocks[rank];
    if (block_exited(target))
      fail("access to an exited block's shared memory", "a TMA multicast to cluster rank " + std::to_string(rank) +
                                                            ", whose threads have all exited");
    Fiber& f = fiber();
    if (&target != f.home) target.remote_accesses.emplace_back(f.gid, f.vc[f.gid]);
    BlockScope scope(target);
    tma_load(in, r);
  }
}

// cp.async.bulk.tensor.3d.global.shared::cta.bulk_group [map, {c0, c1, c2}], [src] (PTX 9.7.9.25.5.2):
// the box at the coordinates is written from shared memory in the map's image (dense, dim 0 fastest,
// 128B swizzle); elements outside the tensor are not written. The async proxy reads `src`: every
// generic-proxy write to it (stmatrix) must be ordered before the issue (a barrier) and followed by a
// fence.proxy.async of its writer before that barrier (PTX 9.7.13.5: async proxy), else the copy
// engine may read stale bytes. The read is an agent of its own; cp.async.bulk.wait_group[.read]
// orders it before the issuer's later accesses (and, through barriers, everyone's).
void check_proxy_fenced(uint32_t addr, size_t bytes, const Fiber& issuer) {
  Block& b = block();
  for (uint32_t g = addr / 16; g <= (addr + bytes - 1) / 16; ++g) {
    const Granule& s = b.shadow[g];
    if (s.writer < 0 || !b.is_thread(s.writer)) continue;  // unwritten, or written by the async proxy itself
    const auto& fences = b.fibers[s.writer - b.agent_base]->proxy_fences;
    const auto f = std::lower_bound(fences.begin(), fences.end(), s.wclock);
    if (f == fences.end() || issuer.vc[s.writer] <= *f)
      fail("generic-proxy write not fenced before an async-proxy read",
           "a TMA store reads shared " + hexs(g * 16) + ", written by thread " + std::to_string(s.writer - b.agent_base) +
               " with no fence.proxy.async.shared::cta after that write ordered before the store's issue");
  }
}

void tma_store(const Instr& in, const Regs& r) {
  Block& b = block();
  Fiber& f = fiber();
  const uint64_t map_addr = r.get(in.args[0].slot);
  const uint32_t src = static_cast<uint32_t>(r.val(in.args[1]));
  if (map_addr % 64 != 0) fail("misaligned tensor map", "CUtensorMap at " + hexs(map_addr) + " is not 64-byte aligned");
  TensorMapFields tm;
  std::string why;
  if (!decode_tensor_map(reinterpret_cast<const void*>(map_addr), &tm, &why)) fail("invalid tensor map", why);
  if (tm.rank != static_cast<int>(in.args[0].slots.size()))
    fail("TMA rank mismatch", "a " + std::to_string(in.args[0].slots.size()) + "-D store with a rank-" + std::to_string(tm.rank) + " map");
  const size_t align = tm.swizzle == CU_TENSOR_MAP_SWIZZLE_128B ? 1024 : 128;
  size_t box_elems = 1;
  for (int d = 0; d < tm.rank; ++d) box_elems *= tm.box[d];
  const size_t bytes = box_elems * tm.esize;
  shared_ptr(src, bytes, align, "TMA store source");
  if (overlaps_mbarrier(src, bytes)) fail("TMA store of a live mbarrier", "source " + hexs(src));
  // A slot per issuing warp (8 slots: distinct for up to 8 warps), so that waiting for one thread's stores
  // never orders another warp's stores for it.
  const int slot = (f.tid / 32) % kStoreAgents;
  const int agent = b.store_agent(slot);
  const uint32_t clock = ++b.store_clock[slot];
  VC vc = f.vc;
  vc[agent] = clock;
  // First the ordering of the writes before the issue (a race otherwise), then their proxy fences.
  shadow_read(src, bytes, agent, vc, "TMA store (cp.async.bulk.tensor global.shared::cta)");
  check_proxy_fenced(src, bytes, f);
  int64_t coord[3] = {};
  for (int d = 0; d < tm.rank; ++d) coord[d] = static_cast<int32_t>(static_cast<uint32_t>(r.get(in.args[0].slots[d])));
  for (uint32_t i2 = 0; i2 < (tm.rank > 2 ? tm.box[2] : 1); ++i2)
    for (uint32_t i1 = 0; i1 < (tm.rank > 1 ? tm.box[1] : 1); ++i1)
      for (uint32_t i0 = 0; i0 < tm.box[0]; ++i0) {
        const int64_t g[3] = {coord[0] + i0, coord[1] + i1, coord[2] + i2};
        bool inside = true;
        for (int d = 0; d < tm.rank; ++d) inside = inside && g[d] >= 0 && g[d] < static_cast<int64_t>(tm.dims[d]);
        if (!inside) continue;  // clipped
        uint32_t a = src + static_cast<uint32_t>(((i2 * (tm.rank > 1 ? tm.box[1] : 1) + i1) * tm.box[0] + i0) * tm.esize);
        if (tm.swizzle == CU_TENSOR_MAP_SWIZZLE_128B) a ^= ((a >> 7) & 7) << 4;
        uint64_t off = g[0] * tm.esize;
        for (int d = 1; d < tm.rank; ++d) off += g[d] * tm.strides[d - 1];
        uint8_t* dst = static_cast<uint8_t*>(const_cast<void*>(tm.address)) + off;
        if (!global_writable(dst, tm.esize))
          fail("out-of-bounds global access", "a TMA store writes " + hexs(reinterpret_cast<uintptr_t>(dst)) +
                                                  ", outside every output passed to the launch (tensor map dims/strides)");
        std::memcpy(dst, b.arena + a, tm.esize);
      }
  f.bulk_uncommitted.push_back(BulkStore{agent, clock});
  f.vc[f.gid] += 1;
}

// cp.async.bulk.wait_group[.read] N: until at most N of this thread's committed bulk groups are pending.
// (Global writes land at the issue here; .read and the full wait differ only on a GPU.)
void bulk_wait(int64_t n) {
  Fiber& f = fiber();
  while (static_cast<int64_t>(f.bulk_groups.size()) > n) {
    for (const BulkStore& st : f.bulk_groups.front()) f.vc[st.agent] = std::max(f.vc[st.agent], st.clock);
    f.bulk_groups.pop_front();
  }
}

// ---- wgmma (warpgroup collectives) -----------------------------------------------------------------

// The shared address of element (row, k) of a 128B-swizzled operand (row: M for A, N for B), 2-byte
// elements, the XOR on the absolute shared address (EMULATION.md §1f):
//   K-major  (imm-trans 0): 128-byte rows of 64 k, 8-row atoms SBO apart (LBO unused);
//   MN-major (imm-trans 1): 128-byte rows of 64 M/N elements, one row per k, 8-row atoms of k SBO apart,
//            the next 64 M/N elements LBO on — CuTe's ((T,8,m),(8,k)):((1,T,LBO),(8T,SBO)), T = 8
//            (mma_traits_sm90_gmma.hpp, make_gmma_desc<Major::MN>; its GmmaDescriptor comment: for MN-major
//            "LBO: the stride from the first 8 rows to the next 8 rows" of 16-byte units).
uint32_t operand_address(uint64_t desc, int row, int k, bool trans) {
  const uint32_t start = static_cast<uint32_t>((desc & 0x3FFF) << 4);
  const uint32_t lbo = static_cast<uint32_t>(((desc >> 16) & 0x3FFF) << 4);
  const uint32_t sbo = static_cast<uint32_t>(((desc >> 32) & 0x3FFF) << 4);
  const uint32_t lin =
      trans ? start + static_cast<uint32_t>(row / 64) * lbo + static_cast<uint32_t>(k / 8) * sbo +
                  static_cast<uint32_t>(k % 8) * 128 + 2 * static_cast<uint32_t>(row % 64)
            : start + static_cast<uint32_t>(row / 8) * sbo + static_cast<uint32_t>(row % 8) * 128 + 2 * static_cast<uint32_t>(k);
  return lin ^ (((lin >> 7) & 7) << 4);
}

float smem_operand(uint64_t desc, int row, int k, bool trans, bool bf16, const char* what) {
  const uint8_t* p = shared_ptr(operand_address(desc, row, k, trans), 2, 2, what);
  uint16_t h;
  std::memcpy(&h, p, 2);
  return half_bits_to_float(h, bf16);
}

void check_descriptor(uint64_t desc, const char* which) {
  const int mode = static_cast<int>(desc >> 62), base = static_cast<int>((desc >> 49) & 7);
  if (mode != 1) fail("unsupported wgmma descriptor", std::string(which) + " layout mode " + std::to_string(mode) + " (only 128B swizzle is emulated)");
  if (base != 0) fail("unsupported wgmma descriptor", std::string(which) + " base offset " + std::to_string(base) + " (only 0 is emulated)");
}

void wgmma_retire(WgmmaOp& op, int agent, const VC& vc) {
  check_descriptor(op.desc_a, "A");
  check_descriptor(op.desc_b, "B");
  const int n = op.n, per_thread = n / 2;
  // The shared bytes this op reads, for the race checks, in the 16-byte pieces the swizzle keeps whole:
  // K-major, 64 rows of A and N rows of B, 2 pieces (16 k) each; MN-major, 16 k rows of 64 (A) or N (B)
  // elements, 8 elements a piece.
  for (int which = 0; which < 2; ++which) {
    const uint64_t desc = which ? op.desc_b : op.desc_a;
    const bool trans = which ? op.trans_b : op.trans_a;
    const int rows = which ? n : 64;
    for (int row = 0; row < rows; row += trans ? 8 : 1)
      for (int k = 0; k < 16; k += trans ? 1 : 8) {
        const uint32_t phys = operand_address(desc, row, k, trans);
        shared_ptr(phys, 16, 16, which ? "wgmma B operand" : "wgmma A operand");
        shadow_read(phys, 16, agent, vc, "wgmma.mma_async (retired by wgmma.wait_group)");
      }
  }
  static thread_local float A[64][16], B[256][16];
  for (int m = 0; m < 64; ++m)
    for (int k = 0; k < 16; ++k) A[m][k] = smem_operand(op.desc_a, m, k, op.trans_a, op.bf16, "wgmma A operand");
  for (int r = 0; r < n; ++r)
    for (int k = 0; k < 16; ++k) B[r][k] = smem_operand(op.desc_b, r, k, op.trans_b, op.bf16, "wgmma B operand");
  Block& b = block();
  auto chain = b.wg_chains.find(op.regs[0]);
  if (chain == b.wg_chains.end()) fail("wgmma", "internal: an op retired without its accumulator chain");
  std::vector<float>& value = chain->second.value;
  for (int t = 0; t < 128; ++t) {
    const int w = t / 32, g = (t % 32) / 4, c = t % 4;
    for (int j = 0; j < n / 8; ++j)
      for (int e = 0; e < 4; ++e) {
        const int m = 16 * w + g + (e >> 1) * 8, col = 8 * j + 2 * c + (e & 1);
        float& acc_reg = value[t * per_thread + 4 * j + e];
        double acc = op.scale_d ? acc_reg : 0.0;
        for (int k = 0; k < 16; ++k) acc += static_cast<double>(A[m][k]) * B[col][k];
        acc_reg = static_cast<float>(acc);
      }
  }
  if (--chain->second.inflight == 0) {  // the last op in flight on these registers: they hold the result now
    for (size_t i = 0; i < chain->second.regs.size(); ++i) *chain->second.regs[i] = value[i];
    b.wg_chains.erase(chain);
  }
}

void wgmma_mma(const Instr& in, const Regs& r, bool bf16, int n, const std::string& where) {
  LaneOps mine{&r, &in};
  rendezvous(128, &in, where, &mine, [&](const std::vector<Fiber*>& lanes) {
    Block& b = block();
    const int wg = lanes[0]->tid / 128;
    if (lanes.size() != 128) fail("wgmma", "needs a full warpgroup");
    if (!b.wg_fenced[wg]) fail("wgmma misuse", "wgmma.mma_async without a wgmma.fence since the last wgmma.wait_group");
    const int per_thread = n / 2;
    WgmmaOp op;
    op.bf16 = bf16;
    op.n = n;
    auto* l0 = static_cast<LaneOps*>(lanes[0]->coll_payload);
    if (static_cast<int>(l0->instr->args[0].slots.size()) != per_thread)
      fail("wgmma misuse", "m64n" + std::to_string(n) + "k16 takes " + std::to_string(per_thread) +
                               " accumulator registers, the template names " + std::to_string(l0->instr->args[0].slots.size()));
    op.desc_a = l0->regs->get(l0->instr->args[1].slot);
    op.desc_b = l0->regs->get(l0->instr->args[2].slot);
    const uint64_t scale = l0->regs->val(l0->instr->args[3]);
    op.scale_d = scale != 0;
    for (int i = 4; i < 8; ++i) {
      const int64_t v = l0->instr->args[i].imm;
      if (i < 6 && v != 1) fail("unsupported wgmma", "imm-scale-a/b other than 1 are not emulated");
      if (i >= 6 && v != 0 && v != 1) fail("wgmma misuse", "imm-trans-a/b must be 0 or 1, got " + std::to_string(v));
    }
    op.trans_a = l0->instr->args[6].imm == 1;  // (f16/bf16 only: the handler's shapes are those)
    op.trans_b = l0->instr->args[7].imm == 1;
    op.regs.resize(128 * per_thread);
    for (int t = 0; t < 128; ++t) {
      auto* lo = static_cast<LaneOps*>(lanes[t]->coll_payload);
      if (lo->regs->get(lo->instr->args[1].slot) != op.desc_a || lo->regs->get(lo->instr->args[2].slot) != op.desc_b)
        fail("wgmma misuse", "the matrix descriptors differ between threads " + std::to_string(lanes[0]->tid) + " and " +
                                 std::to_string(lanes[t]->tid) + " of the warpgroup");
      for (int i = 0; i < per_thread; ++i)
        op.regs[t * per_thread + i] = static_cast<float*>(lo->regs->ops[lo->instr->args[0].slots[i]].where);
    }
    // A new chain starts from the registers' values; an op on registers that an in-flight wgmma of this
    // warpgroup accumulates into continues that chain (same shape, same registers: PTX allows such
    // accumulator chains without a wait or fence in between).
    auto chain = b.wg_chains.find(op.regs[0]);
    if (chain == b.wg_chains.end()) {
      WgmmaChain c;
      c.regs = op.regs;
      c.n = n;
      c.value.resize(op.regs.size());
      for (size_t i = 0; i < op.regs.size(); ++i) c.value[i] = *op.regs[i];
      chain = b.wg_chains.emplace(op.regs[0], std::move(c)).first;
    } else if (chain->second.n != n || chain->second.regs != op.regs) {
      fail("wgmma misuse", "a wgmma.mma_async accumulates into registers of an in-flight wgmma of another shape or "
                           "register set; wait for it (wgmma.wait_group) first");
    }
    chain->second.inflight += 1;
    // Until the chain retires the accumulators are undefined: poison them, so a read before
    // wgmma.wait_group shows up as NaN.
    for (float* p : op.regs) *p = std::numeric_limits<float>::quiet_NaN();
    b.wg_uncommitted[wg].push_back(std::move(op));
  });
  // The asm statement's "+f" outputs must not be written back with stale values: exec_ptx skips them.
}

void wgmma_sync_op(const Instr& in, const std::string& where, int kind, int64_t n) {
  rendezvous(128, &in, where, nullptr, [&](const std::vector<Fiber*>& lanes) {
    Block& b = block();
    const int wg = lanes[0]->tid / 128;
    if (lanes.size() != 128) fail("wgmma", "needs a full warpgroup");
    if (kind == 0) {
      b.wg_fenced[wg] = true;
    } else if (kind == 1) {
      b.wg_groups[wg].push_back(std::move(b.wg_uncommitted[wg]));
      b.wg_uncommitted[wg].clear();
    } else {
      VC m(b.agents(), 0);
      for (Fiber* l : lanes) join(m, l->vc);
      for (Fiber* l : lanes) l->vc = m;  // .sync.aligned: the warpgroup converges here
      auto& groups = b.wg_groups[wg];
      while (static_cast<int64_t>(groups.size()) > n) {
        for (auto& op : groups.front()) wgmma_retire(op, lanes[0]->gid, m);
        groups.pop_front();
      }
      b.wg_fenced[wg] = false;
    }
  });
}

}  // namespace

// `constraints` (the asm operands' letters, "=r,r,l") documents the site in the generated source; each
// Operand carries its own kind at run time.
const PtxProgram& compile_ptx(const char* tmpl, [[maybe_unused]] const char* constraints, const char* file, int line) {
  const std::string where = std::string(file) + ":" + std::to_string(line);
  std::lock_guard<std::mutex> lock(g_programs_mutex);
  auto key = std::make_pair(std::string(tmpl), where);
  auto it = g_programs.find(key);
  if (it != g_programs.end()) return *it->second;
  auto prog = std::make_unique<PtxProgram>();
  prog->text = tmpl;
  prog->where = where;
  std::string stmt;
  std::vector<std::string> stmts;
  for (char c : std::string(tmpl)) {
    if (c == ';') { stmts.push_back(stmt); stmt.clear(); } else stmt += c;
  }
  stmts.push_back(stmt);
  for (std::string s : stmts) {
    s = trim(s);
    while (!s.empty() && (s[0] == '{' || s[0] == '}')) s = trim(s.substr(1));
    if (s.empty() || s.rfind(".reg", 0) == 0) continue;
    const size_t sp = s.find_first_of(" \t\n");
    Instr in;
    in.op = s.substr(0, sp);
    const auto f = forms().find(in.op);
    if (f == forms().end()) bad_template(where, tmpl, "instruction '" + in.op + "' has no handler in the emulator");
    if (sp != std::string::npos)
      for (const auto& a : split_top(s.substr(sp))) in.args.push_back(parse_arg(a, where, tmpl));
    if (in.args.size() != f->second.size())
      bad_template(where, tmpl, "'" + in.op + "' takes " + std::to_string(f->second.size()) + " operands, got " + std::to_string(in.args.size()));
    for (size_t i = 0; i < in.args.size(); ++i)
      if (!shape_ok(f->second[i], in.args[i])) bad_template(where, tmpl, "operand " + std::to_string(i + 1) + " of '" + in.op + "' has the wrong form");
    prog->code.push_back(std::move(in));
  }
  return *(g_programs[key] = std::move(prog));
}

void exec_ptx(const PtxProgram& prog, std::initializer_list<Operand> list) {
  std::vector<Operand> ops(list);
  std::map<std::string, bool> preds;
  Regs r{ops.data(), ops.size(), &preds};
  Fiber& f = fiber();
  for (const Instr& in : prog.code) {
    const std::string where = in.op + " at " + prog.where;
    const std::string& op = in.op;
    if (op == "cp.async.cg.shared.global") cp_async(in, r);
    else if (op == "cp.async.commit_group") { f.cp_groups.push_back(std::move(f.cp_uncommitted)); f.cp_uncommitted.clear(); }
    else if (op == "cp.async.wait_group") cp_async_wait(static_cast<int64_t>(r.val(in.args[0])));
    else if (op.rfind("ldmatrix.", 0) == 0) ldmatrix(in, r, op.find(".trans") != std::string::npos, where);
    else if (op == "stmatrix.sync.aligned.m8n8.x4.shared.b16") stmatrix(in, r, where);
    else if (op.rfind("mma.sync.", 0) == 0) mma_16816(in, r, op.find("bf16") != std::string::npos, where);
    else if (op == "mbarrier.init.shared::cta.b64") mbar_init(static_cast<uint32_t>(r.val(in.args[0])), static_cast<int64_t>(r.val(in.args[1])));
    else if (op == "mbarrier.arrive.expect_tx.shared::cta.b64") {
      const uint32_t a = static_cast<uint32_t>(r.val(in.args[1]));
      Mbarrier& m = live_mbarrier(a, "mbarrier.arrive.expect_tx");
      m.tx += static_cast<int64_t>(r.val(in.args[2]));
      check_tx(m.tx, a);
      mbar_arrive(a, m);
    } else if (op == "mbarrier.arrive.release.cluster.shared::cluster.b64") {
      // An arrive on an mbarrier of any block of the cluster (release at cluster scope: the caller's clock).
      uint32_t local = 0;
      Block& target = cluster_target(static_cast<uint32_t>(r.val(in.args[1])), &local, "mbarrier.arrive.shared::cluster");
      if (&target != f.home) target.remote_accesses.emplace_back(f.gid, f.vc[f.gid]);
      BlockScope scope(target);
      mbar_arrive(local, live_mbarrier(local, "mbarrier.arrive.shared::cluster"));
    } else if (op == "mapa.shared::cluster.u32") {
      r.set32(in.args[0].slot, mapa(static_cast<uint32_t>(r.val(in.args[1])), static_cast<int64_t>(r.val(in.args[2]))));
    } else if (op == "barrier.cluster.arrive.release") {
      cluster_arrive(where);
    } else if (op == "barrier.cluster.wait.acquire") {
      cluster_wait(where);
    } else if (op == "mbarrier.arrive.shared::cta.b64") {
      const uint32_t a = static_cast<uint32_t>(r.val(in.args[1]));
      mbar_arrive(a, live_mbarrier(a, "mbarrier.arrive"));
    } else if (op == "mbarrier.try_wait.parity.shared::cta.b64") {
      preds[in.args[0].name] = mbar_try_wait(static_cast<uint32_t>(r.val(in.args[1])), static_cast<uint32_t>(r.val(in.args[2])));
    } else if (op == "selp.u32") {
      auto p = preds.find(in.args[3].name);
      if (p == preds.end()) bad_template(prog.where, prog.text, "predicate '" + in.args[3].name + "' read before set");
      r.set32(in.args[0].slot, static_cast<uint32_t>(p->second ? r.val(in.args[1]) : r.val(in.args[2])));
    } else if (op == "fence.mbarrier_init.release.cluster") {
      for (auto& [a, m] : block().mbarriers) if (m.init_tid == f.gid) m.fenced = true;
    } else if (op == "fence.proxy.async.shared::cta") {
      // Orders this thread's generic-proxy shared accesses with the async proxy: recorded, so that a
      // TMA store can check each thread-written byte it reads was fenced by its writer (tma_store).
      f.proxy_fences.push_back(f.vc[f.gid]);
      f.vc[f.gid] += 1;
    } else if (op == "cp.async.bulk.tensor.3d.global.shared::cta.bulk_group") tma_store(in, r);
    else if (op == "cp.async.bulk.tensor.3d.shared::cluster.global.tile.mbarrier::complete_tx::bytes.multicast::cluster")
      tma_load_multicast(in, r);
    else if (op.rfind("cp.async.bulk.tensor.", 0) == 0) tma_load(in, r);
    else if (op == "cp.async.bulk.commit_group") { f.bulk_groups.push_back(std::move(f.bulk_uncommitted)); f.bulk_uncommitted.clear(); }
    else if (op == "cp.async.bulk.wait_group" || op == "cp.async.bulk.wait_group.read") bulk_wait(static_cast<int64_t>(r.val(in.args[0])));
    else if (op == "bar.sync") {
      // bar.sync is barrier.sync.aligned: the whole warp executes it (checked by a warp rendezvous), and
      // the barrier counts its threads.
      rendezvous(32, &in, where, nullptr, [](const std::vector<Fiber*>& lanes) {
        if (lanes.size() != 32) fail("bar.sync misuse", "needs whole warps");
      });
      named_barrier(static_cast<int>(r.val(in.args[0])), static_cast<int>(r.val(in.args[1])), where);
    }
    else if (op == "setmaxnreg.inc.sync.aligned.u32") setmaxnreg(in, r, true, where);
    else if (op == "setmaxnreg.dec.sync.aligned.u32") setmaxnreg(in, r, false, where);
    else if (op == "wgmma.fence.sync.aligned") wgmma_sync_op(in, where, 0, 0);
    else if (op.rfind("wgmma.mma_async.", 0) == 0)
      wgmma_mma(in, r, op.find("bf16") != std::string::npos, op.find(".m64n256k16.") != std::string::npos ? 256 : 128, where);
    else if (op == "wgmma.commit_group.sync.aligned") wgmma_sync_op(in, where, 1, 0);
    else if (op == "wgmma.wait_group.sync.aligned") wgmma_sync_op(in, where, 2, static_cast<int64_t>(r.val(in.args[0])));
    else bad_template(prog.where, prog.text, "instruction '" + op + "' has no handler");
  }
}

std::vector<std::string> known_ptx_instructions() {
  std::vector<std::string> out;
  for (const auto& [k, v] : forms()) out.push_back(k);
  return out;
}

}  // namespace ak_emu
