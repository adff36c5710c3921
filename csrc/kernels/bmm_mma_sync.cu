// Tensor-core GEMM for sm_80+: fp16/bf16 in, fp32 accumulation, mma.sync.m16n8k16 fed by ldmatrix
// from a 3-stage cp.async ring in a swizzled shared layout, with the fused epilogue.
//
// The tile machinery (block and warp tiles, swizzled shared layout, cp.async ring, ldmatrix +
// mma.sync step) is mma_sync_tile.cuh, shared with the implicit-GEMM convolutions; this file is the
// GEMM's loader (a strided matrix per operand, in either orientation) and epilogue.
//
// Operands are copied to shared memory in their own orientation, so transposed operands (a linear
// weight read as Wᵀ, the backward's dYᵀ) need no copy.
//
// Ragged M, N and K: chunks outside the matrix are zero-filled by cp.async (src-size 0), outputs are
// bounds-checked. Requirements (mma_sync_unsupported_reason): each operand's contiguous dimension
// and its other strides are multiples of 8 elements and the bases are 16-byte aligned.
#include "bmm_args.h"
#include "epilogue.cuh"
#include "launch_grid.cuh"
#include "mma_sync_tile.cuh"

namespace accelkernels {
namespace {

using namespace mma_tile;

template <typename T, bool kAKContig, bool kBKContig>
__global__ void __launch_bounds__(kThreads) bmm_mma_sync_kernel(BmmArgs<T> p, int64_t batch_offset) {
  extern __shared__ __align__(128) unsigned char smem_raw[];
  const unsigned smem = static_cast<unsigned>(__cvta_generic_to_shared(smem_raw));

  const int tid = threadIdx.x, lane = tid % 32, warp = tid / 32;
  const int wm0 = warp_row0(warp), wn0 = warp_col0(warp);
  const int64_t batch = batch_offset + blockIdx.z;
  const int64_t m0 = static_cast<int64_t>(blockIdx.x) * BM;
  const int64_t n0 = static_cast<int64_t>(blockIdx.y) * BN;
  const T* a = p.a + batch * p.a_stride_batch;
  const T* b = p.b + batch * p.b_stride_batch;

  auto load_stage = [&](unsigned sa, unsigned sb, int64_t kt) {
    const int64_t k0 = kt * BK;
    if (kAKContig) load_operand_tile<T, false>(sa, a, m0, k0, p.m, p.k, p.a_stride_m, tid);
    else load_operand_tile<T, true>(sa, a, k0, m0, p.k, p.m, p.a_stride_k, tid);
    if (kBKContig) load_operand_tile<T, false>(sb, b, n0, k0, p.n, p.k, p.b_stride_n, tid);
    else load_operand_tile<T, true>(sb, b, k0, n0, p.k, p.n, p.b_stride_k, tid);
  };
  float acc[MT][NT][4] = {};
  mainloop<T, kAKContig, kBKContig>(smem, (p.k + BK - 1) / BK, wm0, wn0, lane, load_stage, acc);

#pragma unroll
  for (int mt = 0; mt < MT; ++mt)
#pragma unroll
    for (int nt = 0; nt < NT; ++nt)
#pragma unroll
      for (int e = 0; e < 4; ++e)
        store_output(p, batch, m0 + wm0 + acc_row(lane, mt, e), n0 + wn0 + acc_col(lane, nt, e), acc[mt][nt][e]);
}

template <typename T, bool kAKContig, bool kBKContig>
void launch_variant(const BmmArgs<T>& args, cudaStream_t stream) {
  auto kernel = bmm_mma_sync_kernel<T, kAKContig, kBKContig>;
  allow_full_smem(kernel);
  launch_tiled(kernel, args, BM, BN, dim3(kThreads), kSmemBytes, stream);
}

template <typename T>
void launch_mma_sync(const BmmArgs<T>& args, cudaStream_t stream) {
  // Orientation: K-contiguous when A's K stride (B's K stride) is 1, else M- (N-) contiguous; the
  // host has checked with mma_sync_unsupported_reason that one of them holds.
  const bool a_k = args.a_stride_k == 1 && args.k % 8 == 0 && args.a_stride_m % 8 == 0;
  const bool b_k = args.b_stride_k == 1 && args.k % 8 == 0 && args.b_stride_n % 8 == 0;
  if (a_k && b_k) launch_variant<T, true, true>(args, stream);
  else if (a_k) launch_variant<T, true, false>(args, stream);
  else if (b_k) launch_variant<T, false, true>(args, stream);
  else launch_variant<T, false, false>(args, stream);
}

}  // namespace

void launch_bmm_mma_sync_f16(const BmmArgs<__half>& args, cudaStream_t stream) { launch_mma_sync(args, stream); }
void launch_bmm_mma_sync_bf16(const BmmArgs<__nv_bfloat16>& args, cudaStream_t stream) {
  launch_mma_sync(args, stream);
}

}  // namespace accelkernels
