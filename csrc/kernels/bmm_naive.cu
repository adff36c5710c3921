// Step 1 of the SIMT fp32 ladder: one thread per output element, straight from global memory.
//
// threadIdx.x walks N, so the 32 threads of a warp read 32 consecutive B elements and write 32
// consecutive C elements (coalesced for row-major B) while all reading the same A element (a
// broadcast). Every A and B element is still fetched from global memory (or L1/L2) once per output
// that needs it: K / 1 arithmetic intensity, which the next steps raise.
#include "simt_tile.cuh"

namespace accelkernels {
namespace {

constexpr int kTile = 32;

__global__ void bmm_naive_f32_kernel(BmmArgs<float> p, int64_t batch_offset) {
  const int64_t batch = batch_offset + blockIdx.z;
  const int64_t row = static_cast<int64_t>(blockIdx.x) * kTile + threadIdx.y;
  const int64_t col = static_cast<int64_t>(blockIdx.y) * kTile + threadIdx.x;
  if (row >= p.m || col >= p.n) return;
  const float* a = p.a + batch * p.a_stride_batch + row * p.a_stride_m;
  const float* b = p.b + batch * p.b_stride_batch + col * p.b_stride_n;
  float acc = 0.0f;
  for (int64_t k = 0; k < p.k; ++k) acc = fmaf(a[k * p.a_stride_k], b[k * p.b_stride_k], acc);
  store_output(p, batch, row, col, acc);
}

}  // namespace

void launch_bmm_naive_f32(const BmmArgs<float>& args, cudaStream_t stream) {
  launch_tiled(bmm_naive_f32_kernel, args, kTile, kTile, dim3(kTile, kTile), 0, stream);
}

}  // namespace accelkernels
