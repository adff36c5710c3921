// The batched GEMM problem every CUDA GEMM kernel in csrc/kernels/ solves, and their launchers.
//
//   C[b] = act(A[b] @ B[b] + bias),  A: (batch, M, K), B: (batch, K, N), C: (batch, M, N) contiguous
//
// A and B are read through arbitrary element strides (a transposed weight or a broadcast batch with
// stride 0 needs no copy). Plain C++ and CUDA runtime only: no torch headers in kernel files, which
// keeps nvcc fast (torch/extension.h dominates compile time).
#pragma once

#include <cstdint>

#include <cuda_bf16.h>
#include <cuda_fp16.h>
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

// The SIMT fp32 ladder, one step per kernel file (csrc/kernels/bmm_<step>.cu); each step handles
// ragged M, N, K and any strides.
void launch_bmm_naive_f32(const BmmArgs<float>& args, cudaStream_t stream);
void launch_bmm_smem_tiled_f32(const BmmArgs<float>& args, cudaStream_t stream);
void launch_bmm_blocktile_1d_f32(const BmmArgs<float>& args, cudaStream_t stream);
void launch_bmm_blocktile_2d_f32(const BmmArgs<float>& args, cudaStream_t stream);
void launch_bmm_vectorized_f32(const BmmArgs<float>& args, cudaStream_t stream);
void launch_bmm_warptile_f32(const BmmArgs<float>& args, cudaStream_t stream);

// Tensor cores (sm_80+): mma.sync m16n8k16 with ldmatrix, a multi-stage cp.async ring in a swizzled
// shared layout. Each operand must have a contiguous dimension (K or M for A, K or N for B) whose
// size and other strides are multiples of 8 elements, on a 16-byte-aligned base (mma_sync_supports).
void launch_bmm_mma_sync_f16(const BmmArgs<__half>& args, cudaStream_t stream);
void launch_bmm_mma_sync_bf16(const BmmArgs<__nv_bfloat16>& args, cudaStream_t stream);

// Hopper (sm_90a only): wgmma fed by TMA, warp-specialized and persistent. Operands must be
// K-contiguous (B as the N x K matrix) with 16-byte-multiple row and batch strides (wgmma_unsupported_reason).
void launch_bmm_wgmma_f16(const BmmArgs<__half>& args, cudaStream_t stream);
void launch_bmm_wgmma_bf16(const BmmArgs<__nv_bfloat16>& args, cudaStream_t stream);
// The next step (bmm_wgmma_v2.cu): 128x256 tiles, one wgmma group in flight, setmaxnreg, a TMA-store
// epilogue. The same operands as wgmma, and C rows of a multiple of 16 bytes (wgmma_v2_unsupported_reason).
void launch_bmm_wgmma_v2_f16(const BmmArgs<__half>& args, cudaStream_t stream);
void launch_bmm_wgmma_v2_bf16(const BmmArgs<__nv_bfloat16>& args, cudaStream_t stream);
// The step after it (bmm_wgmma_cluster.cu): clusters of 2 blocks along M sharing the B tile by TMA
// multicast. The same requirements as wgmma_v2.
void launch_bmm_wgmma_cluster_f16(const BmmArgs<__half>& args, cudaStream_t stream);
void launch_bmm_wgmma_cluster_bf16(const BmmArgs<__nv_bfloat16>& args, cudaStream_t stream);

// Whether the code loaded for the current device holds the wgmma kernels' bodies. They exist only in
// sm_90a code: a build with sm_80 (or plain sm_90) code for a 9.0 card compiles empty stubs in their
// place, which would return whatever the output's memory held. The binary answers (a device variable
// initialised per architecture, read once per device), not the build's arch list.
bool wgmma_code_present();

// Why the wgmma/TMA kernel cannot read these operands (nullptr when it can).
template <typename T>
const char* wgmma_unsupported_reason(const BmmArgs<T>& p) {
  auto aligned = [](const void* ptr) { return reinterpret_cast<uintptr_t>(ptr) % 16 == 0; };
  auto stride_ok = [](int64_t s) { return s > 0 && (s * 2) % 16 == 0; };
  if (!aligned(p.a) || !aligned(p.b)) return "operands must start on 16-byte boundaries";
  if (p.a_stride_k != 1 || !stride_ok(p.a_stride_m)) return "A must be K-contiguous with rows 16-byte aligned";
  if (p.b_stride_k != 1 || !stride_ok(p.b_stride_n)) return "B must be K-contiguous (an N x K matrix) with rows 16-byte aligned";
  if (p.batch > 1 && (!stride_ok(p.a_stride_batch) || !stride_ok(p.b_stride_batch)))
    return "batches must be 16-byte-aligned and not broadcast (stride 0)";
  return nullptr;
}

// Why wgmma_v2 cannot serve this problem (nullptr when it can): wgmma's operand rules, and a C that
// TMA can store (a (batch, M, N) map needs rows and batches of a multiple of 16 bytes, an aligned base).
template <typename T>
const char* wgmma_v2_unsupported_reason(const BmmArgs<T>& p) {
  if (const char* why = wgmma_unsupported_reason(p)) return why;
  if (reinterpret_cast<uintptr_t>(p.c) % 16 != 0 || (p.n * 2) % 16 != 0)
    return "the TMA-store epilogue needs output rows of a multiple of 16 bytes (N a multiple of 8)";
  return nullptr;
}

// Why the mma.sync kernel cannot read these operands (nullptr when it can).
template <typename T>
const char* mma_sync_unsupported_reason(const BmmArgs<T>& p) {
  auto aligned = [](const void* ptr) { return reinterpret_cast<uintptr_t>(ptr) % 16 == 0; };
  auto operand_ok = [](int64_t s_outer, int64_t s_inner, int64_t inner_size, int64_t s_batch) {
    return s_inner == 1 && inner_size % 8 == 0 && s_outer % 8 == 0 && s_batch % 8 == 0;
  };
  if (!aligned(p.a) || !aligned(p.b)) return "operands must start on 16-byte boundaries";
  const bool a_ok = operand_ok(p.a_stride_m, p.a_stride_k, p.k, p.a_stride_batch) ||
                    operand_ok(p.a_stride_k, p.a_stride_m, p.m, p.a_stride_batch);
  const bool b_ok = operand_ok(p.b_stride_n, p.b_stride_k, p.k, p.b_stride_batch) ||
                    operand_ok(p.b_stride_k, p.b_stride_n, p.n, p.b_stride_batch);
  if (!a_ok) return "A needs a contiguous K or M dimension whose size and other strides are multiples of 8";
  if (!b_ok) return "B needs a contiguous K or N dimension whose size and other strides are multiples of 8";
  return nullptr;
}

}  // namespace accelkernels
