// Step 5 of the SIMT fp32 ladder: step 4 with 16-byte loads and a transposed A tile.
//
// Global memory: each thread moves runs of four consecutive elements — one float4 load when the
// operand is contiguous along the run and aligned (A along K, B along N; checked by the host), four
// checked scalar loads otherwise. Shared memory: A is stored transposed (As[k][m]) so that the eight
// A values a thread needs per K index are contiguous too; both register fills become two float4
// shared loads instead of eight scalar ones.
#include "simt_quads.cuh"

namespace accelkernels {
namespace {

constexpr int BM = 128, BN = 128, BK = 8, TM = 8, TN = 8;
constexpr int kThreads = (BM / TM) * (BN / TN);  // 256

template <bool kVecA, bool kVecB>
__global__ void __launch_bounds__(kThreads) bmm_vectorized_f32_kernel(BmmArgs<float> p, int64_t batch_offset) {
  __shared__ __align__(16) float As[BK][BM];  // transposed: As[k][m]
  __shared__ __align__(16) float Bs[BK][BN];

  const int tid = threadIdx.x;
  const int thread_row = tid / (BN / TN), thread_col = tid % (BN / TN);
  const int64_t batch = batch_offset + blockIdx.z;
  const int64_t m0 = static_cast<int64_t>(blockIdx.x) * BM;
  const int64_t n0 = static_cast<int64_t>(blockIdx.y) * BN;
  const float* a = p.a + batch * p.a_stride_batch;
  const float* b = p.b + batch * p.b_stride_batch;
  // One run of four per thread per tile: A 128 rows x 2 runs along K, B 8 rows x 32 runs along N.
  const int a_row = tid / (BK / 4), a_col = (tid % (BK / 4)) * 4;
  const int b_row = tid / (BN / 4), b_col = (tid % (BN / 4)) * 4;

  float acc[TM][TN] = {};
  for (int64_t k0 = 0; k0 < p.k; k0 += BK) {
    const float4 qa = load_quad<kVecA>(a, m0 + a_row, k0 + a_col, p.m, p.k, p.a_stride_m, p.a_stride_k);
    As[a_col + 0][a_row] = qa.x;
    As[a_col + 1][a_row] = qa.y;
    As[a_col + 2][a_row] = qa.z;
    As[a_col + 3][a_row] = qa.w;
    *reinterpret_cast<float4*>(&Bs[b_row][b_col]) =
        load_quad<kVecB>(b, k0 + b_row, n0 + b_col, p.k, p.n, p.b_stride_k, p.b_stride_n);
    __syncthreads();
#pragma unroll
    for (int kk = 0; kk < BK; ++kk) {
      const float4 m_lo = *reinterpret_cast<const float4*>(&As[kk][thread_row * TM]);
      const float4 m_hi = *reinterpret_cast<const float4*>(&As[kk][thread_row * TM + 4]);
      const float4 n_lo = *reinterpret_cast<const float4*>(&Bs[kk][thread_col * TN]);
      const float4 n_hi = *reinterpret_cast<const float4*>(&Bs[kk][thread_col * TN + 4]);
      const float reg_m[TM] = {m_lo.x, m_lo.y, m_lo.z, m_lo.w, m_hi.x, m_hi.y, m_hi.z, m_hi.w};
      const float reg_n[TN] = {n_lo.x, n_lo.y, n_lo.z, n_lo.w, n_hi.x, n_hi.y, n_hi.z, n_hi.w};
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

void launch_bmm_vectorized_f32(const BmmArgs<float>& args, cudaStream_t stream) {
  launch_with_quads(args, bmm_vectorized_f32_kernel<true, true>, bmm_vectorized_f32_kernel<true, false>,
                    bmm_vectorized_f32_kernel<false, true>, bmm_vectorized_f32_kernel<false, false>, BM, BN,
                    dim3(kThreads), stream);
}

}  // namespace accelkernels
