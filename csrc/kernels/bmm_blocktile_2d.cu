// Step 4 of the SIMT fp32 ladder: 2-D register blocking — each thread computes an 8x8 block of C.
//
// A 128x128 tile of C per block of 256 threads; per K step of 8, 128x8 of A and 8x128 of B go to
// shared memory (four elements per thread each). Per K index a thread reads 8 A values and 8 B
// values from shared memory into registers and does 64 FMAs with them: 16 shared loads per 64 FMAs
// (step 3: 9 per 8).
#include "simt_tile.cuh"

namespace accelkernels {
namespace {

constexpr int BM = 128, BN = 128, BK = 8, TM = 8, TN = 8;
constexpr int kThreads = (BM / TM) * (BN / TN);  // 256

__global__ void __launch_bounds__(kThreads) bmm_blocktile_2d_f32_kernel(BmmArgs<float> p, int64_t batch_offset) {
  __shared__ float As[BM][BK];
  __shared__ float Bs[BK][BN];

  const int tid = threadIdx.x;
  const int thread_row = tid / (BN / TN), thread_col = tid % (BN / TN);
  const int64_t batch = batch_offset + blockIdx.z;
  const int64_t m0 = static_cast<int64_t>(blockIdx.x) * BM;
  const int64_t n0 = static_cast<int64_t>(blockIdx.y) * BN;
  const float* a = p.a + batch * p.a_stride_batch;
  const float* b = p.b + batch * p.b_stride_batch;

  float acc[TM][TN] = {};
  float reg_m[TM], reg_n[TN];
  for (int64_t k0 = 0; k0 < p.k; k0 += BK) {
#pragma unroll
    for (int i = 0; i < BM * BK / kThreads; ++i) {  // 4 elements of each tile per thread
      const int idx = tid + i * kThreads;
      As[idx / BK][idx % BK] = load_or_zero(a, m0 + idx / BK, k0 + idx % BK, p.m, p.k, p.a_stride_m, p.a_stride_k);
      Bs[idx / BN][idx % BN] = load_or_zero(b, k0 + idx / BN, n0 + idx % BN, p.k, p.n, p.b_stride_k, p.b_stride_n);
    }
    __syncthreads();
#pragma unroll
    for (int kk = 0; kk < BK; ++kk) {
#pragma unroll
      for (int i = 0; i < TM; ++i) reg_m[i] = As[thread_row * TM + i][kk];
#pragma unroll
      for (int j = 0; j < TN; ++j) reg_n[j] = Bs[kk][thread_col * TN + j];
#pragma unroll
      for (int i = 0; i < TM; ++i)
#pragma unroll
        for (int j = 0; j < TN; ++j) acc[i][j] = fmaf(reg_m[i], reg_n[j], acc[i][j]);
    }
    __syncthreads();
  }
#pragma unroll
  for (int i = 0; i < TM; ++i)
#pragma unroll
    for (int j = 0; j < TN; ++j)
      store_output(p, batch, m0 + thread_row * TM + i, n0 + thread_col * TN + j, acc[i][j]);
}

}  // namespace

void launch_bmm_blocktile_2d_f32(const BmmArgs<float>& args, cudaStream_t stream) {
  launch_tiled(bmm_blocktile_2d_f32_kernel, args, BM, BN, dim3(kThreads), 0, stream);
}

}  // namespace accelkernels
