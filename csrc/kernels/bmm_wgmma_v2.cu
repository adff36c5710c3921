// Hopper (sm_90a) GEMM, step 2 of the wgmma ladder: the steps the public record took past `wgmma`
// (bmm_wgmma.cu, the previous step; ../shared/PERFORMANCE.md: fast.cu reached 101% of cuBLAS at
// 8192^3 bf16 with them, CUTLASS's sm90 warp-specialized mainloop has the same structure). The code
// is ours. What this step adds over `wgmma`, and why:
//
// 1. 128x256 output tiles: each consumer warpgroup owns 64 x 256 (wgmma m64n256k16, 128 fp32
//    accumulators per thread). Twice the FLOPs per byte staged: a K step moves 16 KB of A and 32 KB of
//    B for 128x256x64 multiply-adds, where `wgmma` moved 32 KB for 128x128x64.
// 2. One wgmma group kept in flight: a consumer commits K step kt, waits until at most one group is
//    pending (wgmma.wait_group 1: step kt-1 has retired) and releases step kt-1's stage. The tensor
//    cores never idle between K steps, which `wait_group 0` forced (CUTLASS
//    sm90_mma_tma_gmma_ss_warpspecialized: K_PIPE_MMAS = 1).
// 3. Register reconfiguration: the producer warpgroup needs a handful of registers, the consumers
//    128 accumulators each. setmaxnreg moves them: producer 40, consumers 232 per thread (CUTLASS's
//    LoadRegisterRequirement / MmaRegisterRequirement for one producer and two consumer warpgroups).
//    40*128 + 2*232*128 = 64512 = 168 * 384, what __launch_bounds__(384, 1) gives each block.
// 4. The epilogue goes through shared memory and TMA stores: bias + activation in registers, each
//    consumer packs 64 x 64 chunks with stmatrix into a 128B-swizzled staging buffer (two per
//    consumer, alternating), fences the writes to the async proxy, syncs its warpgroup on a named
//    barrier and one thread stores the chunk by TMA. Ragged M and N are clipped by the copy engine,
//    not by per-element branches; 16-byte-granular writes replace `wgmma`'s 2-byte scalar stores.
// 5. The persistent walk stays grouped (hopper::tile_coordinates, 8 tile-rows per group): the tiles the
//    SMs run at the same moment share a few A and B panels, which stay in L2.
// Not yet (issue 18): 2-CTA clusters with TMA multicast of the shared operand.
//
// Shared memory: 4 stages x 48 KB + 4 x 8 KB of epilogue staging + the mbarriers = 225 KB of the
// 227 KB a block may have on H100/H200. Requirements (wgmma_v2_unsupported_reason): those of `wgmma`,
// and output rows of a multiple of 16 bytes (N % 8 == 0) for the TMA store; `wgmma` serves the rest.
#include <algorithm>
#include <cstring>
#include <type_traits>

#include "bmm_args.h"
#include "epilogue.cuh"
#include "hopper_tma.cuh"

namespace accelkernels {
namespace {

constexpr int BM = 128, BN = 256, BK = 64, kStages = 4;
constexpr int kConsumers = 2, kThreads = (1 + kConsumers) * 128;
constexpr int kATileBytes = BM * BK * 2, kBTileBytes = BN * BK * 2;  // 16 KB + 32 KB
constexpr int kStageBytes = kATileBytes + kBTileBytes;
constexpr int kChunkCols = 64;                    // epilogue chunk: 64 rows x 64 columns = one 128-byte swizzle row each
constexpr int kChunkBytes = 64 * kChunkCols * 2;  // 8 KB
constexpr int kEpilogueBytes = kConsumers * 2 * kChunkBytes;
constexpr int kSmemBytes = kStages * kStageBytes + kEpilogueBytes + 1024 + 2 * kStages * 8;  // + alignment, mbarriers
constexpr int kProducerRegs = 40, kConsumerRegs = 232;
[[maybe_unused]] constexpr int kGroupM = 8;
constexpr const char* kWho = "accelkernels wgmma_v2";
static_assert(BK * 2 == 128 && kChunkCols * 2 == 128, "one 128-byte swizzle row per tile row");
static_assert(kSmemBytes <= 232448, "over the 227 KB of shared memory a block may have");
// The registers __launch_bounds__(kThreads, 1) leaves each thread (65536 per SM, in steps of 8) must
// cover what the warpgroups ask for after setmaxnreg, else the consumers' .inc waits forever.
static_assert((kProducerRegs + kConsumers * kConsumerRegs) * 128 <= (65536 / kThreads) / 8 * 8 * kThreads,
              "the register split does not add up");

#ifdef AK_WGMMA_ENABLED
using namespace hopper;

#define AK_D8(i) "+f"(d[i]), "+f"(d[i + 1]), "+f"(d[i + 2]), "+f"(d[i + 3]), "+f"(d[i + 4]), "+f"(d[i + 5]), \
                 "+f"(d[i + 6]), "+f"(d[i + 7])

// D (64 x 256, fp32, 128 registers per thread) += A (64 x 16) * B (16 x 256), both from shared memory.
template <typename T>
__device__ __forceinline__ void wgmma_m64n256k16(float (&d)[128], uint64_t desc_a, uint64_t desc_b) {
#define AK_WGMMA_ASM(TYPE)                                                                                   \
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
               "%128, %129, 1, 1, 1, 0, 0;\n"                                                                \
               "}\n"                                                                                         \
               : AK_D8(0), AK_D8(8), AK_D8(16), AK_D8(24), AK_D8(32), AK_D8(40), AK_D8(48), AK_D8(56),          \
                 AK_D8(64), AK_D8(72), AK_D8(80), AK_D8(88), AK_D8(96), AK_D8(104), AK_D8(112), AK_D8(120)   \
               : "l"(desc_a), "l"(desc_b))
  if constexpr (std::is_same_v<T, __half>) {
    AK_WGMMA_ASM("f16");
  } else {
    AK_WGMMA_ASM("bf16");
  }
#undef AK_WGMMA_ASM
}
#undef AK_D8

// Until at most N of this warpgroup's wgmma groups are pending.
template <int N>
__device__ __forceinline__ void wgmma_wait() {
  asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(N) : "memory");
}

// act(acc + bias[col]) in fp32, as the other kernels' epilogue; columns past N are clipped by the store.
template <typename T>
__device__ __forceinline__ float epilogue_value(const BmmArgs<T>& p, int64_t col, float acc) {
  if (p.bias != nullptr && col < p.n) acc += to_float(p.bias[col]);
  return apply_activation(acc, p.activation);
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
__device__ __forceinline__ void store_tile(const BmmArgs<T>& p, const CUtensorMap* map_c, unsigned char* staging,
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

template <typename T>
__global__ void __launch_bounds__(kThreads, 1)
    bmm_wgmma_v2_kernel(const __grid_constant__ CUtensorMap map_a, const __grid_constant__ CUtensorMap map_b,
                        const __grid_constant__ CUtensorMap map_c, BmmArgs<T> p) {
#ifdef AK_WGMMA_ENABLED
  extern __shared__ __align__(1024) unsigned char smem_raw[];
  // 128-byte-swizzled TMA boxes need 1024-byte-aligned destinations.
  unsigned char* smem = reinterpret_cast<unsigned char*>((reinterpret_cast<uintptr_t>(smem_raw) + 1023) & ~uintptr_t{1023});
  unsigned char* staging = smem + kStages * kStageBytes;
  uint64_t* full = reinterpret_cast<uint64_t*>(staging + kEpilogueBytes);
  uint64_t* empty = full + kStages;
  const int warpgroup = threadIdx.x / 128, thread_in_group = threadIdx.x % 128;

  if (threadIdx.x == 0) {
    for (int s = 0; s < kStages; ++s) {
      mbar_init(&full[s], 1);              // the producer's arrive (with the TMA byte count)
      mbar_init(&empty[s], kConsumers);    // one arrive per consumer warpgroup
    }
    fence_barrier_init();
  }
  __syncthreads();

  const int64_t tiles_m = (p.m + BM - 1) / BM, tiles_n = (p.n + BN - 1) / BN;
  const int64_t tiles = p.batch * tiles_m * tiles_n;
  const int64_t k_tiles = (p.k + BK - 1) / BK;

  if (warpgroup == 0) {  // producer
    setmaxnreg_dec<kProducerRegs>();
    if (thread_in_group != 0) return;
    int64_t step = 0;  // K steps issued so far, over all tiles: stage = step % kStages
    for (int64_t tile = blockIdx.x; tile < tiles; tile += gridDim.x) {
      int64_t b, tm, tn;
      tile_coordinates(tile, tiles_m, tiles_n, kGroupM, b, tm, tn);
      for (int64_t kt = 0; kt < k_tiles; ++kt, ++step) {
        const int s = static_cast<int>(step % kStages);
        mbar_wait(&empty[s], static_cast<unsigned>(((step / kStages) & 1) ^ 1));
        mbar_expect_tx(&full[s], kStageBytes);
        unsigned char* stage = smem + s * kStageBytes;
        tma_load(stage, &map_a, static_cast<int>(kt * BK), static_cast<int>(tm * BM), static_cast<int>(b), &full[s]);
        tma_load(stage + kATileBytes, &map_b, static_cast<int>(kt * BK), static_cast<int>(tn * BN),
                 static_cast<int>(b), &full[s]);
      }
    }
    return;
  }

  // consumers
  setmaxnreg_inc<kConsumerRegs>();
  const int consumer = warpgroup - 1;
  int64_t step = 0;
  for (int64_t tile = blockIdx.x; tile < tiles; tile += gridDim.x) {
    int64_t b, tm, tn;
    tile_coordinates(tile, tiles_m, tiles_n, kGroupM, b, tm, tn);
    float d[128];
#pragma unroll
    for (int i = 0; i < 128; ++i) d[i] = 0.0f;
    for (int64_t kt = 0; kt < k_tiles; ++kt, ++step) {
      const int s = static_cast<int>(step % kStages);
      mbar_wait(&full[s], static_cast<unsigned>((step / kStages) & 1));
      const unsigned char* a_tile = smem + s * kStageBytes + consumer * 64 * BK * 2;  // this group's 64 rows
      const unsigned char* b_tile = smem + s * kStageBytes + kATileBytes;
      asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory");
#pragma unroll
      for (int k = 0; k < BK / 16; ++k)  // 16 elements = 32 bytes along the swizzled row per step
        wgmma_m64n256k16<T>(d, matrix_descriptor(a_tile + k * 32), matrix_descriptor(b_tile + k * 32));
      asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
      wgmma_wait<1>();  // step kt-1's group has retired (step kt's stays in flight): its stage may be refilled
      if (kt > 0 && thread_in_group == 0) mbar_arrive(&empty[(step - 1) % kStages]);
    }
    wgmma_wait<0>();
    if (k_tiles > 0 && thread_in_group == 0) mbar_arrive(&empty[(step - 1) % kStages]);
    store_tile(p, &map_c, staging, d, consumer, thread_in_group, b, tm, tn);
  }
  if (thread_in_group == 0) bulk_wait<0>();  // the last stores have read the staging buffers and written C
#endif  // AK_WGMMA_ENABLED
}

template <typename T>
void launch_wgmma_v2(const BmmArgs<T>& p, cudaStream_t stream) {
  // K = 0 never reaches a kernel (bmm_op.cpp: C = act(bias)); a map with a zero dimension is invalid.
  const int64_t k = std::max<int64_t>(p.k, 1);
  const CUtensorMap map_a = hopper::tensor_map(p.a, p.m, k, p.batch, p.a_stride_m, p.a_stride_batch, BM, BK, kWho);
  const CUtensorMap map_b = hopper::tensor_map(p.b, p.n, k, p.batch, p.b_stride_n, p.b_stride_batch, BN, BK, kWho);
  const CUtensorMap map_c = hopper::tensor_map(p.c, p.m, p.n, p.batch, p.n, p.m * p.n, 64, kChunkCols, kWho);
  const int64_t tiles = p.batch * ((p.m + BM - 1) / BM) * ((p.n + BN - 1) / BN);
  const unsigned blocks = hopper::persistent_blocks(tiles);
  auto kernel = bmm_wgmma_v2_kernel<T>;
  cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, kSmemBytes);
  kernel<<<blocks, kThreads, kSmemBytes, stream>>>(map_a, map_b, map_c, p);
}

}  // namespace

void launch_bmm_wgmma_v2_f16(const BmmArgs<__half>& args, cudaStream_t stream) { launch_wgmma_v2(args, stream); }
void launch_bmm_wgmma_v2_bf16(const BmmArgs<__nv_bfloat16>& args, cudaStream_t stream) {
  launch_wgmma_v2(args, stream);
}

}  // namespace accelkernels
