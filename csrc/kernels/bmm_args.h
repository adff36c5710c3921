// The batched GEMM problem every CUDA GEMM kernel in csrc/kernels/ solves, and their launchers.
//
//   C[b] = act(A[b] @ B[b] + bias),  A: (batch, M, K), B: (batch, K, N), C: (batch, M, N) contiguous
//
// A and B are read through arbitrary element strides (a transposed weight or a broadcast batch with
// stride 0 needs no copy). Plain C++ and CUDA runtime only: no torch headers in kernel files, which
// keeps nvcc fast (torch/extension.h dominates compile time).
#pragma once

#include <cstdint>

#include <cuda_runtime.h>

namespace accelkernels {

enum class Activation : int { kNone = 0, kRelu = 1, kGelu = 2, kSilu = 3 };

template <typename T>
struct BmmArgs {
  const T* a;
  const T* b;
  const T* bias;  // nullptr: no bias
  T* c;
  int64_t batch, m, n, k;
  int64_t a_stride_batch, a_stride_m, a_stride_k;
  int64_t b_stride_batch, b_stride_k, b_stride_n;
  Activation activation;
};

// Step 2 of the SIMT ladder: 32x32 output tiles staged through shared memory, fp32 in and out.
void launch_bmm_smem_tiled_f32(const BmmArgs<float>& args, cudaStream_t stream);

}  // namespace accelkernels
