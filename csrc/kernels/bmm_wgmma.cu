// Hopper (sm_90a) GEMM: wgmma tensor cores fed by TMA through a 4-stage shared-memory ring on
// mbarriers, producer/consumer warp specialization and a persistent tile scheduler; fp16/bf16 in,
// fp32 accumulation, the fused epilogue. The structure follows the public record for passing ~80%
// of cuBLAS on H100 (../shared/PERFORMANCE.md: pranjalssh/fast.cu); the code is ours.
//
// Block: 3 warpgroups. Warpgroup 0 is the producer: one thread issues the TMA loads of A (128x64)
// and B (128x64, read as N x K) for each K step into the next free stage, arming the stage's "full"
// barrier with the bytes to expect. Warpgroups 1 and 2 are consumers: each owns 64 rows of the
// 128x128 output tile, waits for a stage to be full, runs four wgmma m64n128k16 on it (operands
// straight from shared memory through matrix descriptors), waits for them, and releases the stage
// on its "empty" barrier. Blocks are persistent (one per SM) and walk the output tiles in grouped
// order, so the producer streams the next tile's operands while the consumers run the epilogue.
//
// TMA moves whole boxes, zero-filling outside the matrix: ragged M, N and K need no masks in the
// main loop; the epilogue's stores are bounds-checked. Requirements (wgmma_unsupported_reason): A and
// B K-contiguous (B as the N x K matrix — a linear layer's weight), rows and batch strides multiples
// of 16 bytes, no broadcast batch, 16-byte-aligned bases. Compiled only for sm_90a; the sm_80 build
// holds an empty stub that the host never launches (it checks for compute capability 9.0).
#include <algorithm>
#include <type_traits>

#include "bmm_args.h"
#include "epilogue.cuh"
#include "hopper_tma.cuh"

namespace accelkernels {
namespace {

constexpr int BM = 128, BN = 128, BK = 64, kStages = 4;
constexpr int kConsumers = 2, kThreads = (1 + kConsumers) * 128;
constexpr int kTileBytes = BM * BK * 2;  // 16 KB: A tile; the B tile (BN x BK) is the same size
constexpr int kStageBytes = 2 * kTileBytes;
constexpr int kSmemBytes = kStages * kStageBytes + 2048;  // + up to 1008 B of alignment, + the mbarriers
[[maybe_unused]] constexpr int kGroupM = 8;  // tile-rows per group of the persistent walk (L2 reuse of B panels)
static_assert(BM == BN && BK * 2 == 128, "one 128-byte swizzle row per tile row");
constexpr const char* kWho = "accelkernels wgmma";


#ifdef AK_WGMMA_ENABLED
using namespace hopper;

#define AK_D8(i) "+f"(d[i]), "+f"(d[i + 1]), "+f"(d[i + 2]), "+f"(d[i + 3]), "+f"(d[i + 4]), "+f"(d[i + 5]), \
                 "+f"(d[i + 6]), "+f"(d[i + 7])

// D (64 x 128, fp32, 64 registers per thread) += A (64 x 16) * B (16 x 128), both from shared memory.
template <typename T>
__device__ __forceinline__ void wgmma_m64n128k16(float (&d)[64], uint64_t desc_a, uint64_t desc_b) {
#define AK_WGMMA_ASM(TYPE)                                                                                   \
  asm volatile("{\n"                                                                                         \
               "wgmma.mma_async.sync.aligned.m64n128k16.f32." TYPE "." TYPE " "                              \
               "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, "                     \
               "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, "            \
               "%32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, "             \
               "%48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}, "           \
               "%64, %65, 1, 1, 1, 0, 0;\n"                                                                  \
               "}\n"                                                                                         \
               : AK_D8(0), AK_D8(8), AK_D8(16), AK_D8(24), AK_D8(32), AK_D8(40), AK_D8(48), AK_D8(56)         \
               : "l"(desc_a), "l"(desc_b))
  if constexpr (std::is_same_v<T, __half>) {
    AK_WGMMA_ASM("f16");
  } else {
    AK_WGMMA_ASM("bf16");
  }
#undef AK_WGMMA_ASM
}
#undef AK_D8

#endif  // AK_WGMMA_ENABLED

template <typename T>
__global__ void __launch_bounds__(kThreads, 1)
    bmm_wgmma_kernel(const __grid_constant__ CUtensorMap map_a, const __grid_constant__ CUtensorMap map_b,
                     BmmArgs<T> p) {
#ifdef AK_WGMMA_ENABLED
  extern __shared__ __align__(1024) unsigned char smem_raw[];
  unsigned char* smem = aligned_1024(smem_raw);
  uint64_t* full = reinterpret_cast<uint64_t*>(smem + kStages * kStageBytes);
  uint64_t* empty = full + kStages;
  const int warpgroup = threadIdx.x / 128, thread_in_group = threadIdx.x % 128;

  if (threadIdx.x == 0) init_ring(full, empty, kStages, 1, kConsumers);  // the producer; each consumer warpgroup
  __syncthreads();

  const int64_t tiles_m = (p.m + BM - 1) / BM, tiles_n = (p.n + BN - 1) / BN;
  const int64_t tiles = p.batch * tiles_m * tiles_n;
  const int64_t k_tiles = (p.k + BK - 1) / BK;

  if (warpgroup == 0) {  // producer
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
        tma_load(stage + kTileBytes, &map_b, static_cast<int>(kt * BK), static_cast<int>(tn * BN),
                 static_cast<int>(b), &full[s]);
      }
    }
    return;
  }

  // consumers
  const int consumer = warpgroup - 1;
  const int warp = thread_in_group / 32, lane = thread_in_group % 32;
  int64_t step = 0;
  for (int64_t tile = blockIdx.x; tile < tiles; tile += gridDim.x) {
    int64_t b, tm, tn;
    tile_coordinates(tile, tiles_m, tiles_n, kGroupM, b, tm, tn);
    float d[64];
#pragma unroll
    for (int i = 0; i < 64; ++i) d[i] = 0.0f;
    fence_operands(d);
    for (int64_t kt = 0; kt < k_tiles; ++kt, ++step) {
      const int s = static_cast<int>(step % kStages);
      mbar_wait(&full[s], static_cast<unsigned>((step / kStages) & 1));
      const unsigned char* a_tile = smem + s * kStageBytes + consumer * 64 * BK * 2;  // this group's 64 rows
      const unsigned char* b_tile = smem + s * kStageBytes + kTileBytes;
      asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory");
#pragma unroll
      for (int k = 0; k < BK / 16; ++k)  // 16 elements = 32 bytes along the swizzled row per step
        wgmma_m64n128k16<T>(d, matrix_descriptor(a_tile + k * 32), matrix_descriptor(b_tile + k * 32));
      asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
      asm volatile("wgmma.wait_group.sync.aligned 0;\n" ::: "memory");
      if (thread_in_group == 0) mbar_arrive(&empty[s]);
    }
    fence_operands(d);  // the epilogue reads d only after the last wait
    // Epilogue. Accumulator layout (as mma.sync's m16n8, repeated along N): warp w holds rows
    // 16w + lane/4 (+8), registers 4j..4j+3 hold columns 8j + 2(lane%4) (+1) of those two rows.
    const int64_t row0 = tm * BM + consumer * 64 + warp * 16 + lane / 4;
#pragma unroll
    for (int j = 0; j < BN / 8; ++j)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int64_t row = row0 + (e >> 1) * 8;
        const int64_t col = tn * BN + j * 8 + (lane % 4) * 2 + (e & 1);
        store_output(p, b, row, col, d[j * 4 + e]);
      }
  }
#endif  // AK_WGMMA_ENABLED
}

template <typename T>
void launch_wgmma(const BmmArgs<T>& p, cudaStream_t stream) {
  // K = 0: no TMA load is ever issued (no K tiles), but a map with a zero dimension is invalid
  // (cuTensorMapEncodeTiled refuses it; found by the CPU executor), so the maps say K = 1.
  const int64_t k = std::max<int64_t>(p.k, 1);
  const CUtensorMap map_a = hopper::tensor_map(p.a, p.m, k, p.batch, p.a_stride_m, p.a_stride_batch, BM, BK, kWho);
  const CUtensorMap map_b = hopper::tensor_map(p.b, p.n, k, p.batch, p.b_stride_n, p.b_stride_batch, BN, BK, kWho);
  const int64_t tiles = p.batch * ((p.m + BM - 1) / BM) * ((p.n + BN - 1) / BN);
  const unsigned blocks = hopper::persistent_blocks(tiles);
  auto kernel = bmm_wgmma_kernel<T>;
  cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, kSmemBytes);
  kernel<<<blocks, kThreads, kSmemBytes, stream>>>(map_a, map_b, p);
}

}  // namespace

void launch_bmm_wgmma_f16(const BmmArgs<__half>& args, cudaStream_t stream) { launch_wgmma(args, stream); }
void launch_bmm_wgmma_bf16(const BmmArgs<__nv_bfloat16>& args, cudaStream_t stream) { launch_wgmma(args, stream); }

}  // namespace accelkernels
