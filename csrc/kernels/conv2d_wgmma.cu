// Hopper (sm_90a) convolutions, forward and input gradient: the implicit GEMMs of `implicit_gemm`
// (conv2d_implicit_gemm.cu, mma.sync) on wgmma_v2's machinery, with the im2col done by the copy engine.
// The structure is CUTLASS 3's Hopper convolutions (TMA im2col loads of the activation, tiled TMA loads
// of the filter, warp-specialized wgmma); the code is ours.
//
//   forward     y[n, p, q, k] = act(bias[k] + sum over (r, s, c) of x[n, p*sh - ph + r*dh, q*sw - pw + s*dw, c] * w[k, r, s, c])
//   input_grad  dx[n, h, w, c] = sum over (r, s, k) of dy[n, (h + ph - r*dh) / sh, (w + pw - s*dw) / sw, k] * w[k, r, s, c]
//               (where the divisions are exact and land inside dy)
//
// One launch is one GEMM (conv_wgmma_views.h: Im2colView): rows are result pixels, columns the result
// channels of one group, and the reduction runs over (tap, 64-channel block). For tap (a, b) and channels
// [c0, c0 + 64) the A tile is 128 consecutive result pixels x 64 channels of the source at the tap's
// offset. An im2col TMA copy (hopper::tma_load_im2col) fetches exactly that: its map's bounding box steps
// through the result pixels' source positions by the traversal stride (wrapping rows and images), each copy
// adds the tap's offset, and padding, channels past the group's, and pixels past the last are zero-filled by
// the copy engine: no index math and no predicates in the loads. The B tile is 256 result channels x 64
// channels of that tap, a tiled TMA copy of the filter seen as (columns, R*S, reduce channels). Everything
// after the loads is wgmma_v2's: 4 stages, one wgmma group in flight, setmaxnreg 40/232, and the epilogue.
//
// forward     one launch per group; the source is x, the filter the weight (K, R, S, C/groups); bias and
//             relu/gelu/silu fused into the stmatrix + TMA-store epilogue of the (N*P*Q, K) channels_last y.
// input_grad  the transposed problem with the stride-phase decomposition of `implicit_gemm`: one launch per
//             (group, phase), each reducing over only the taps that reach its pixels (no MMA work on
//             zero-filled taps at stride > 1). The source is dy, read at stride 1 with the phase's taps as
//             offsets that run backwards (conv_wgmma_views.h), the filter the host's regrouped Wt
//             (C, R, S, K/groups). At stride 1 the one phase is all of dx: the TMA-store epilogue. At
//             stride > 1 a phase's pixels are every stride-th of dx, which no TMA box describes: each
//             thread stores its two rows' values itself (PhaseStore). A phase that no tap reaches is a
//             launch with no K steps: zeros.
//
// Requirements: conv_wgmma_unsupported_reason (conv_wgmma_views.h). The rest goes to `implicit_gemm`.
// The weight gradient is conv2d_wgmma_weight_grad.cu. Not yet: a narrower tile for few result channels (a
// 256-wide tile computes zeros past them; with many groups that is most of the work), the groups of one call
// in one launch.
#include <algorithm>
#include <stdexcept>
#include <string>

#include "conv_wgmma_views.h"
#include "hopper_tma.cuh"
#include "wgmma_128x256.cuh"

namespace accelkernels {
namespace {

using namespace tile_128x256;

constexpr const char* kWho = "accelkernels conv2d wgmma";  // the tile, ring and register split: wgmma_128x256.cuh

// input_grad at stride > 1: where a phase's result pixels lie in the dense NHWC dx.
template <typename T>
struct PhaseStore {
  T* dx;                // the group's first channel
  int64_t h, w, pitch;  // dx's size and channels per pixel
  GemmPhase phase;
};

// What one launch computes: its im2col view, its sizes, its epilogue (bias, the group's result channels,
// activation) and, for a phase of input_grad at stride > 1, where its pixels go.
template <typename T>
struct ConvGemm {
  Im2colView view;
  int64_t images, reduce_channels, filter_s;  // filter_s: the filter's full width (taps are r * S + s)
  Epilogue<T> epilogue;
  PhaseStore<T> phase_store;
};

#ifdef AK_WGMMA_ENABLED
// One consumer's 64 x 256 tile into a phase's dx pixels: a thread holds two rows (lane / 4 and + 8 of its
// warp's 16) and in each 8-column block two adjacent columns of each (the wgmma accumulator layout), so it
// finds its two pixels once and stores 32-bit pairs. Columns past the group's are skipped.
template <typename T>
__device__ __forceinline__ void store_tile_to_phase(const PhaseStore<T>& st, int64_t images, int64_t columns,
                                                    const float (&d)[128], int consumer, int thread_in_group,
                                                    int64_t tm, int64_t tn) {
  const int warp = thread_in_group / 32, lane = thread_in_group % 32;
#pragma unroll
  for (int half = 0; half < 2; ++half) {
    const int64_t row = tm * BM + consumer * 64 + warp * 16 + half * 8 + lane / 4;
    int64_t n, oh, ow;
    if (!result_pixel(st.phase, images, row, n, oh, ow)) continue;
    T* out = st.dx + ((n * st.h + oh) * st.w + ow) * st.pitch;
#pragma unroll
    for (int block = 0; block < BN / 8; ++block) {
      const int64_t col = tn * BN + 8 * block + 2 * (lane % 4);  // even; columns % 8 == 0, so col + 1 is in too
      if (col < columns)
        *reinterpret_cast<uint32_t*>(out + col) = pack2<T>(d[4 * block + 2 * half], d[4 * block + 2 * half + 1]);
    }
  }
}
#endif  // AK_WGMMA_ENABLED

template <typename T, bool kPhaseStore>
__global__ void __launch_bounds__(kThreads, 1)
    conv2d_wgmma_kernel(const __grid_constant__ CUtensorMap map_src, const __grid_constant__ CUtensorMap map_filter,
                        const __grid_constant__ CUtensorMap map_out, const ConvGemm<T> g) {
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

  const Im2colView& v = g.view;
  const int64_t per_image = v.rows_h * v.rows_w;
  const int64_t tiles_m = (g.images * per_image + BM - 1) / BM, tiles_n = (g.epilogue.columns + BN - 1) / BN;
  const int64_t tiles = tiles_m * tiles_n;
  const int64_t channel_blocks = (g.reduce_channels + BK - 1) / BK;
  const int64_t k_tiles = v.taps_r * v.taps_s * channel_blocks;  // (tap, channel block), channel blocks fastest

  if (warpgroup == 0) {  // producer
    setmaxnreg_dec<kProducerRegs>();
    if (thread_in_group != 0) return;
    int64_t step = 0;
    for (int64_t tile = blockIdx.x; tile < tiles; tile += gridDim.x) {
      int64_t b, tm, tn;
      tile_coordinates(tile, tiles_m, tiles_n, kGroupM, b, tm, tn);
      // The tile's first result pixel, and its source position: where the im2col traversal starts.
      const int64_t m0 = tm * BM, image = m0 / per_image, ij = m0 % per_image;
      const int h0 = static_cast<int>(v.origin_h + (ij / v.rows_w) * v.step_h);
      const int w0 = static_cast<int>(v.origin_w + (ij % v.rows_w) * v.step_w);
      for (int64_t kt = 0; kt < k_tiles; ++kt, ++step) {
        const int s = static_cast<int>(step % kStages);
        const int64_t tap = kt / channel_blocks, c0 = (kt % channel_blocks) * BK;
        const int64_t ta = tap / v.taps_s, tb = tap % v.taps_s;
        const int64_t filter_tap = (v.filter_r0 + ta * v.filter_step_r) * g.filter_s + v.filter_s0 + tb * v.filter_step_s;
        mbar_wait(&empty[s], static_cast<unsigned>(((step / kStages) & 1) ^ 1));
        mbar_expect_tx(&full[s], kStageBytes);
        unsigned char* stage = smem + s * kStageBytes;
        tma_load_im2col(stage, &map_src, static_cast<int>(c0), w0, h0, static_cast<int>(image),
                        static_cast<uint16_t>(v.offset0_w + tb * v.offset_step_w),
                        static_cast<uint16_t>(v.offset0_h + ta * v.offset_step_h), &full[s]);
        tma_load(stage + kATileBytes, &map_filter, static_cast<int>(c0), static_cast<int>(filter_tap),
                 static_cast<int>(tn * BN), &full[s]);
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
    if constexpr (kPhaseStore) {
      store_tile_to_phase(g.phase_store, g.images, g.epilogue.columns, d, consumer, thread_in_group, tm, tn);
    } else {
      store_tile(g.epilogue, &map_out, staging, d, consumer, thread_in_group, 0, tm, tn);
    }
  }
  if (!kPhaseStore && thread_in_group == 0) bulk_wait<0>();  // the last stores have read staging and written out
#endif  // AK_WGMMA_ENABLED
}

// The im2col map of a view over an NHWC source (n x src_h x src_w pixels of `pitch` channels, `channels`
// of them read from `base`). A view no tap reads (a phase no tap reaches) gets the identity box, which
// every source can encode: it is never read.
template <typename T>
CUtensorMap source_map(const T* base, int64_t n, int64_t channels, int64_t pitch, const Im2colView& v) {
  if (v.tapless())
    return hopper::im2col_tensor_map(base, n, v.src_h, v.src_w, channels, pitch, v.src_h, v.src_w, 1, 1, 0, 0, BM, BK,
                                     kWho);
  return hopper::im2col_tensor_map(base, n, v.src_h, v.src_w, channels, pitch, v.rows_h, v.rows_w, v.step_h, v.step_w,
                                   -v.origin_h, -v.origin_w, BM, BK, kWho);
}

// The filter as (columns, R*S, reduce channels): boxes of 256 result channels x one tap x 64 channels.
template <typename T>
CUtensorMap filter_map(const T* base, int64_t columns, int64_t taps, int64_t reduce_channels) {
  return hopper::tensor_map(base, taps, reduce_channels, columns, reduce_channels, taps * reduce_channels, 1, BK, kWho,
                            BN);
}

// The result as a dense (pixels, columns) matrix of `pitch` channels per pixel, stored in 64 x 64 chunks.
template <typename T>
CUtensorMap result_map(const T* base, int64_t pixels, int64_t columns, int64_t pitch) {
  return hopper::tensor_map(base, pixels, columns, 1, pitch, pixels * pitch, 64, kChunkCols, kWho);
}

template <typename T, bool kPhaseStore>
void launch(const CUtensorMap& src, const CUtensorMap& filter, const CUtensorMap& out, const ConvGemm<T>& g,
            cudaStream_t stream) {
  const int64_t pixels = g.images * g.view.rows_h * g.view.rows_w;
  const int64_t tiles = ((pixels + BM - 1) / BM) * ((g.epilogue.columns + BN - 1) / BN);
  auto kernel = conv2d_wgmma_kernel<T, kPhaseStore>;
  cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, kSmemBytes);
  kernel<<<hopper::persistent_blocks(tiles), kThreads, kSmemBytes, stream>>>(src, filter, out, g);
}

}  // namespace

template <typename T>
void launch_conv2d_wgmma(const ConvArgs<T>& a, cudaStream_t stream) {
  const int64_t cg = a.c / a.groups, kg = a.k / a.groups, pixels = a.n * a.p * a.q;
  for (int64_t group = 0; group < a.groups; ++group) {
    ConvGemm<T> g{};
    g.view = forward_view(a);
    g.images = a.n, g.reduce_channels = cg, g.filter_s = a.s;
    g.epilogue = Epilogue<T>{a.bias != nullptr ? a.bias + group * kg : nullptr, kg, a.activation};
    const CUtensorMap src = source_map(a.x + group * cg, a.n, cg, a.c, g.view);
    const CUtensorMap filter = filter_map(a.weight + group * kg * a.r * a.s * cg, kg, a.r * a.s, cg);
    const CUtensorMap out = result_map(a.y + group * kg, pixels, kg, a.k);
    launch<T, false>(src, filter, out, g, stream);
  }
}

// a.x is dx (written), a.y dy, a.weight the regrouped Wt (C, R, S, K/groups) (conv_args.h).
template <typename T>
void launch_conv2d_wgmma_input_grad(const ConvArgs<T>& a, cudaStream_t stream) {
  const int64_t cg = a.c / a.groups, kg = a.k / a.groups, phases = gemm_phases<true>(a);
  for (int64_t group = 0; group < a.groups; ++group)
    for (int64_t phase = 0; phase < phases; ++phase) {
      ConvGemm<T> g{};
      g.view = input_grad_view(a, phase);
      if (g.view.empty()) continue;  // a phase past the input's edge (stride larger than the input)
      g.images = a.n, g.reduce_channels = kg, g.filter_s = a.s;
      g.epilogue = Epilogue<T>{nullptr, cg, Activation::kNone};
      g.phase_store = PhaseStore<T>{a.x + group * cg, a.h, a.w, a.c, gemm_phase<true>(a, phase)};
      const CUtensorMap src = source_map(a.y + group * kg, a.n, kg, a.k, g.view);
      const CUtensorMap filter = filter_map(a.weight + group * cg * a.r * a.s * kg, cg, a.r * a.s, kg);
      if (phases == 1) {  // stride 1: the phase is all of dx, a dense (N*H*W, C) matrix
        launch<T, false>(src, filter, result_map(a.x + group * cg, a.n * a.h * a.w, cg, a.c), g, stream);
      } else {
        launch<T, true>(src, filter, filter, g, stream);  // (no TMA stores: any map fills the slot)
      }
    }
}

template void launch_conv2d_wgmma<__half>(const ConvArgs<__half>&, cudaStream_t);
template void launch_conv2d_wgmma<__nv_bfloat16>(const ConvArgs<__nv_bfloat16>&, cudaStream_t);
template void launch_conv2d_wgmma_input_grad<__half>(const ConvArgs<__half>&, cudaStream_t);
template void launch_conv2d_wgmma_input_grad<__nv_bfloat16>(const ConvArgs<__nv_bfloat16>&, cudaStream_t);

}  // namespace accelkernels
