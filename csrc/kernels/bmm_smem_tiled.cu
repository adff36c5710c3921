// Shared-memory tiled fp32 batched GEMM: the second rung of the SIMT ladder (after the naive kernel).
//
// Each 32x32 thread block computes one 32x32 tile of C. Per K step it stages a 32x32 tile of A and
// of B in shared memory (one element per thread, zero-filled past the ragged edges), then every
// thread accumulates its output from shared memory: each global element is read by one thread
// instead of 32. Within a warp (fixed ty, tx = 0..31) the loads walk K for A and N for B, which
// is coalesced for row-major operands; the inner loop reads As[ty][i] (a broadcast) and Bs[i][tx]
// (consecutive banks), so it has no bank conflicts.
#include <algorithm>

#include "bmm_args.h"
#include "epilogue.cuh"

namespace accelkernels {
namespace {

constexpr int kTile = 32;
constexpr int64_t kMaxGridZ = 65535;  // CUDA's limit on gridDim.z: larger batches launch in chunks

__global__ void bmm_smem_tiled_f32_kernel(BmmArgs<float> p, int64_t batch_offset) {
  __shared__ float As[kTile][kTile];
  __shared__ float Bs[kTile][kTile];

  const int tx = threadIdx.x, ty = threadIdx.y;
  const int64_t batch = batch_offset + blockIdx.z;
  // M tiles on grid x (up to 2^31 - 1 blocks), N tiles on grid y (up to 65535, checked by the host).
  const int64_t row = static_cast<int64_t>(blockIdx.x) * kTile + ty;
  const int64_t col = static_cast<int64_t>(blockIdx.y) * kTile + tx;
  const float* a = p.a + batch * p.a_stride_batch;
  const float* b = p.b + batch * p.b_stride_batch;

  float acc = 0.0f;
  for (int64_t k0 = 0; k0 < p.k; k0 += kTile) {
    const int64_t ka = k0 + tx;  // the K index this thread loads for A
    const int64_t kb = k0 + ty;  // ... and for B
    As[ty][tx] = (row < p.m && ka < p.k) ? a[row * p.a_stride_m + ka * p.a_stride_k] : 0.0f;
    Bs[ty][tx] = (kb < p.k && col < p.n) ? b[kb * p.b_stride_k + col * p.b_stride_n] : 0.0f;
    __syncthreads();
#pragma unroll
    for (int i = 0; i < kTile; ++i) acc = fmaf(As[ty][i], Bs[i][tx], acc);
    __syncthreads();
  }

  if (row < p.m && col < p.n) {
    if (p.bias != nullptr) acc += p.bias[col];
    p.c[(batch * p.m + row) * p.n + col] = apply_activation(acc, p.activation);
  }
}

}  // namespace

void launch_bmm_smem_tiled_f32(const BmmArgs<float>& args, cudaStream_t stream) {
  const dim3 block(kTile, kTile);
  for (int64_t start = 0; start < args.batch; start += kMaxGridZ) {
    const int64_t count = std::min(kMaxGridZ, args.batch - start);
    const dim3 grid(static_cast<unsigned>((args.m + kTile - 1) / kTile),
                    static_cast<unsigned>((args.n + kTile - 1) / kTile), static_cast<unsigned>(count));
    bmm_smem_tiled_f32_kernel<<<grid, block, 0, stream>>>(args, start);
  }
}

}  // namespace accelkernels
