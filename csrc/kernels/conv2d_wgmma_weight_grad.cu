// The Hopper (sm_90a) weight gradient: dw = Σ over output pixels of dyᵀ ⊗ im2col(x), on wgmma_v2's
// machinery (wgmma_128x256.cuh) with both operands MN-major, split-K over the pixels and a deterministic
// reduction.
//
//   dw[k, r, s, c] = sum over (n, p, q) of dy[n, p, q, k] * x[n, p*sh - ph + r*dh, q*sw - pw + s*dw, c]
//
// One launch per group is one GEMM: rows = the group's output channels k, columns = (tap, input channel)
// in blocks of 64 channels per tap (R*S*ceil(C/groups / 64) blocks), reduction = the N*P*Q output pixels
// in steps of 64. Both operands arrive as TMA boxes of 64 pixels x 64 channels, the pixel index down the
// 128-byte rows: for the MMA that is the reduction index, so the tiles are MN-major (wgmma's imm-trans = 1,
// matrix_descriptor_mn) and no transpose is ever done by hand.
//   A (128 output channels x 64 pixels): two tiled TMA boxes of dy, seen as the (N*P*Q, K/groups) matrix
//     of the group (pitch K); pixels past the last and channels past the group's are zero-filled.
//   B (64 pixels x 256 columns): four im2col TMA boxes of x, one per 64-channel block of a tap: the
//     forward's im2col view (conv_wgmma_views.h: forward_view) with the tap's offsets — the same copy as
//     the forward's A tile, 64 pixels tall. Padding, channels past the group's, pixels past the last:
//     zeros. A column block past the last (the tile's ragged end) loads the last block again and is not
//     stored.
// Split-K: the pixel steps are cut into `splits` slices of whole steps; the persistent walk runs over
// (slice, row tile, column tile), and each tile stores its fp32 partial sums, in the accumulator layout,
// into workspace[slice][group][tap][k][c] (32-bit pairs; columns past the group's channels skipped). The
// reduction kernel (conv_weight_grad_reduce.cuh) then adds the slices in order into dw (any strides).
//
// Requirements: conv_wgmma_unsupported_reason (conv_wgmma_views.h), and the host's workspace of
// args.splits slices (conv_op.cpp). Not yet: a narrower tile for few output channels per group (a 128-row
// tile computes zeros past them), the groups of one call in one launch, the reduction fused into the last
// slice.
#include <algorithm>

#include "conv_weight_grad_reduce.cuh"
#include "conv_wgmma_views.h"
#include "hopper_tma.cuh"
#include "wgmma_128x256.cuh"

namespace accelkernels {
namespace {

using namespace tile_128x256;

constexpr const char* kWho = "accelkernels conv2d wgmma weight_grad";
constexpr int kBox = 64;                    // pixels x channels per TMA box
constexpr int kBoxBytes = kBox * kBox * 2;  // 8 KB
static_assert(2 * kBoxBytes == kATileBytes && 4 * kBoxBytes == kBTileBytes && BK == kBox,
              "A = two boxes of dy, B = four boxes of x, one K step = one box of pixels");

// What one launch (one group) computes, and where its partial sums go.
struct WeightGradGemm {
  Im2colView view;                      // the forward's: output pixels over x
  int64_t out_channels;                    // K/groups: the GEMM's rows
  int64_t channels, channel_blocks;        // C/groups; its 64-channel blocks per tap
  int64_t steps, steps_per_split, splits;  // 64-pixel K steps over N*P*Q, cut into slices
  float* partial;                          // workspace + the group's offset: [slice][tap][k][c] within the group
  int64_t slice;                           // floats per slice (all groups)
};

#ifdef AK_WGMMA_ENABLED
// One consumer's 64 x 256 tile of partial sums: the thread's two rows (lane / 4 and + 8 of its warp's 16)
// and, per 8-column block, two adjacent columns (the wgmma accumulator layout) as one 64-bit store. The
// tile's four 64-column blocks are (tap, channel block) pairs, decoded once each.
__device__ __forceinline__ void store_partial(const WeightGradGemm& g, const float (&d)[128], int consumer,
                                              int thread_in_group, int64_t split, int64_t tm, int64_t tn) {
  const int warp = thread_in_group / 32, lane = thread_in_group % 32;
  const int64_t blocks = g.view.taps_r * g.view.taps_s * g.channel_blocks;
  const int64_t k0 = tm * BM + consumer * 64 + warp * 16 + lane / 4;
  float* out = g.partial + split * g.slice;
#pragma unroll
  for (int j = 0; j < BN / kBox; ++j) {
    const int64_t column_block = tn * (BN / kBox) + j;
    if (column_block >= blocks) break;
    const int64_t tap = column_block / g.channel_blocks;
    const int c0 = static_cast<int>((column_block % g.channel_blocks) * kBox) + 2 * (lane % 4);
    float* rows = out + (tap * g.out_channels + k0) * g.channels;
#pragma unroll
    for (int half = 0; half < 2; ++half) {
      if (k0 + 8 * half >= g.out_channels) continue;
#pragma unroll
      for (int b = 0; b < kBox / 8; ++b) {
        const int c = c0 + 8 * b, block = j * (kBox / 8) + b;  // c even, channels % 8 == 0: c + 1 is in too
        if (c < g.channels)
          *reinterpret_cast<float2*>(rows + 8 * half * g.channels + c) =
              make_float2(d[4 * block + 2 * half], d[4 * block + 2 * half + 1]);
      }
    }
  }
}
#endif  // AK_WGMMA_ENABLED

template <typename T>
__global__ void __launch_bounds__(kThreads, 1)
    conv2d_wgmma_weight_grad_kernel(const __grid_constant__ CUtensorMap map_dy, const __grid_constant__ CUtensorMap map_x,
                                    const WeightGradGemm g) {
#ifdef AK_WGMMA_ENABLED
  using namespace hopper;
  extern __shared__ __align__(1024) unsigned char smem_raw[];
  unsigned char* smem = aligned_1024(smem_raw);
  uint64_t* full = reinterpret_cast<uint64_t*>(smem + kStages * kStageBytes);
  uint64_t* empty = full + kStages;
  const int warpgroup = threadIdx.x / 128, thread_in_group = threadIdx.x % 128;

  if (threadIdx.x == 0) init_ring(full, empty, kStages, 1, kConsumers);
  __syncthreads();

  const Im2colView& v = g.view;
  const int64_t per_image = v.rows_h * v.rows_w;
  const int64_t blocks = v.taps_r * v.taps_s * g.channel_blocks;
  const int64_t tiles_m = (g.out_channels + BM - 1) / BM, tiles_n = (blocks * kBox + BN - 1) / BN;
  const int64_t tiles = g.splits * tiles_m * tiles_n;

  if (warpgroup == 0) {  // producer
    setmaxnreg_dec<kProducerRegs>();
    if (thread_in_group != 0) return;
    int64_t step = 0;
    for (int64_t tile = blockIdx.x; tile < tiles; tile += gridDim.x) {
      int64_t split, tm, tn;
      tile_coordinates(tile, tiles_m, tiles_n, kGroupM, split, tm, tn);
      const int64_t first = split * g.steps_per_split, count = std::min(g.steps_per_split, g.steps - first);
      // 32-bit from here (pixels < 2^31, checked): the producer runs in 40 registers (setmaxnreg).
      const int channel_blocks = static_cast<int>(g.channel_blocks), taps_s = static_cast<int>(v.taps_s);
      const int last_block = static_cast<int>(blocks - 1), first_block = static_cast<int>(tn * (BN / kBox));
      const int rows_w = static_cast<int>(v.rows_w), image_pixels = static_cast<int>(per_image);
      for (int64_t kt = 0; kt < count; ++kt, ++step) {
        const int s = static_cast<int>(step % kStages);
        // The step's first output pixel, and its top-left input position: where the im2col traversal starts.
        const int pixel = static_cast<int>((first + kt) * kBox), image = pixel / image_pixels, ij = pixel % image_pixels;
        const int h0 = static_cast<int>(v.origin_h + (ij / rows_w) * v.step_h);
        const int w0 = static_cast<int>(v.origin_w + (ij % rows_w) * v.step_w);
        mbar_wait(&empty[s], static_cast<unsigned>(((step / kStages) & 1) ^ 1));
        mbar_expect_tx(&full[s], kStageBytes);
        unsigned char* stage = smem + s * kStageBytes;
        for (int j = 0; j < 2; ++j)  // dy: 64 pixels x the tile's output channels [64 j, 64 j + 64)
          tma_load(stage + j * kBoxBytes, &map_dy, static_cast<int>(tm * BM) + j * kBox, pixel, 0, &full[s]);
#pragma unroll 1
        for (int j = 0; j < BN / kBox; ++j) {  // x: 64 pixels x one (tap, 64-channel block)
          const int column_block = std::min(first_block + j, last_block);
          const int tap = column_block / channel_blocks, c0 = (column_block % channel_blocks) * kBox;
          const int ta = tap / taps_s, tb = tap % taps_s;
          tma_load_im2col(stage + kATileBytes + j * kBoxBytes, &map_x, c0, w0, h0, image,
                          static_cast<uint16_t>(v.offset0_w + tb * v.offset_step_w),
                          static_cast<uint16_t>(v.offset0_h + ta * v.offset_step_h), &full[s]);
        }
      }
    }
    return;
  }

  // consumers: wgmma_v2's K loop on MN-major tiles, then the partial sums out
  setmaxnreg_inc<kConsumerRegs>();
  const int consumer = warpgroup - 1;
  int64_t step = 0;
  for (int64_t tile = blockIdx.x; tile < tiles; tile += gridDim.x) {
    int64_t split, tm, tn;
    tile_coordinates(tile, tiles_m, tiles_n, kGroupM, split, tm, tn);
    const int64_t count = std::min(g.steps_per_split, g.steps - split * g.steps_per_split);
    float d[128];
    mainloop<T, kStages, kStageBytes, kATileBytes, true>(d, smem, full, step, count, consumer, thread_in_group,
                                                         [&](int stage) { mbar_arrive(&empty[stage]); });
    store_partial(g, d, consumer, thread_in_group, split, tm, tn);
  }
#endif  // AK_WGMMA_ENABLED
}

constexpr int kSmem = kStages * kStageBytes + 1024 + 2 * kStages * 8;  // the ring, alignment, mbarriers (no staging)

}  // namespace

// a.y is dy, a.x is x, a.weight dw (written through its strides), a.workspace the host's args.splits slices.
template <typename T>
void launch_conv2d_wgmma_weight_grad(const ConvArgs<T>& a, cudaStream_t stream) {
  const int64_t cg = a.c / a.groups, kg = a.k / a.groups, taps = a.r * a.s, pixels = a.n * a.p * a.q;
  const int64_t steps = (pixels + kBox - 1) / kBox;
  // Slices of whole steps, at most the host's args.splits (the workspace it sized); none empty.
  const int64_t per_split = (steps + a.splits - 1) / a.splits, splits = (steps + per_split - 1) / per_split;
  const int64_t slice = a.groups * taps * kg * cg;
  const Im2colView view = forward_view(a);
  auto kernel = conv2d_wgmma_weight_grad_kernel<T>;
  cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, kSmem);
  for (int64_t group = 0; group < a.groups; ++group) {
    WeightGradGemm g{};
    g.view = view;
    g.out_channels = kg, g.channels = cg, g.channel_blocks = (cg + kBox - 1) / kBox;
    g.steps = steps, g.steps_per_split = per_split, g.splits = splits;
    g.partial = a.workspace + group * taps * kg * cg, g.slice = slice;
    const CUtensorMap map_dy = hopper::tensor_map(a.y + group * kg, pixels, kg, 1, a.k, pixels * a.k, kBox, kBox, kWho);
    const CUtensorMap map_x = hopper::im2col_tensor_map(a.x + group * cg, a.n, a.h, a.w, cg, a.c, a.p, a.q, a.stride_h,
                                                        a.stride_w, a.pad_h, a.pad_w, kBox, kBox, kWho);
    const int64_t tiles = splits * ((kg + BM - 1) / BM) * ((taps * g.channel_blocks * kBox + BN - 1) / BN);
    kernel<<<hopper::persistent_blocks(tiles), kThreads, kSmem, stream>>>(map_dy, map_x, g);
  }
  launch_weight_grad_reduce(a, splits, stream);
}

template void launch_conv2d_wgmma_weight_grad<__half>(const ConvArgs<__half>&, cudaStream_t);
template void launch_conv2d_wgmma_weight_grad<__nv_bfloat16>(const ConvArgs<__nv_bfloat16>&, cudaStream_t);

}  // namespace accelkernels
