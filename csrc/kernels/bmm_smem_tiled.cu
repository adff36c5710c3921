// Step 2 of the SIMT fp32 ladder: 32x32 output tiles staged through shared memory.
//
// Each 32x32 thread block computes one 32x32 tile of C. Per K step it stages a 32x32 tile of A and
// of B in shared memory (one element per thread, zero-filled past the ragged edges), then every
// thread accumulates its output from shared memory: each global element is read by one thread
// instead of 32. Within a warp (fixed ty, tx = 0..31) the loads walk K for A and N for B, which
// is coalesced for row-major operands; the inner loop reads As[ty][i] (a broadcast) and Bs[i][tx]
// (consecutive banks), so it has no bank conflicts.
#include "simt_tile.cuh"

namespace accelkernels {
namespace {

constexpr int kTile = 32;

__global__ void bmm_smem_tiled_f32_kernel(BmmArgs<float> p, int64_t batch_offset) {
  __shared__ float As[kTile][kTile];
  __shared__ float Bs[kTile][kTile];

  const int tx = threadIdx.x, ty = threadIdx.y;
  const int64_t batch = batch_offset + blockIdx.z;
  const int64_t row = static_cast<int64_t>(blockIdx.x) * kTile + ty;
  const int64_t col = static_cast<int64_t>(blockIdx.y) * kTile + tx;
  const float* a = p.a + batch * p.a_stride_batch;
  const float* b = p.b + batch * p.b_stride_batch;

  float acc = 0.0f;
  for (int64_t k0 = 0; k0 < p.k; k0 += kTile) {
    As[ty][tx] = load_or_zero(a, row, k0 + tx, p.m, p.k, p.a_stride_m, p.a_stride_k);
    Bs[ty][tx] = load_or_zero(b, k0 + ty, col, p.k, p.n, p.b_stride_k, p.b_stride_n);
    __syncthreads();
#pragma unroll
    for (int i = 0; i < kTile; ++i) acc = fmaf(As[ty][i], Bs[i][tx], acc);
    __syncthreads();
  }
  store_output(p, batch, row, col, acc);
}

}  // namespace

void launch_bmm_smem_tiled_f32(const BmmArgs<float>& args, cudaStream_t stream) {
  launch_tiled(bmm_smem_tiled_f32_kernel, args, kTile, kTile, dim3(kTile, kTile), 0, stream);
}

}  // namespace accelkernels
