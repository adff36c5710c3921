// Step 3 of the SIMT fp32 ladder: 1-D register blocking — each thread computes a column of TM outputs.
//
// A 64x64 tile of C per block of 512 threads; per K step of 8 a 64x8 tile of A and an 8x64 tile of
// B go to shared memory (one element per thread each). A thread keeps TM = 8 accumulators for rows
// ty*8 .. ty*8+7 of its column and reuses each B value it reads from shared memory 8 times, so
// shared-memory traffic per FMA drops from 2 loads to 1 + 1/8.
#include "simt_tile.cuh"

namespace accelkernels {
namespace {

constexpr int BM = 64, BN = 64, BK = 8, TM = 8;
constexpr int kThreads = BM * BN / TM;  // 512

__global__ void __launch_bounds__(kThreads) bmm_blocktile_1d_f32_kernel(BmmArgs<float> p, int64_t batch_offset) {
  __shared__ float As[BM][BK];
  __shared__ float Bs[BK][BN];

  const int tid = threadIdx.x;
  const int col_in_tile = tid % BN;
  const int row_group = tid / BN;  // 0..7: rows row_group*TM .. +TM-1
  const int64_t batch = batch_offset + blockIdx.z;
  const int64_t m0 = static_cast<int64_t>(blockIdx.x) * BM;
  const int64_t n0 = static_cast<int64_t>(blockIdx.y) * BN;
  const float* a = p.a + batch * p.a_stride_batch;
  const float* b = p.b + batch * p.b_stride_batch;
  // Loader coordinates: 512 threads fill the 64x8 A tile and the 8x64 B tile one element each.
  const int a_row = tid / BK, a_col = tid % BK;
  const int b_row = tid / BN, b_col = tid % BN;

  float acc[TM] = {};
  for (int64_t k0 = 0; k0 < p.k; k0 += BK) {
    As[a_row][a_col] = load_or_zero(a, m0 + a_row, k0 + a_col, p.m, p.k, p.a_stride_m, p.a_stride_k);
    Bs[b_row][b_col] = load_or_zero(b, k0 + b_row, n0 + b_col, p.k, p.n, p.b_stride_k, p.b_stride_n);
    __syncthreads();
#pragma unroll
    for (int kk = 0; kk < BK; ++kk) {
      const float bv = Bs[kk][col_in_tile];
#pragma unroll
      for (int i = 0; i < TM; ++i) acc[i] = fmaf(As[row_group * TM + i][kk], bv, acc[i]);
    }
    __syncthreads();
  }
#pragma unroll
  for (int i = 0; i < TM; ++i) store_output(p, batch, m0 + row_group * TM + i, n0 + col_in_tile, acc[i]);
}

}  // namespace

void launch_bmm_blocktile_1d_f32(const BmmArgs<float>& args, cudaStream_t stream) {
  launch_tiled(bmm_blocktile_1d_f32_kernel, args, BM, BN, dim3(kThreads), 0, stream);
}

}  // namespace accelkernels
