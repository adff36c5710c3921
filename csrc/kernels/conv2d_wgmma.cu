// Hopper (sm_90a) convolution forward: the implicit GEMM of `implicit_gemm` (conv2d_implicit_gemm.cu,
// mma.sync) on wgmma_v2's machinery, with the im2col done by the copy engine. The structure is CUTLASS 3's
// Hopper convolutions (TMA im2col loads of the activation, tiled TMA loads of the filter, warp-
// specialized wgmma); the code is ours.
//
//   y[n, p, q, k] = act(bias[k] + sum over (r, s, c) of x[n, p*sh - ph + r*dh, q*sw - pw + s*dw, c] * w[k, r, s, c])
//
// As a GEMM: rows are the N*P*Q output pixels, columns the K output channels, and the reduction runs over
// (tap, channel block): for tap (r, s) and channels [c0, c0 + 64) the A tile is 128 consecutive output
// pixels x 64 channels of x at the tap's offset. An im2col TMA copy (hopper::tma_load_im2col) fetches
// exactly that: its map's bounding box steps through the output pixels' top-left input positions by the
// stride (wrapping rows and images), each copy adds the tap's offset (r*dh, s*dw), and padding, channels
// past C and pixels past N*P*Q are zero-filled by the copy engine: no index math and no predicates in
// the loads. The B tile is 256 output channels x 64 channels of that tap, a tiled TMA copy of the filter
// seen as a (K, R*S, C) array (zeros past C and K). Everything after the loads is wgmma_v2's: 4 stages,
// one wgmma group in flight, setmaxnreg 40/232, bias + activation, stmatrix + TMA stores of the
// (N*P*Q, K) channels_last output.
//
// Requirements (conv_wgmma_unsupported_reason): fp16/bf16, groups 1, C and K multiples of 8, dense
// channels_last x, filter and y, strides up to 8 (the map's traversal strides), and corner offsets the
// 4-D im2col map can hold (-128..127: padding and the box's upper corner). The rest goes to
// `implicit_gemm`. Not yet: the gradients, groups, a narrower tile for small K (a 256-wide tile
// computes zeros past K).
#include <algorithm>
#include <stdexcept>
#include <string>

#include "conv_args.h"
#include "hopper_tma.cuh"
#include "wgmma_128x256.cuh"

namespace accelkernels {
namespace {

using namespace tile_128x256;

constexpr const char* kWho = "accelkernels conv2d wgmma";  // the tile, ring and register split: wgmma_128x256.cuh

template <typename T>
__global__ void __launch_bounds__(kThreads, 1)
    conv2d_wgmma_kernel(const __grid_constant__ CUtensorMap map_x, const __grid_constant__ CUtensorMap map_w,
                        const __grid_constant__ CUtensorMap map_y, ConvArgs<T> a) {
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

  const int64_t pixels = a.n * a.p * a.q;
  const int64_t tiles_m = (pixels + BM - 1) / BM, tiles_n = (a.k + BN - 1) / BN;
  const int64_t tiles = tiles_m * tiles_n;
  const int64_t channel_blocks = (a.c + BK - 1) / BK;
  const int64_t k_tiles = a.r * a.s * channel_blocks;  // (tap, channel block), channel blocks fastest

  if (warpgroup == 0) {  // producer
    setmaxnreg_dec<kProducerRegs>();
    if (thread_in_group != 0) return;
    int64_t step = 0;
    for (int64_t tile = blockIdx.x; tile < tiles; tile += gridDim.x) {
      int64_t b, tm, tn;
      tile_coordinates(tile, tiles_m, tiles_n, kGroupM, b, tm, tn);
      // The tile's first output pixel, and its top-left input position: where the im2col traversal starts.
      const int64_t m0 = tm * BM, image = m0 / (a.p * a.q), pq = m0 % (a.p * a.q);
      const int h0 = static_cast<int>((pq / a.q) * a.stride_h - a.pad_h);
      const int w0 = static_cast<int>((pq % a.q) * a.stride_w - a.pad_w);
      for (int64_t kt = 0; kt < k_tiles; ++kt, ++step) {
        const int s = static_cast<int>(step % kStages);
        const int64_t tap = kt / channel_blocks, c0 = (kt % channel_blocks) * BK;
        const int r = static_cast<int>(tap / a.s), t = static_cast<int>(tap % a.s);
        mbar_wait(&empty[s], static_cast<unsigned>(((step / kStages) & 1) ^ 1));
        mbar_expect_tx(&full[s], kStageBytes);
        unsigned char* stage = smem + s * kStageBytes;
        tma_load_im2col(stage, &map_x, static_cast<int>(c0), w0, h0, static_cast<int>(image),
                        static_cast<uint16_t>(t * a.dil_w), static_cast<uint16_t>(r * a.dil_h), &full[s]);
        tma_load(stage + kATileBytes, &map_w, static_cast<int>(c0), static_cast<int>(tap), static_cast<int>(tn * BN),
                 &full[s]);
      }
    }
    return;
  }

  // consumers: wgmma_v2's
  setmaxnreg_inc<kConsumerRegs>();
  const int consumer = warpgroup - 1;
  int64_t step = 0;
  for (int64_t tile = blockIdx.x; tile < tiles; tile += gridDim.x) {
    int64_t b, tm, tn;
    tile_coordinates(tile, tiles_m, tiles_n, kGroupM, b, tm, tn);
    float d[128];
    mainloop<T, kStages, kStageBytes, kATileBytes>(d, smem, full, step, k_tiles, consumer, thread_in_group,
                                                   [&](int stage) { mbar_arrive(&empty[stage]); });
    store_tile(Epilogue<T>{a.bias, a.k, a.activation}, &map_y, staging, d, consumer, thread_in_group, 0, tm, tn);
  }
  if (thread_in_group == 0) bulk_wait<0>();  // the last stores have read the staging buffers and written y
#endif  // AK_WGMMA_ENABLED
}

}  // namespace

template <typename T>
void launch_conv2d_wgmma(const ConvArgs<T>& a, cudaStream_t stream) {
  const int64_t pixels = a.n * a.p * a.q;
  const CUtensorMap map_x = hopper::im2col_tensor_map(a.x, a.n, a.h, a.w, a.c, a.p, a.q, a.stride_h, a.stride_w,
                                                      a.pad_h, a.pad_w, BM, BK, kWho);
  // The filter as (K, R*S, C): boxes of 256 output channels x one tap x 64 channels.
  const CUtensorMap map_w = hopper::tensor_map(a.weight, a.r * a.s, a.c, a.k, a.c, a.r * a.s * a.c, 1, BK, kWho, BN);
  const CUtensorMap map_y = hopper::tensor_map(a.y, pixels, a.k, 1, a.k, pixels * a.k, 64, kChunkCols, kWho);
  const int64_t tiles = ((pixels + BM - 1) / BM) * ((a.k + BN - 1) / BN);
  const unsigned blocks = hopper::persistent_blocks(tiles);
  auto kernel = conv2d_wgmma_kernel<T>;
  cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, kSmemBytes);
  kernel<<<blocks, kThreads, kSmemBytes, stream>>>(map_x, map_w, map_y, a);
}

template void launch_conv2d_wgmma<__half>(const ConvArgs<__half>&, cudaStream_t);
template void launch_conv2d_wgmma<__nv_bfloat16>(const ConvArgs<__nv_bfloat16>&, cudaStream_t);

}  // namespace accelkernels
