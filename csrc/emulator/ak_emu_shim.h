// Forced first include (g++ -include) of every kernel source compiled for the CPU executor: the
// real CUDA headers in host mode, then the CUDA C++ keywords and built-ins mapped onto ak_emu.h.
// `__shared__` and `__align__` become markers that accelkernels/emulator/rewrite.py replaces after
// preprocessing, as it does `asm` statements and `<<<...>>>` launches.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>

#include <cuda.h>
#include <cudaTypedefs.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include "ak_emu.h"

#undef __global__
#undef __device__
#undef __host__
#undef __forceinline__
#undef __shared__
#undef __align__
#undef __launch_bounds__
#undef __grid_constant__
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __shared__ __ak_shared__
#define __align__(n) __ak_align__(n)
#define __launch_bounds__(...)
#define __grid_constant__

#define threadIdx (::ak_emu::current().thread_idx)
#define blockIdx (::ak_emu::current().block_idx)
#define blockDim (::ak_emu::current().block_dim)
#define gridDim (::ak_emu::current().grid_dim)
#define __syncthreads() ::ak_emu::syncthreads(__FILE__, __LINE__)
#define __shfl_down_sync(mask, v, delta) ::ak_emu::shfl_down_sync(mask, v, delta, __FILE__, __LINE__)
#define __cvta_generic_to_shared(p) ::ak_emu::cvta_generic_to_shared(p)

// nvcc's cuda_runtime.h overload for kernel pointers (defined there only under __CUDACC__).
template <typename R, typename... A>
inline cudaError_t cudaFuncSetAttribute(R (*kernel)(A...), cudaFuncAttribute attr, int value) {
  return ::cudaFuncSetAttribute(reinterpret_cast<const void*>(kernel), attr, value);
}
