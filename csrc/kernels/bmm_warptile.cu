// Step 6 of the SIMT fp32 ladder (the top one): warptiling with double-buffered shared memory.
//
// A 128x128 tile of C per block of 256 threads (8 warps in 2x4). Each warp owns a 64x32 sub-tile,
// which it walks as WNITER = 2 column strips of 64x16; inside a strip a thread owns an 8x4 block,
// so the 32 lanes of a warp cover 64x16 with lanes 4 apart in N reading neighbouring shared words
// and a warp's shared-memory footprint per K index is 64 + 32 floats. Per K index a thread does
// 8x8 = 64 FMAs from 8 + 8 register loads. (A 64x64 warp tile — 128 accumulators per thread, as in
// siboehm's kernel — measured 255 registers and 56-144 bytes of spills with ptxas 13.0 here, the
// bounds-checked 64-bit index math being the difference; this shape has none.)
//
// Double buffering: while the block computes tile t from one shared buffer, the global loads of
// tile t+1 are already in flight into registers and land in the other buffer afterwards, so one
// __syncthreads per K step suffices and global latency overlaps the FMAs. Loads move runs of four
// elements (float4 when contiguous and aligned, see simt_quads.cuh); A is stored transposed.
#include "simt_quads.cuh"

namespace accelkernels {
namespace {

constexpr int BM = 128, BN = 128, BK = 16;
constexpr int WM = 64, WN = 32, WNITER = 2, TM = 8, TN = 4;
constexpr int WSUBN = WN / WNITER;  // 16: one strip's width
constexpr int kThreads = (BM / WM) * (BN / WN) * 32;  // 256
constexpr int kRunsA = BM * BK / 4 / kThreads;  // 2 runs of four per thread per tile
constexpr int kRunsB = BK * BN / 4 / kThreads;  // 2
static_assert(WM == (32 / (WSUBN / TN)) * TM, "a strip's rows are covered once by the warp's lanes");

template <bool kVecA, bool kVecB>
__device__ __forceinline__ void load_tile(const BmmArgs<float>& p, const float* a, const float* b, int64_t m0,
                                          int64_t n0, int64_t k0, int tid, float4 (&ra)[kRunsA],
                                          float4 (&rb)[kRunsB]) {
#pragma unroll
  for (int i = 0; i < kRunsA; ++i) {
    const int run = tid + i * kThreads;  // A: 128 rows x 4 runs along K
    ra[i] = load_quad<kVecA>(a, m0 + run / (BK / 4), k0 + (run % (BK / 4)) * 4, p.m, p.k, p.a_stride_m,
                             p.a_stride_k);
  }
#pragma unroll
  for (int i = 0; i < kRunsB; ++i) {
    const int run = tid + i * kThreads;  // B: 16 rows x 32 runs along N
    rb[i] = load_quad<kVecB>(b, k0 + run / (BN / 4), n0 + (run % (BN / 4)) * 4, p.k, p.n, p.b_stride_k,
                             p.b_stride_n);
  }
}

__device__ __forceinline__ void store_tile(float (*As)[BM], float (*Bs)[BN], int tid, const float4 (&ra)[kRunsA],
                                           const float4 (&rb)[kRunsB]) {
#pragma unroll
  for (int i = 0; i < kRunsA; ++i) {
    const int run = tid + i * kThreads;
    const int row = run / (BK / 4), col = (run % (BK / 4)) * 4;
    As[col + 0][row] = ra[i].x;  // transposed: As[k][m]
    As[col + 1][row] = ra[i].y;
    As[col + 2][row] = ra[i].z;
    As[col + 3][row] = ra[i].w;
  }
#pragma unroll
  for (int i = 0; i < kRunsB; ++i) {
    const int run = tid + i * kThreads;
    *reinterpret_cast<float4*>(&Bs[run / (BN / 4)][(run % (BN / 4)) * 4]) = rb[i];
  }
}

template <bool kVecA, bool kVecB>
__global__ void __launch_bounds__(kThreads) bmm_warptile_f32_kernel(BmmArgs<float> p, int64_t batch_offset) {
  __shared__ __align__(16) float As[2][BK][BM];
  __shared__ __align__(16) float Bs[2][BK][BN];

  const int tid = threadIdx.x;
  const int warp = tid / 32, lane = tid % 32;
  const int warp_row = warp / (BN / WN), warp_col = warp % (BN / WN);
  const int lane_row = lane / (WSUBN / TN), lane_col = lane % (WSUBN / TN);  // 8 x 4 lanes per strip
  const int64_t batch = batch_offset + blockIdx.z;
  const int64_t m0 = static_cast<int64_t>(blockIdx.x) * BM;
  const int64_t n0 = static_cast<int64_t>(blockIdx.y) * BN;
  const float* a = p.a + batch * p.a_stride_batch;
  const float* b = p.b + batch * p.b_stride_batch;

  float acc[TM][WNITER * TN] = {};
  float4 ra[kRunsA], rb[kRunsB];
  load_tile<kVecA, kVecB>(p, a, b, m0, n0, 0, tid, ra, rb);
  store_tile(As[0], Bs[0], tid, ra, rb);
  __syncthreads();

  const int64_t tiles = (p.k + BK - 1) / BK;
  for (int64_t t = 0; t < tiles; ++t) {
    const int cur = static_cast<int>(t & 1);
    if (t + 1 < tiles) load_tile<kVecA, kVecB>(p, a, b, m0, n0, (t + 1) * BK, tid, ra, rb);  // in flight
#pragma unroll
    for (int kk = 0; kk < BK; ++kk) {
      float reg_m[TM], reg_n[WNITER * TN];
#pragma unroll
      for (int i = 0; i < TM; ++i) reg_m[i] = As[cur][kk][warp_row * WM + lane_row * TM + i];
#pragma unroll
      for (int s = 0; s < WNITER; ++s)
#pragma unroll
        for (int j = 0; j < TN; ++j) reg_n[s * TN + j] = Bs[cur][kk][warp_col * WN + s * WSUBN + lane_col * TN + j];
#pragma unroll
      for (int i = 0; i < TM; ++i)
#pragma unroll
        for (int j = 0; j < WNITER * TN; ++j) acc[i][j] = fmaf(reg_m[i], reg_n[j], acc[i][j]);
    }
    if (t + 1 < tiles) store_tile(As[cur ^ 1], Bs[cur ^ 1], tid, ra, rb);
    __syncthreads();
  }

#pragma unroll
  for (int i = 0; i < TM; ++i)
#pragma unroll
    for (int s = 0; s < WNITER; ++s)
#pragma unroll
      for (int j = 0; j < TN; ++j)
        store_output(p, batch, m0 + warp_row * WM + lane_row * TM + i,
                     n0 + warp_col * WN + s * WSUBN + lane_col * TN + j, acc[i][s * TN + j]);
}

}  // namespace

void launch_bmm_warptile_f32(const BmmArgs<float>& args, cudaStream_t stream) {
  launch_with_quads(args, bmm_warptile_f32_kernel<true, true>, bmm_warptile_f32_kernel<true, false>,
                    bmm_warptile_f32_kernel<false, true>, bmm_warptile_f32_kernel<false, false>, BM, BN,
                    dim3(kThreads), stream);
}

}  // namespace accelkernels
