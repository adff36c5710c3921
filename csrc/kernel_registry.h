// The kernel registry: every CUDA kernel the extension contains, by name, with what it serves.
// `accelkernels._C.kernels()` lists it, and the ops pick a kernel from it by name, so each step of a
// kernel ladder stays runnable (and benchmarkable) on its own.
#pragma once

#include <string_view>
#include <vector>

#include "kernels/bmm_args.h"

namespace accelkernels {

struct BmmKernel {
  const char* name;
  const char* dtypes;
  const char* min_arch;  // lowest compute capability it runs on
  const char* description;
  // One launcher per dtype it serves; nullptr where it does not.
  void (*launch_f32)(const BmmArgs<float>&, cudaStream_t);
  void (*launch_f16)(const BmmArgs<__half>&, cudaStream_t);
  void (*launch_bf16)(const BmmArgs<__nv_bfloat16>&, cudaStream_t);
  bool tensor_cores;  // reads its operands through 16-byte cp.async chunks: mma_sync_unsupported_reason applies
};

const std::vector<BmmKernel>& bmm_kernels();
const BmmKernel* find_bmm_kernel(std::string_view name);  // nullptr when absent

// Largest grid extent along y (the N tiles): CUDA's gridDim.y limit.
constexpr long long kMaxGridY = 65535;

}  // namespace accelkernels
