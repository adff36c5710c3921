// Tensor-core GEMM for sm_80+: fp16/bf16 in, fp32 accumulation, mma.sync.m16n8k16 fed by ldmatrix
// from a 3-stage cp.async ring in a swizzled shared layout, with the fused epilogue.
//
// Block tile 128x128x64, 8 warps in 2 (M) x 4 (N), each warp 64x32 = 4 x 4 mma tiles of 16x8.
//
// Operands are copied to shared memory in their own orientation — rows along the dimension that is
// contiguous in global memory, 16-byte cp.async chunks — so transposed operands (a linear weight
// read as Wᵀ, the backward's dYᵀ) need no copy: ldmatrix loads fragments from a K-contiguous tile
// and ldmatrix.trans from an M- or N-contiguous one. Every shared row is 128 or 256 bytes, and chunk
// c of row r lives at chunk c ^ (r % 8): the eight rows one ldmatrix phase reads then fall in eight
// different 16-byte bank groups (no conflicts), for both orientations.
//
// Ragged M, N and K: chunks outside the matrix are zero-filled by cp.async (src-size 0), outputs are
// bounds-checked. Requirements (mma_sync_unsupported_reason): each operand's contiguous dimension
// and its other strides are multiples of 8 elements and the bases are 16-byte aligned.
#include <type_traits>

#include "bmm_args.h"
#include "epilogue.cuh"
#include "launch_grid.cuh"

namespace accelkernels {
namespace {

constexpr int BM = 128, BN = 128, BK = 64, kStages = 3, kThreads = 256;
constexpr int WM = 64, WN = 32;                  // warp tile
constexpr int MT = WM / 16, NT = WN / 8;         // mma tiles per warp: 4 x 4
constexpr int kTileBytes = BM * BK * 2;          // 16 KB per operand tile (BM == BN)
constexpr int kStageBytes = 2 * kTileBytes;      // A tile then B tile
constexpr int kSmemBytes = kStages * kStageBytes;  // 96 KB: needs the opt-in dynamic shared memory
static_assert(BM == BN, "A and B tiles share one size");

// Byte offset of 16-byte chunk `chunk` of tile row `row`, rows of `row_bytes` (a multiple of 128).
__device__ __forceinline__ unsigned swizzled(int row, int chunk, int row_bytes) {
  return static_cast<unsigned>(row * row_bytes + ((chunk ^ (row & 7)) << 4));
}

__device__ __forceinline__ void cp_async_16(unsigned dst, const void* src, bool valid) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src), "r"(valid ? 16 : 0));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N> __device__ __forceinline__ void cp_async_wait() { asm volatile("cp.async.wait_group %0;\n" ::"n"(N)); }

template <bool kTrans>
__device__ __forceinline__ void ldmatrix_x4(unsigned addr, unsigned (&r)[4]) {
  if (kTrans) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(addr));
  } else {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(addr));
  }
}

template <typename T>
__device__ __forceinline__ void mma_16816(float (&c)[4], const unsigned (&a)[4], unsigned b0, unsigned b1) {
  if constexpr (std::is_same_v<T, __half>) {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
                 "{%8, %9}, {%0, %1, %2, %3};\n"
                 : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  } else {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
                 "{%8, %9}, {%0, %1, %2, %3};\n"
                 : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  }
}

// One operand tile (BM x BK of A or BK x BN of B) into shared memory: 1024 chunks, 4 per thread.
// kOuterIsK: the tile's rows run along K (the operand is contiguous along M / N), else along M / N.
template <typename T, bool kOuterIsK>
__device__ __forceinline__ void load_operand_tile(unsigned smem, const T* base, int64_t outer0, int64_t inner0,
                                                  int64_t outer_size, int64_t inner_size, int64_t outer_stride,
                                                  int tid) {
  constexpr int kRowElems = kOuterIsK ? BM : BK;  // 128 along M/N, or 64 along K
  constexpr int kChunksPerRow = kRowElems / 8;
#pragma unroll
  for (int i = 0; i < (BM * BK / 8) / kThreads; ++i) {
    const int chunk_id = tid + i * kThreads;
    const int row = chunk_id / kChunksPerRow, chunk = chunk_id % kChunksPerRow;
    const int64_t outer = outer0 + row, inner = inner0 + chunk * 8;
    const bool valid = outer < outer_size && inner < inner_size;  // inner_size % 8 == 0: all or nothing
    cp_async_16(smem + swizzled(row, chunk, kRowElems * 2), valid ? base + outer * outer_stride + inner : base,
                valid);
  }
}

template <typename T, bool kAKContig, bool kBKContig>
__global__ void __launch_bounds__(kThreads) bmm_mma_sync_kernel(BmmArgs<T> p, int64_t batch_offset) {
  extern __shared__ __align__(128) unsigned char smem_raw[];
  const unsigned smem = static_cast<unsigned>(__cvta_generic_to_shared(smem_raw));

  const int tid = threadIdx.x, lane = tid % 32, warp = tid / 32;
  const int wm0 = (warp / (BN / WN)) * WM, wn0 = (warp % (BN / WN)) * WN;
  const int64_t batch = batch_offset + blockIdx.z;
  const int64_t m0 = static_cast<int64_t>(blockIdx.x) * BM;
  const int64_t n0 = static_cast<int64_t>(blockIdx.y) * BN;
  const T* a = p.a + batch * p.a_stride_batch;
  const T* b = p.b + batch * p.b_stride_batch;

  auto load_stage = [&](int stage, int64_t k0) {
    const unsigned sa = smem + stage * kStageBytes, sb = sa + kTileBytes;
    if (kAKContig) load_operand_tile<T, false>(sa, a, m0, k0, p.m, p.k, p.a_stride_m, tid);
    else load_operand_tile<T, true>(sa, a, k0, m0, p.k, p.m, p.a_stride_k, tid);
    if (kBKContig) load_operand_tile<T, false>(sb, b, n0, k0, p.n, p.k, p.b_stride_n, tid);
    else load_operand_tile<T, true>(sb, b, k0, n0, p.k, p.n, p.b_stride_k, tid);
  };

  float acc[MT][NT][4] = {};
  const int64_t k_tiles = (p.k + BK - 1) / BK;
#pragma unroll
  for (int s = 0; s < kStages - 1; ++s) {
    if (s < k_tiles) load_stage(s, s * BK);
    cp_async_commit();  // empty groups keep the wait counts uniform
  }

  const int j = lane >> 3, r = lane & 7;  // ldmatrix: lane gives row r of 8x8 matrix j
  for (int64_t kt = 0; kt < k_tiles; ++kt) {
    cp_async_wait<kStages - 2>();
    __syncthreads();  // tile kt visible to all; everyone is done with the stage refilled below
    const int64_t next = kt + kStages - 1;
    if (next < k_tiles) load_stage(static_cast<int>(next % kStages), next * BK);
    cp_async_commit();

    const unsigned sa = smem + static_cast<int>(kt % kStages) * kStageBytes, sb = sa + kTileBytes;
#pragma unroll
    for (int ks = 0; ks < BK / 16; ++ks) {
      unsigned af[MT][4], bf[NT / 2][4];
#pragma unroll
      for (int mt = 0; mt < MT; ++mt) {  // matrices: (m 0-7 | 8-15) x (k 0-7 | 8-15), m fastest
        const int m = wm0 + mt * 16 + (j & 1) * 8, k = ks * 16 + (j >> 1) * 8;
        if (kAKContig) ldmatrix_x4<false>(sa + swizzled(m + r, k / 8, BK * 2), af[mt]);
        else ldmatrix_x4<true>(sa + swizzled(k + r, m / 8, BM * 2), af[mt]);
      }
#pragma unroll
      for (int np = 0; np < NT / 2; ++np) {  // matrices: (n 0-7 | 8-15) x (k 0-7 | 8-15), k fastest
        const int n = wn0 + np * 16 + (j >> 1) * 8, k = ks * 16 + (j & 1) * 8;
        if (kBKContig) ldmatrix_x4<false>(sb + swizzled(n + r, k / 8, BK * 2), bf[np]);
        else ldmatrix_x4<true>(sb + swizzled(k + r, n / 8, BN * 2), bf[np]);
      }
#pragma unroll
      for (int mt = 0; mt < MT; ++mt)
#pragma unroll
        for (int nt = 0; nt < NT; ++nt)  // bf[np] = {b0, b1} of n-tile 2np, then of 2np + 1
          mma_16816<T>(acc[mt][nt], af[mt], bf[nt / 2][(nt % 2) * 2], bf[nt / 2][(nt % 2) * 2 + 1]);
    }
  }
  cp_async_wait<0>();

  // Epilogue: accumulator (c0, c1) is row lane/4, columns 2*(lane%4) + {0, 1}; (c2, c3) row + 8.
#pragma unroll
  for (int mt = 0; mt < MT; ++mt)
#pragma unroll
    for (int nt = 0; nt < NT; ++nt)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int64_t row = m0 + wm0 + mt * 16 + (lane >> 2) + (e >> 1) * 8;
        const int64_t col = n0 + wn0 + nt * 8 + (lane & 3) * 2 + (e & 1);
        store_output(p, batch, row, col, acc[mt][nt][e]);
      }
}

template <typename T, bool kAKContig, bool kBKContig>
void launch_variant(const BmmArgs<T>& args, cudaStream_t stream) {
  auto kernel = bmm_mma_sync_kernel<T, kAKContig, kBKContig>;
  // Above 48 KB of dynamic shared memory a kernel must opt in (once per kernel; cheap to repeat).
  cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, kSmemBytes);
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
