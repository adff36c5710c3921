// Hopper (sm_90a) GEMM, step 3 of the wgmma ladder: `wgmma_v2` (bmm_wgmma_v2.cu, the previous step) run
// by clusters of 2 blocks along M that share the B panel through TMA multicast. The code is ours; the
// structure is CUTLASS's sm90 warp-specialized GEMM with a 2x1 cluster shape (multicast of the operand
// the two tiles share, consumers releasing the stage in every block of the cluster) and fast.cu's
// clustered kernels (../shared/PERFORMANCE.md).
//
// What this step adds over `wgmma_v2`, and why:
// 1. The two blocks of a cluster compute vertically adjacent 128x256 tiles, tile rows 2p and 2p+1 of
//    the same tile column: both need the same 256 x 64 B tile per K step. Each block's producer loads
//    its own A tile and one half of B (128 rows), multicast into the same stage of both blocks: per
//    K step a block asks L2 for 16 + 16 KB instead of 16 + 32 KB, a quarter less L2 traffic for the same
//    work (the B panel is read once per cluster instead of once per block).
// 2. A stage of a block is written by both producers, so it may be refilled only when the consumers of
//    both blocks are done with it: each "empty" barrier counts 2 consumers x 2 blocks, and a consumer
//    releases a stage in both blocks (mbarrier.arrive on the peer's barrier through its shared::cluster
//    address, mapa). Each "full" barrier expects the whole stage: its own A, its own half of B and the
//    half the peer multicasts (those bytes may arrive before this block's producer arms the barrier:
//    the tx-count runs negative, the phase cannot complete before the arrive).
// 3. barrier.cluster after the mbarrier inits (no block may multicast into, or arrive on, a peer's
//    barrier before the peer initialised it) and before exit (no block may leave while its peer still
//    multicasts into its shared memory or arrives on its barriers); so no thread returns early.
// Everything else is wgmma_v2's: 4 stages, one wgmma group in flight, setmaxnreg 40/232, the
// stmatrix + TMA-store epilogue (wgmma_128x256.cuh), a grouped persistent walk, here over tile-row
// pairs: a cluster walks (batch, pair of tile rows, tile column), 8 pairs per group.
//
// Launch: cudaLaunchKernelEx with a cluster dimension of (2, 1, 1); the blocks of a cluster are
// consecutive along x, so the rank is blockIdx.x % 2. An odd count of tile rows leaves the last pair's
// second tile outside M: its block still loads (TMA zero-fills the whole A box) and multicasts its half
// of B for its peer, and its TMA stores are clipped away entirely.
// Requirements: wgmma_v2's (wgmma_v2_unsupported_reason).
#include <algorithm>
#include <stdexcept>
#include <string>

#include "bmm_args.h"
#include "hopper_tma.cuh"
#include "wgmma_128x256.cuh"

namespace accelkernels {
namespace {

using namespace tile_128x256;

// The tile, ring and register split: wgmma_128x256.cuh (kGroupM counts tile-row pairs here).
constexpr int kCluster = 2;  // blocks per cluster, along M
constexpr int kBHalfRows = BN / kCluster, kBHalfBytes = kBTileBytes / kCluster;  // what each block loads of B
constexpr const char* kWho = "accelkernels wgmma_cluster";
static_assert(kBHalfBytes % 1024 == 0, "each half of B starts on a 1024-byte swizzle atom");

template <typename T>
__global__ void __launch_bounds__(kThreads, 1)
    bmm_wgmma_cluster_kernel(const __grid_constant__ CUtensorMap map_a, const __grid_constant__ CUtensorMap map_b,
                             const __grid_constant__ CUtensorMap map_c, BmmArgs<T> p) {
#ifdef AK_WGMMA_ENABLED
  using namespace hopper;
  extern __shared__ __align__(1024) unsigned char smem_raw[];
  unsigned char* smem = aligned_1024(smem_raw);
  unsigned char* staging = smem + kStages * kStageBytes;
  uint64_t* full = reinterpret_cast<uint64_t*>(staging + kEpilogueBytes);
  uint64_t* empty = full + kStages;
  const int warpgroup = threadIdx.x / 128, thread_in_group = threadIdx.x % 128;
  const unsigned rank = blockIdx.x % kCluster;  // the cluster's blocks are consecutive along x

  // full: this block's producer (with the whole stage's bytes); empty: every consumer of the cluster
  if (threadIdx.x == 0) init_ring(full, empty, kStages, 1, kConsumers * kCluster);
  cluster_sync();  // the peer's barriers exist before anything reaches them

  const int64_t tiles_m = (p.m + BM - 1) / BM, tiles_n = (p.n + BN - 1) / BN;
  const int64_t pairs_m = (tiles_m + kCluster - 1) / kCluster;
  const int64_t work = p.batch * pairs_m * tiles_n;  // cluster tiles: (batch, tile-row pair, tile column)
  const int64_t k_tiles = (p.k + BK - 1) / BK;
  const int64_t cluster = blockIdx.x / kCluster, clusters = gridDim.x / kCluster;

  if (warpgroup == 0) {  // producer
    setmaxnreg_dec<kProducerRegs>();
    if (thread_in_group == 0) {
      int64_t step = 0;
      for (int64_t w = cluster; w < work; w += clusters) {
        int64_t b, pm, tn;
        tile_coordinates(w, pairs_m, tiles_n, kGroupM, b, pm, tn);
        const int64_t tm = pm * kCluster + rank;
        for (int64_t kt = 0; kt < k_tiles; ++kt, ++step) {
          const int s = static_cast<int>(step % kStages);
          mbar_wait(&empty[s], static_cast<unsigned>(((step / kStages) & 1) ^ 1));  // both blocks' consumers are done
          mbar_expect_tx(&full[s], kStageBytes);  // own A + own half of B + the peer's half
          unsigned char* stage = smem + s * kStageBytes;
          tma_load(stage, &map_a, static_cast<int>(kt * BK), static_cast<int>(tm * BM), static_cast<int>(b), &full[s]);
          tma_load_multicast(stage + kATileBytes + rank * kBHalfBytes, &map_b, static_cast<int>(kt * BK),
                             static_cast<int>(tn * BN + rank * kBHalfRows), static_cast<int>(b), &full[s],
                             static_cast<uint16_t>((1u << kCluster) - 1));
        }
      }
    }
  } else {  // consumers
    setmaxnreg_inc<kConsumerRegs>();
    const int consumer = warpgroup - 1;
    int64_t step = 0;
    for (int64_t w = cluster; w < work; w += clusters) {
      int64_t b, pm, tn;
      tile_coordinates(w, pairs_m, tiles_n, kGroupM, b, pm, tn);
      const int64_t tm = pm * kCluster + rank;
      float d[128];
      mainloop<T, kStages, kStageBytes, kATileBytes>(d, smem, full, step, k_tiles, consumer, thread_in_group,
                                                     [&](int stage) {
                                                       for (unsigned r = 0; r < kCluster; ++r)
                                                         mbar_arrive_cluster(mapa(&empty[stage], r));
                                                     });
      store_tile(Epilogue<T>{p.bias, p.n, p.activation}, &map_c, staging, d, consumer, thread_in_group, b, tm, tn);
    }
    if (thread_in_group == 0) bulk_wait<0>();  // the last stores have read the staging buffers and written C
  }
  cluster_sync();  // neither block leaves while the other may still reach its shared memory
#endif  // AK_WGMMA_ENABLED
}

template <typename T>
void launch_wgmma_cluster(const BmmArgs<T>& p, cudaStream_t stream) {
  // K = 0 never reaches a kernel (bmm_op.cpp: C = act(bias)); a map with a zero dimension is invalid.
  const int64_t k = std::max<int64_t>(p.k, 1);
  const CUtensorMap map_a = hopper::tensor_map(p.a, p.m, k, p.batch, p.a_stride_m, p.a_stride_batch, BM, BK, kWho);
  const CUtensorMap map_b =
      hopper::tensor_map(p.b, p.n, k, p.batch, p.b_stride_n, p.b_stride_batch, kBHalfRows, BK, kWho);
  const CUtensorMap map_c = hopper::tensor_map(p.c, p.m, p.n, p.batch, p.n, p.m * p.n, 64, kChunkCols, kWho);
  const int64_t tiles_m = (p.m + BM - 1) / BM, tiles_n = (p.n + BN - 1) / BN;
  const int64_t work = p.batch * ((tiles_m + kCluster - 1) / kCluster) * tiles_n;
  // Persistent clusters: as many as fit one block per SM (never more than there is work).
  const unsigned clusters = std::max(1u, hopper::persistent_blocks(work * kCluster) / kCluster);
  auto kernel = bmm_wgmma_cluster_kernel<T>;
  cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, kSmemBytes);
  cudaLaunchAttribute attribute[1];
  attribute[0].id = cudaLaunchAttributeClusterDimension;
  attribute[0].val.clusterDim.x = kCluster;
  attribute[0].val.clusterDim.y = 1;
  attribute[0].val.clusterDim.z = 1;
  // {gridDim, blockDim, dynamicSmemBytes, stream, attrs, numAttrs}, in cudaLaunchConfig_t's order (its
  // first two fields share their names with CUDA's built-ins, which the CPU executor maps to functions).
  cudaLaunchConfig_t config = {dim3(clusters * kCluster), dim3(kThreads), kSmemBytes, stream, attribute, 1};
  const cudaError_t error = cudaLaunchKernelEx(&config, kernel, map_a, map_b, map_c, p);
  if (error != cudaSuccess)
    throw std::runtime_error(std::string(kWho) + ": cluster launch failed: " + cudaGetErrorString(error));
}

}  // namespace

void launch_bmm_wgmma_cluster_f16(const BmmArgs<__half>& args, cudaStream_t stream) {
  launch_wgmma_cluster(args, stream);
}
void launch_bmm_wgmma_cluster_bf16(const BmmArgs<__nv_bfloat16>& args, cudaStream_t stream) {
  launch_wgmma_cluster(args, stream);
}

}  // namespace accelkernels
