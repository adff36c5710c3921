// The kernel registry: every CUDA kernel the extension contains, by name, with what it serves.
// `accelkernels._C.kernels()` lists it, and the ops pick a kernel from it by name, so each step of a
// kernel ladder stays runnable (and benchmarkable) on its own.
#pragma once

#include <string_view>
#include <vector>

#include "kernels/bmm_args.h"
#include "kernels/conv_args.h"

namespace accelkernels {

// What a kernel needs of its operands: any strides (SIMT), whole 16-byte chunks (mma.sync,
// mma_sync_unsupported_reason), K-contiguous TMA-describable operands on sm_90 (wgmma), and with
// them an output TMA can store (wgmma_v2).
enum class Operands { kStrided, kChunks16B, kTmaKMajorSm90, kTmaKMajorSm90TmaStore };

struct BmmKernel {
  const char* name;
  const char* dtypes;
  const char* min_arch;  // lowest compute capability it runs on
  const char* description;
  // One launcher per dtype it serves; nullptr where it does not.
  void (*launch_f32)(const BmmArgs<float>&, cudaStream_t);
  void (*launch_f16)(const BmmArgs<__half>&, cudaStream_t);
  void (*launch_bf16)(const BmmArgs<__nv_bfloat16>&, cudaStream_t);
  Operands operands;  // which operands it can read (checked before launch)
};

const std::vector<BmmKernel>& bmm_kernels();
const BmmKernel* find_bmm_kernel(std::string_view name);  // nullptr when absent

// A convolution kernel serves one pass (forward, input_grad, weight_grad); names repeat across
// passes ("direct", "implicit_gemm"), each pass being its own op.
struct ConvKernel {
  const char* name;
  ConvPass pass;
  const char* dtypes;
  const char* min_arch;
  const char* description;
  void (*launch_f32)(const ConvArgs<float>&, cudaStream_t);
  void (*launch_f16)(const ConvArgs<__half>&, cudaStream_t);
  void (*launch_bf16)(const ConvArgs<__nv_bfloat16>&, cudaStream_t);
  bool tensor_cores;  // reads channels_last operands in 16-byte chunks (conv_implicit_gemm_unsupported_reason)
};

const std::vector<ConvKernel>& conv_kernels();
const ConvKernel* find_conv_kernel(ConvPass pass, std::string_view name);  // nullptr when absent
const char* conv_op_name(ConvPass pass);  // the op a pass is served by: "cuda_conv2d", ...

// Largest grid extent along y (the N tiles): CUDA's gridDim.y limit.
constexpr long long kMaxGridY = 65535;

}  // namespace accelkernels
