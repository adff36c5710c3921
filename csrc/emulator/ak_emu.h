// The CPU executor of csrc/kernels/ (ACCELKERNELS_CUDA_EMULATE=1): the runtime interface that the
// rewritten kernel sources call. accelkernels/emulator/rewrite.py turns each `asm` statement into
// exec_ptx(...), each `k<<<grid, block, smem, stream>>>(args)` into launch(...)(args) and each
// `__shared__` declaration into a reference into the block's shared-memory arena; everything else
// in the kernels (index math, loops, swizzles, pipelines, epilogues, host launchers) is compiled as
// it is, with g++. Each CUDA thread runs as a fiber; blocks run one after another.
//
// Every rule the executor checks raises std::runtime_error (a Python RuntimeError) naming the
// kernel, the block, the thread(s), the shared address and the rule (README: "Running the CUDA
// kernels without a GPU").
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <initializer_list>
#include <tuple>
#include <string>
#include <type_traits>
#include <utility>

#include <cuda_runtime.h>

namespace ak_emu {

// ---- the current thread --------------------------------------------------------------------------
struct ThreadView {
  uint3 thread_idx, block_idx;
  dim3 block_dim, grid_dim;
};
const ThreadView& current();  // the running fiber's indices (an error outside a launch)

void syncthreads(const char* file, int line);
unsigned cvta_generic_to_shared(const void* p);  // offset in the block's shared window

// Warp shuffles (a rendezvous of the lanes in the mask).
uint32_t shfl_down_bits(unsigned mask, uint32_t bits, unsigned delta, const char* file, int line);
template <typename T>
T shfl_down_sync(unsigned mask, T v, unsigned delta, const char* file, int line) {
  static_assert(sizeof(T) == 4, "32-bit shuffles only");
  uint32_t bits;
  std::memcpy(&bits, &v, 4);
  bits = shfl_down_bits(mask, bits, delta, file, line);
  std::memcpy(&v, &bits, 4);
  return v;
}

// ---- shared memory -----------------------------------------------------------------------------
// A `__shared__` array: its place in the block's arena, allocated at first use in the block (every
// thread of the block gets the same one). `site` identifies the declaration.
void* static_shared(const void* site, size_t bytes, size_t align, const char* name);
template <typename ArrayT>
ArrayT& static_shared_ref(const void* site, size_t align, const char* name) {
  return *static_cast<ArrayT*>(static_shared(site, sizeof(ArrayT), align < alignof(ArrayT) ? alignof(ArrayT) : align, name));
}
void* dynamic_shared(size_t align);  // `extern __shared__ T name[]`

// ---- inline PTX ----------------------------------------------------------------------------------
// One asm operand: where it lives (outputs) or its value (inputs), and its constraint letter.
struct Operand {
  char kind;      // 'r' (32-bit), 'l' (64-bit), 'f' (fp32), 'n' (immediate)
  bool output;    // "=x" or "+x"
  bool input;     // "x" or "+x"
  void* where;    // outputs: the lvalue
  uint64_t value; // inputs: the value (floats as their bits)
};
template <typename T>
Operand bind_out(T& x, char kind, bool also_input) {
  static_assert(sizeof(T) == 4 || sizeof(T) == 8, "asm operands are 32- or 64-bit");
  Operand o{kind, true, also_input, &x, 0};
  if (also_input) {
    if constexpr (sizeof(T) == 4) { uint32_t b; std::memcpy(&b, &x, 4); o.value = b; }
    else { uint64_t b; std::memcpy(&b, &x, 8); o.value = b; }
  }
  return o;
}
template <typename T>
Operand bind_in(const T& x, char kind) {
  Operand o{kind, false, true, nullptr, 0};
  if constexpr (std::is_pointer_v<T>) o.value = reinterpret_cast<uintptr_t>(x);
  else if constexpr (std::is_floating_point_v<T>) { float f = static_cast<float>(x); uint32_t b; std::memcpy(&b, &f, 4); o.value = b; }
  else o.value = static_cast<uint64_t>(x);
  if (kind == 'r') o.value &= 0xFFFFFFFFull;
  return o;
}

struct PtxProgram;  // a parsed template (ptx.cpp)
const PtxProgram& compile_ptx(const char* tmpl, const char* constraints, const char* file, int line);
void exec_ptx(const PtxProgram& prog, std::initializer_list<Operand> ops);

// ---- launches ----------------------------------------------------------------------------------
struct LaunchSpec {
  const char* callee;     // the kernel expression at the launch site
  const char* launcher;   // __PRETTY_FUNCTION__ of the host function launching it
  const void* function;   // the kernel's address (cudaFuncSetAttribute limits)
  dim3 grid, block;
  size_t dynamic_smem;
  const char* file;
  int line;
  dim3 cluster{1, 1, 1};  // cudaLaunchAttributeClusterDimension (cudaLaunchKernelEx); the blocks of a cluster run together
};
void run_launch(const LaunchSpec& spec, void (*body)(void*), void* closure);

template <typename... Args>
struct Launcher {
  LaunchSpec spec;
  void (*kernel)(Args...);
  template <typename... Actual>
  void operator()(Actual&&... actual) const {
    // Kernel parameters are copied once per launch; each thread's call copies them again into its
    // own frame (as each CUDA thread has its own parameter values).
    struct Closure { void (*k)(Args...); std::tuple<std::decay_t<Args>...> args; };
    Closure c{kernel, std::tuple<std::decay_t<Args>...>(std::forward<Actual>(actual)...)};
    run_launch(spec, [](void* p) {
      auto* cl = static_cast<Closure*>(p);
      std::apply([cl](const auto&... a) { cl->k(a...); }, cl->args);
    }, &c);
  }
};
// `cudaLaunchKernelEx(&config, kernel, args...)` in a kernel file becomes launch_ex(..., &config, kernel)(args...):
// the grid, block, dynamic shared memory and cluster dimensions come from the config, as on a GPU.
template <typename... Args>
struct LauncherEx {
  Launcher<Args...> launcher;
  template <typename... Actual>
  cudaError_t operator()(Actual&&... actual) const {
    launcher(std::forward<Actual>(actual)...);
    return cudaSuccess;
  }
};
template <typename... Args>
LauncherEx<Args...> launch_ex(const char* callee, const char* launcher, const char* file, int line,
                              const cudaLaunchConfig_t* config, void (*kernel)(Args...)) {
  LaunchSpec spec{callee, launcher, reinterpret_cast<const void*>(kernel), config->gridDim, config->blockDim,
                  config->dynamicSmemBytes, file, line};
  for (unsigned i = 0; i < config->numAttrs; ++i)
    if (config->attrs[i].id == cudaLaunchAttributeClusterDimension)
      spec.cluster = dim3(config->attrs[i].val.clusterDim.x, config->attrs[i].val.clusterDim.y,
                          config->attrs[i].val.clusterDim.z);
  return LauncherEx<Args...>{Launcher<Args...>{spec, kernel}};
}

template <typename... Args>
Launcher<Args...> launch(const char* callee, const char* launcher, const char* file, int line, void (*kernel)(Args...),
                         dim3 grid, dim3 block, size_t smem = 0, cudaStream_t = nullptr) {
  return Launcher<Args...>{
      LaunchSpec{callee, launcher, reinterpret_cast<const void*>(kernel), grid, block, smem, file, line}, kernel};
}

// ---- settings and global memory ranges (set by the ops, see emu_ops.cpp) -------------------------
struct Settings {
  int sm_count = 2;
  int cc_major = 9, cc_minor = 0;
  uint64_t seed = 0;                  // thread order within a block (0: in order, else shuffled)
  int tma_delay = 3;                  // scheduler steps a TMA load stays in flight (at most)
  size_t smem_per_block_optin = 232448;  // 227 KB (H100/H200)
  bool replay = false;                // run every launch twice (the second time in reverse thread order) and
                                      // require bit-identical outputs: races of plain C++ accesses change them
  unsigned grid_z_sample = 0;         // tests only: run just the first and last N blocks along z (0: all)
  bool sm90a_code = true;             // false: as a build without sm_90a code, whose wgmma kernels are empty
                                      // stubs (the host must refuse them: bmm_op.cpp, wgmma_code_present)
};
Settings& settings();
void register_global(const void* begin, size_t bytes, bool writable, const char* name);
void clear_globals();

}  // namespace ak_emu
