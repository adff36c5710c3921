// The tensor-core tile machinery shared by every mma.sync kernel (the GEMM in bmm_mma_sync.cu and the
// implicit-GEMM convolutions in conv2d_implicit_gemm.cu): the block tile, the swizzled shared layout,
// the cp.async ring and the warp-level mma.sync step. What differs between those kernels is only how a
// stage of operand tiles is fetched from global memory (a strided matrix, an im2col gather) and where
// the accumulators are stored; both are the caller's.
//
// Block tile 128x128x64, 8 warps in 2 (M) x 4 (N), each warp 64x32 = 4 x 4 mma tiles of 16x8,
// fp16/bf16 operands, fp32 accumulators. Operand tiles live in shared memory in their own orientation
// — rows along the dimension that is contiguous in global memory, 16-byte chunks — and ldmatrix reads
// fragments from a K-contiguous tile, ldmatrix.trans from an M- or N-contiguous one. Every shared row
// is 128 or 256 bytes and chunk c of row r lives at chunk c ^ (r % 8): the eight rows one ldmatrix
// phase reads fall in eight different 16-byte bank groups (no conflicts), in both orientations.
#pragma once

#include <type_traits>

#include "bmm_args.h"

namespace accelkernels {
namespace mma_tile {

constexpr int BM = 128, BN = 128, BK = 64, kStages = 3, kThreads = 256;
constexpr int WM = 64, WN = 32;                    // warp tile
constexpr int MT = WM / 16, NT = WN / 8;           // mma tiles per warp: 4 x 4
constexpr int kTileBytes = BM * BK * 2;            // 16 KB per operand tile (BM == BN)
constexpr int kStageBytes = 2 * kTileBytes;        // A tile then B tile
constexpr int kSmemBytes = kStages * kStageBytes;  // 96 KB: needs the opt-in dynamic shared memory
constexpr int kChunksPerThread = (BM * BK / 8) / kThreads;  // 16-byte chunks per operand tile: 4
static_assert(BM == BN, "A and B tiles share one size");

using Accumulators = float[MT][NT][4];

// Byte offset of 16-byte chunk `chunk` of tile row `row`, rows of `row_bytes` (a multiple of 128).
__device__ __forceinline__ unsigned swizzled(int row, int chunk, int row_bytes) {
  return static_cast<unsigned>(row * row_bytes + ((chunk ^ (row & 7)) << 4));
}

// 16 bytes global -> shared, asynchronously; an invalid chunk is zero-filled (src-size 0), which is
// how ragged edges and a convolution's padding cost no branch.
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

// One operand tile of a strided matrix (BM x BK of A or BK x BN of B) into shared memory: 1024
// chunks, 4 per thread. kOuterIsK: the tile's rows run along K (the operand is contiguous along M /
// N), else along M / N. inner_size must be a multiple of 8 (a chunk is all in or all out).
template <typename T, bool kOuterIsK>
__device__ __forceinline__ void load_operand_tile(unsigned smem, const T* base, int64_t outer0, int64_t inner0,
                                                  int64_t outer_size, int64_t inner_size, int64_t outer_stride,
                                                  int tid) {
  constexpr int kRowElems = kOuterIsK ? BM : BK;  // 128 along M/N, or 64 along K
  constexpr int kChunksPerRow = kRowElems / 8;
#pragma unroll
  for (int i = 0; i < kChunksPerThread; ++i) {
    const int chunk_id = tid + i * kThreads;
    const int row = chunk_id / kChunksPerRow, chunk = chunk_id % kChunksPerRow;
    const int64_t outer = outer0 + row, inner = inner0 + chunk * 8;
    const bool valid = outer < outer_size && inner < inner_size;
    cp_async_16(smem + swizzled(row, chunk, kRowElems * 2), valid ? base + outer * outer_stride + inner : base,
                valid);
  }
}

// The warp's origin (row, column) inside the block tile.
__device__ __forceinline__ int warp_row0(int warp) { return (warp / (BN / WN)) * WM; }
__device__ __forceinline__ int warp_col0(int warp) { return (warp % (BN / WN)) * WN; }

// Accumulator e (0-3) of mma tile (mt, nt) sits at this row / column of the warp tile:
// (c0, c1) is row lane/4, columns 2*(lane%4) + {0, 1}; (c2, c3) row + 8.
__device__ __forceinline__ int acc_row(int lane, int mt, int e) { return mt * 16 + (lane >> 2) + (e >> 1) * 8; }
__device__ __forceinline__ int acc_col(int lane, int nt, int e) { return nt * 8 + (lane & 3) * 2 + (e & 1); }

// One BK slice of the block tile, by this warp: ldmatrix fragments from the stage's A and B tiles
// (their orientation: kAKContig / kBKContig), 4 x 4 x 4 mma.sync.
template <typename T, bool kAKContig, bool kBKContig>
__device__ __forceinline__ void warp_mma_stage(unsigned sa, unsigned sb, int wm0, int wn0, int lane,
                                               Accumulators& acc) {
  const int j = lane >> 3, r = lane & 7;  // ldmatrix: lane gives row r of 8x8 matrix j
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

// The pipelined main loop over k_tiles slices of BK: a kStages-deep cp.async ring, one
// __syncthreads per slice. load_stage(sa, sb, kt) issues the cp.async copies of slice kt into the
// stage's A tile (sa) and B tile (sb); the caller's loader decides what a slice is (a matrix tile,
// an im2col gather), so GEMM and convolutions run the same loop.
template <typename T, bool kAKContig, bool kBKContig, typename LoadStage>
__device__ __forceinline__ void mainloop(unsigned smem, int64_t k_tiles, int wm0, int wn0, int lane,
                                         LoadStage&& load_stage, Accumulators& acc) {
#pragma unroll
  for (int s = 0; s < kStages - 1; ++s) {
    if (s < k_tiles) load_stage(smem + s * kStageBytes, smem + s * kStageBytes + kTileBytes, int64_t{s});
    cp_async_commit();  // empty groups keep the wait counts uniform
  }
  for (int64_t kt = 0; kt < k_tiles; ++kt) {
    cp_async_wait<kStages - 2>();
    __syncthreads();  // slice kt visible to all; everyone is done with the stage refilled below
    const int64_t next = kt + kStages - 1;
    if (next < k_tiles) {
      const unsigned stage = smem + static_cast<int>(next % kStages) * kStageBytes;
      load_stage(stage, stage + kTileBytes, next);
    }
    cp_async_commit();
    const unsigned sa = smem + static_cast<int>(kt % kStages) * kStageBytes;
    warp_mma_stage<T, kAKContig, kBKContig>(sa, sa + kTileBytes, wm0, wn0, lane, acc);
  }
  cp_async_wait<0>();
}

// Above 48 KB of dynamic shared memory a kernel must opt in. Called before every launch: the
// attribute belongs to the current device's context, and a repeat costs about a microsecond.
template <typename Kernel>
void allow_full_smem(Kernel kernel) {
  cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, kSmemBytes);
}

}  // namespace mma_tile
}  // namespace accelkernels
