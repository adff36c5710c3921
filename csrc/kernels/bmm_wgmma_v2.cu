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
// The consumer side (1's wgmma, 4's epilogue) lives in wgmma_128x256.cuh, shared with the next step,
// wgmma_cluster (bmm_wgmma_cluster.cu: 2-CTA clusters with TMA multicast of the shared operand).
//
// Shared memory: 4 stages x 48 KB + 4 x 8 KB of epilogue staging + the mbarriers = 225 KB of the
// 227 KB a block may have on H100/H200. Requirements (wgmma_v2_unsupported_reason): those of `wgmma`,
// and output rows of a multiple of 16 bytes (N % 8 == 0) for the TMA store; `wgmma` serves the rest.
#include <algorithm>
#include <cstring>
#include <type_traits>

#include "bmm_args.h"
#include "hopper_tma.cuh"
#include "wgmma_128x256.cuh"

namespace accelkernels {
namespace {

using namespace tile_128x256;

constexpr const char* kWho = "accelkernels wgmma_v2";  // the tile, ring and register split: wgmma_128x256.cuh


template <typename T>
__global__ void __launch_bounds__(kThreads, 1)
    bmm_wgmma_v2_kernel(const __grid_constant__ CUtensorMap map_a, const __grid_constant__ CUtensorMap map_b,
                        const __grid_constant__ CUtensorMap map_c, BmmArgs<T> p) {
#ifdef AK_WGMMA_ENABLED
  using namespace hopper;
  extern __shared__ __align__(1024) unsigned char smem_raw[];
  unsigned char* smem = aligned_1024(smem_raw);
  unsigned char* staging = smem + kStages * kStageBytes;
  uint64_t* full = reinterpret_cast<uint64_t*>(staging + kEpilogueBytes);
  uint64_t* empty = full + kStages;
  const int warpgroup = threadIdx.x / 128, thread_in_group = threadIdx.x % 128;

  if (threadIdx.x == 0) init_ring(full, empty, kStages, 1, kConsumers);  // the producer; each consumer warpgroup
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
    mainloop<T, kStages, kStageBytes, kATileBytes>(d, smem, full, step, k_tiles, consumer, thread_in_group,
                                                   [&](int stage) { mbar_arrive(&empty[stage]); });
    store_tile(Epilogue<T>{p.bias, p.n, p.activation}, &map_c, staging, d, consumer, thread_in_group, b, tm, tn);
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
