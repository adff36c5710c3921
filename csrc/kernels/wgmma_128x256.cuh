// The 128x256 consumer side shared by the Hopper kernels wgmma_v2 and wgmma_cluster: the m64n256k16
// wgmma (each of two consumer warpgroups owns 64 x 256 of the tile, 128 fp32 accumulators per thread),
// its waits, and the epilogue through shared memory and TMA stores. One job: a consumer's tile, from the
// accumulators to C. The kernels own the pipelines that feed it.
#pragma once

#include <cstdint>
#include <cstring>
#include <type_traits>

#include "bmm_args.h"
#include "epilogue.cuh"
#include "hopper_tma.cuh"

namespace accelkernels {
namespace tile_128x256 {

constexpr int BM = 128, BN = 256, BK = 64;
constexpr int kConsumers = 2;                     // warpgroups, 64 rows each
constexpr int kChunkCols = 64;                    // epilogue chunk: 64 rows x 64 columns = one 128-byte swizzle row each
constexpr int kChunkBytes = 64 * kChunkCols * 2;  // 8 KB
constexpr int kEpilogueBytes = kConsumers * 2 * kChunkBytes;  // two staging buffers per consumer
static_assert(BK * 2 == 128 && kChunkCols * 2 == 128, "one 128-byte swizzle row per tile row");

// The block the kernels built on this tile share: one producer and two consumer warpgroups, a ring of
// 4 stages of A (128 x 64) and B (256 x 64), the epilogue's staging, the mbarriers.
constexpr int kStages = 4;
constexpr int kThreads = (1 + kConsumers) * 128;
constexpr int kATileBytes = BM * BK * 2, kBTileBytes = BN * BK * 2;  // 16 KB + 32 KB
constexpr int kStageBytes = kATileBytes + kBTileBytes;
constexpr int kSmemBytes = kStages * kStageBytes + kEpilogueBytes + 1024 + 2 * kStages * 8;  // + alignment, mbarriers
constexpr int kProducerRegs = 40, kConsumerRegs = 232;  // setmaxnreg (CUTLASS's load / MMA register requirements)
constexpr int kGroupM = 8;  // tile-rows per group of the persistent walk
static_assert(kSmemBytes <= 232448, "over the 227 KB of shared memory a block may have");
// The registers __launch_bounds__(kThreads, 1) leaves each thread (65536 per SM, in steps of 8) must
// cover what the warpgroups ask for after setmaxnreg, else the consumers' .inc waits forever.
static_assert((kProducerRegs + kConsumers * kConsumerRegs) * 128 <= (65536 / kThreads) / 8 * 8 * kThreads,
              "the register split does not add up");

// What the epilogue applies: a bias per output column (nullptr: none) over `columns` columns, then the
// activation. The GEMMs' columns are N; a convolution's are its output channels.
template <typename T>
struct Epilogue {
  const T* bias;
  int64_t columns;
  Activation activation;
};

#ifdef AK_WGMMA_ENABLED
using namespace hopper;

#define AK_D8(i) "+f"(d[i]), "+f"(d[i + 1]), "+f"(d[i + 2]), "+f"(d[i + 3]), "+f"(d[i + 4]), "+f"(d[i + 5]), \
                 "+f"(d[i + 6]), "+f"(d[i + 7])

// D (64 x 256, fp32, 128 registers per thread) += A (64 x 16) * B (16 x 256), both from shared memory:
// K-major (imm-trans-a/b = 0), or with kMNMajor both MN-major (imm-trans = 1: A stored M-contiguous, B
// N-contiguous; matrix_descriptor_mn).
template <typename T, bool kMNMajor = false>
__device__ __forceinline__ void wgmma_m64n256k16(float (&d)[128], uint64_t desc_a, uint64_t desc_b) {
#define AK_WGMMA_ASM(TYPE, TRANS)                                                                            \
  asm volatile("{\n"                                                                                         \
               "wgmma.mma_async.sync.aligned.m64n256k16.f32." TYPE "." TYPE " "                              \
               "{"                                                                                           \
               "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, " \
               "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, " \
               "%32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, " \
               "%48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63, " \
               "%64, %65, %66, %67, %68, %69, %70, %71, %72, %73, %74, %75, %76, %77, %78, %79, " \
               "%80, %81, %82, %83, %84, %85, %86, %87, %88, %89, %90, %91, %92, %93, %94, %95, " \
               "%96, %97, %98, %99, %100, %101, %102, %103, %104, %105, %106, %107, %108, %109, %110, %111, " \
               "%112, %113, %114, %115, %116, %117, %118, %119, %120, %121, %122, %123, %124, %125, %126, %127" \
               "}, "                                                                                         \
               "%128, %129, 1, 1, 1, " TRANS ";\n"                                                           \
               "}\n"                                                                                         \
               : AK_D8(0), AK_D8(8), AK_D8(16), AK_D8(24), AK_D8(32), AK_D8(40), AK_D8(48), AK_D8(56),          \
                 AK_D8(64), AK_D8(72), AK_D8(80), AK_D8(88), AK_D8(96), AK_D8(104), AK_D8(112), AK_D8(120)   \
               : "l"(desc_a), "l"(desc_b))
  constexpr bool kHalf = std::is_same_v<T, __half>;
  if constexpr (kHalf && !kMNMajor) {
    AK_WGMMA_ASM("f16", "0, 0");
  } else if constexpr (!kMNMajor) {
    AK_WGMMA_ASM("bf16", "0, 0");
  } else if constexpr (kHalf) {
    AK_WGMMA_ASM("f16", "1, 1");
  } else {
    AK_WGMMA_ASM("bf16", "1, 1");
  }
#undef AK_WGMMA_ASM
}
#undef AK_D8

// Until at most N of this warpgroup's wgmma groups are pending.
template <int N>
__device__ __forceinline__ void wgmma_wait() {
  asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(N) : "memory");
}

// One consumer warpgroup's K loop over a tile, into `d` (zeroed first): for each K step, wait for its
// stage's "full" barrier, run four m64n256k16 on it (this warpgroup's 64 rows of A against the whole B
// tile), commit, and wait until at most one group is pending: the previous step's group has retired, so
// its stage goes back to the producer(s) by `release(stage)` (one thread of the warpgroup calls it) while
// this step's group keeps the tensor cores busy. `step` counts K steps over every tile (stage = step % S).
// Stage layout: A (BM x BK) at the stage's start, B (BN x BK) at +a_bytes, both 128B-swizzled K-major
// (128-byte rows of 64 K elements). With kMNMajor both are MN-major: rows of 64 M (or N) elements, one
// per K index, in boxes of BK rows (8 KB): A's two boxes are the consumers' 64 rows each, B's four boxes
// its 256 columns; a K step of 16 is 16 rows (2 KB) down the boxes.
template <typename T, int kStages, int kStageBytes, int kATileBytes, bool kMNMajor = false, typename Release>
__device__ __forceinline__ void mainloop(float (&d)[128], const unsigned char* smem, uint64_t* full, int64_t& step,
                                         int64_t k_tiles, int consumer, int thread_in_group, Release release) {
#pragma unroll
  for (int i = 0; i < 128; ++i) d[i] = 0.0f;
  fence_operands(d);
  for (int64_t kt = 0; kt < k_tiles; ++kt, ++step) {
    const int s = static_cast<int>(step % kStages);
    mbar_wait(&full[s], static_cast<unsigned>((step / kStages) & 1));
    const unsigned char* a_tile = smem + s * kStageBytes + consumer * 64 * BK * 2;  // this group's 64 rows
    const unsigned char* b_tile = smem + s * kStageBytes + kATileBytes;
    asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory");
#pragma unroll
    for (int k = 0; k < BK / 16; ++k) {
      if constexpr (kMNMajor) {  // 16 rows = 2 KB down the boxes; B's next 64 columns one box (BK rows) on
        constexpr uint32_t kBox = 64 * BK * 2;
        wgmma_m64n256k16<T, true>(d, matrix_descriptor_mn(a_tile + k * 16 * 128, kBox),
                                  matrix_descriptor_mn(b_tile + k * 16 * 128, kBox));
      } else {  // 16 elements = 32 bytes along the swizzled row
        wgmma_m64n256k16<T>(d, matrix_descriptor(a_tile + k * 32), matrix_descriptor(b_tile + k * 32));
      }
    }
    asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
    wgmma_wait<1>();  // step kt-1's group has retired (step kt's stays in flight): its stage may be refilled
    if (kt > 0 && thread_in_group == 0) release(static_cast<int>((step - 1) % kStages));
  }
  wgmma_wait<0>();
  fence_operands(d);  // the epilogue reads d only after the wait
  if (k_tiles > 0 && thread_in_group == 0) release(static_cast<int>((step - 1) % kStages));
}

// act(acc + bias[col]) in fp32, as the other kernels' epilogue; columns past the last are clipped by the store.
template <typename T>
__device__ __forceinline__ float epilogue_value(const Epilogue<T>& e, int64_t col, float acc) {
  if (e.bias != nullptr && col < e.columns) acc += to_float(e.bias[col]);
  return apply_activation(acc, e.activation);
}

// Two outputs rounded to T and packed as one 32-bit stmatrix register (the lower column in the low half).
template <typename T>
__device__ __forceinline__ uint32_t pack2(float lo, float hi) {
  const T l = from_float<T>(lo), h = from_float<T>(hi);
  uint16_t bl, bh;
  memcpy(&bl, &l, 2);
  memcpy(&bh, &h, 2);
  return uint32_t{bl} | (uint32_t{bh} << 16);
}

// One consumer's 64 x 256 tile out: four 64 x 64 chunks, each packed by stmatrix into a 128B-swizzled
// staging buffer (16-byte chunk cb of row r at cb ^ (r % 8), the image a SWIZZLE_128B map reads) and
// stored by one TMA store. Two buffers per consumer alternate, so packing a chunk overlaps the store
// of the previous one.
template <typename T>
__device__ __forceinline__ void store_tile(const Epilogue<T>& p, const CUtensorMap* map_c, unsigned char* staging,
                                           const float (&d)[128], int consumer, int thread_in_group, int64_t b,
                                           int64_t tm, int64_t tn) {
  const int warp = thread_in_group / 32, lane = thread_in_group % 32;
  const int named = 1 + consumer;  // the warpgroup's own barrier (0 is __syncthreads)
#pragma unroll
  for (int c = 0; c < BN / kChunkCols; ++c) {
    unsigned char* buf = staging + (consumer * 2 + (c & 1)) * kChunkBytes;
    if (thread_in_group == 0) bulk_wait_read<1>();  // the store that read this buffer two chunks ago is done with it
    named_barrier_sync(named, 128);
#pragma unroll
    for (int jj = 0; jj < kChunkCols / 8; jj += 2) {
      uint32_t r[4];
#pragma unroll
      for (int q = 0; q < 4; ++q) {  // matrices: rows 0-7 / 8-15 of column blocks jj and jj + 1
        const int block = c * (kChunkCols / 8) + jj + (q >> 1);
        const int reg = 4 * block + 2 * (q & 1);
        const int64_t col = tn * BN + 8 * block + 2 * (lane % 4);
        r[q] = pack2<T>(epilogue_value(p, col, d[reg]), epilogue_value(p, col + 1, d[reg + 1]));
      }
      const int mi = lane / 8, row = warp * 16 + (mi & 1) * 8 + lane % 8, cb = jj + (mi >> 1);
      stmatrix_x4(smem_addr(buf + row * 128 + ((cb ^ (row % 8)) * 16)), r[0], r[1], r[2], r[3]);
    }
    fence_proxy_async();  // this thread's stmatrix writes, before the async proxy reads them
    named_barrier_sync(named, 128);
    if (thread_in_group == 0) {
      tma_store(map_c, buf, static_cast<int>(tn * BN + c * kChunkCols), static_cast<int>(tm * BM + consumer * 64),
                static_cast<int>(b));
      bulk_commit();
    }
  }
}
#endif  // AK_WGMMA_ENABLED

}  // namespace tile_128x256
}  // namespace accelkernels
