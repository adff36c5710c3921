// Convolutions as implicit GEMMs on tensor cores (sm_80+, fp16/bf16 in, fp32 accumulation): the
// im2col matrix is never built — each cp.async of 8 channels (16 bytes) is aimed at the input pixel
// a (row, tap) pair reads, and padding, ragged edges and (for the input gradient) taps that miss the
// stride grid are zero-filled by the copy itself. The block tile, shared ring and mma.sync step are
// the GEMM's (mma_sync_tile.cuh); this file is the three gathers and epilogues.
//
// forward     rows = output pixels (n, p, q), columns = output channels of the group, reduction =
//             (tap, input channel) with the channel fastest: A is gathered from channels_last x,
//             B is the weight in (K, R, S, C/groups) order — the same K-contiguous tiles as a linear
//             layer's Wᵀ. Bias and activation fused into the single store.
// input_grad  the transposed problem: rows = input pixels (n, h, w), columns = input channels,
//             reduction = (tap, output channel); dy[n, (h + pad - r·dil) / stride, ...] where the
//             division is exact. With stride > 1 the input pixels are split into stride phases
//             (grid z): the pixels of one phase are reached by the same taps, every step-th one, so
//             each block reduces over those taps only (conv_gather.cuh: gemm_phase). B is the
//             host-regrouped weight (C, R, S, K/groups), read at the phase's taps.
// weight_grad per (group, tap): rows = output channels, columns = input channels, reduction = the
//             N·P·Q pixels, cut into slices (split-K, blockIdx.z) so that small filters still fill
//             the GPU; A = dyᵀ (read from the contiguous channels_last dy with ldmatrix.trans),
//             B = the x pixels each output pixel's tap reads (gathered, ldmatrix.trans). Slices write
//             fp32 partial sums that a second kernel adds in a fixed order (deterministic).
//
// Each thread copies 4 chunks of each operand tile per stage. For the forward and input_grad, a
// thread's 4 rows (pixels of A, weight rows of B) and its chunk column are the same for every stage,
// so the pixels' (n, h, w) decomposition is done once before the main loop; per stage a thread only
// splits its reduction index into (tap, channel), once for both operands.
#include <algorithm>

#include "conv_gather.cuh"
#include "conv_weight_grad_reduce.cuh"
#include "epilogue.cuh"
#include "mma_sync_tile.cuh"

namespace accelkernels {
namespace {

using namespace mma_tile;

template <typename T, bool kInputGrad>
__global__ void __launch_bounds__(kThreads) conv2d_implicit_gemm_kernel(ConvArgs<T> p) {
  extern __shared__ __align__(128) unsigned char smem_raw[];
  const unsigned smem = static_cast<unsigned>(__cvta_generic_to_shared(smem_raw));
  const int tid = threadIdx.x, lane = tid % 32, warp = tid / 32;
  const int wm0 = warp_row0(warp), wn0 = warp_col0(warp);

  // The gathered tensor ("source") and the result, in forward terms or transposed.
  const int64_t reduce_channels = (kInputGrad ? p.k : p.c) / p.groups;
  const int64_t cols = (kInputGrad ? p.c : p.k) / p.groups;
  const int64_t(&ss)[4] = kInputGrad ? p.y_stride : p.x_stride;
  const int64_t(&rs)[4] = kInputGrad ? p.x_stride : p.y_stride;
  const int64_t phases = gemm_phases<kInputGrad>(p);
  const int64_t g = blockIdx.z / phases;
  const GemmPhase phase = gemm_phase<kInputGrad>(p, blockIdx.z % phases);
  const T* src = (kInputGrad ? p.y : p.x) + g * reduce_channels;  // channel stride is 1
  T* res = kInputGrad ? p.x : p.y;
  const T* wmat = p.weight + g * cols * p.w_stride[0];  // (cols, R·S·reduce_channels), row-major
  const int64_t k_total = phase.taps_r * phase.taps_s * reduce_channels;
  const int64_t m0 = static_cast<int64_t>(blockIdx.x) * BM, n0 = static_cast<int64_t>(blockIdx.y) * BN;

  // This thread's chunks, the same in every stage: tile rows tid / 8 + 32 i of A (pixels) and of B
  // (columns), chunk column tid % 8 (8 channels of one tap).
  constexpr int kChunksPerRow = BK / 8, kRowsPerPass = kThreads / kChunksPerRow;
  const int chunk = tid % kChunksPerRow;
  GatherRow gather[kChunksPerThread];
#pragma unroll
  for (int i = 0; i < kChunksPerThread; ++i)
    gather[i] = gather_row<kInputGrad>(p, phase, m0 + tid / kChunksPerRow + i * kRowsPerPass);

  auto load_stage = [&](unsigned sa, unsigned sb, int64_t kt) {
    const int64_t kidx = kt * BK + chunk * 8;  // reduce_channels % 8 == 0: a chunk never straddles taps
    int64_t r, s, c;
    const int64_t kfull = split_reduction(phase, kidx, reduce_channels, p.s, r, s, c);
    const bool k_ok = kidx < k_total;
#pragma unroll
    for (int i = 0; i < kChunksPerThread; ++i) {
      const int row = tid / kChunksPerRow + i * kRowsPerPass;
      int64_t hh, ww;
      const bool ok = k_ok && gather_tap<kInputGrad>(p, gather[i], r, s, hh, ww);
      cp_async_16(sa + swizzled(row, chunk, BK * 2), ok ? src + gather[i].offset + hh * ss[2] + ww * ss[3] + c : src,
                  ok);
      const int64_t col = n0 + row;  // B: the same tap and channels of weight row `col`
      const bool b_ok = k_ok && col < cols;
      cp_async_16(sb + swizzled(row, chunk, BK * 2), b_ok ? wmat + col * p.w_stride[0] + kfull : wmat, b_ok);
    }
  };
  float acc[MT][NT][4] = {};
  mainloop<T, true, true>(smem, (k_total + BK - 1) / BK, wm0, wn0, lane, load_stage, acc);

#pragma unroll
  for (int mt = 0; mt < MT; ++mt)
#pragma unroll
    for (int half = 0; half < 2; ++half) {
      int64_t n, oh, ow;
      if (!result_pixel(phase, p.n, m0 + wm0 + acc_row(lane, mt, half * 2), n, oh, ow)) continue;
      T* out = res + n * rs[0] + oh * rs[2] + ow * rs[3];
#pragma unroll
      for (int nt = 0; nt < NT; ++nt)
#pragma unroll
        for (int e = half * 2; e < half * 2 + 2; ++e) {
          const int64_t col = n0 + wn0 + acc_col(lane, nt, e);
          if (col >= cols) continue;
          const int64_t ch = g * cols + col;
          float v = acc[mt][nt][e];
          if (!kInputGrad && p.bias != nullptr) v += to_float(p.bias[ch]);
          out[ch * rs[1]] = from_float<T>(kInputGrad ? v : apply_activation(v, p.activation));
        }
    }
}

template <typename T>
__global__ void __launch_bounds__(kThreads) conv2d_implicit_gemm_weight_grad_kernel(ConvArgs<T> p,
                                                                                    int64_t pixels_per_split) {
  extern __shared__ __align__(128) unsigned char smem_raw[];
  const unsigned smem = static_cast<unsigned>(__cvta_generic_to_shared(smem_raw));
  const int tid = threadIdx.x, lane = tid % 32, warp = tid / 32;
  const int wm0 = warp_row0(warp), wn0 = warp_col0(warp);

  const int64_t kg = p.k / p.groups, cg = p.c / p.groups, taps = p.r * p.s;
  const int64_t m_tiles = (kg + BM - 1) / BM;
  const int64_t m0 = (blockIdx.x % m_tiles) * BM, n0 = (blockIdx.x / m_tiles) * BN;
  const int64_t g = blockIdx.y / taps, tap = blockIdx.y % taps, r = tap / p.s, s = tap % p.s;
  const int64_t pixels = p.n * p.p * p.q;
  const int64_t begin = blockIdx.z * pixels_per_split, end = std::min(pixels, begin + pixels_per_split);
  const T* dy = p.y + g * kg;             // (pixels, K) row-major: contiguous channels_last
  const T* x = p.x + (g * cg);            // channels_last: channel stride 1

  // B chunks: tile rows (pixels) tid / 16 + 16 i, chunk column tid % 16 (8 input channels).
  constexpr int kChunksPerRow = BN / 8, kRowsPerPass = kThreads / kChunksPerRow;
  const int chunk = tid % kChunksPerRow;
  const int64_t c = n0 + chunk * 8;
  const bool c_ok = c < cg;

  auto load_stage = [&](unsigned sa, unsigned sb, int64_t kt) {
    const int64_t pix0 = begin + kt * BK;
    load_operand_tile<T, true>(sa, dy, pix0, m0, end, kg, p.k, tid);
#pragma unroll
    for (int i = 0; i < kChunksPerThread; ++i) {
      const int row = tid / kChunksPerRow + i * kRowsPerPass;
      const int64_t pixel = pix0 + row;
      int64_t n, hh, ww;
      const bool ok = c_ok && pixel < end && weight_grad_source(p, pixel, r, s, n, hh, ww);
      const T* ptr = ok ? x + n * p.x_stride[0] + hh * p.x_stride[2] + ww * p.x_stride[3] + c : x;
      cp_async_16(sb + swizzled(row, chunk, BN * 2), ptr, ok);
    }
  };
  float acc[MT][NT][4] = {};
  mainloop<T, false, false>(smem, (end - begin + BK - 1) / BK, wm0, wn0, lane, load_stage, acc);

  // Partial sums: workspace[split][group][tap][k][c], fp32.
  float* out = p.workspace + ((static_cast<int64_t>(blockIdx.z) * p.groups + g) * taps + tap) * kg * cg;
#pragma unroll
  for (int mt = 0; mt < MT; ++mt)
#pragma unroll
    for (int nt = 0; nt < NT; ++nt)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int64_t row = m0 + wm0 + acc_row(lane, mt, e), col = n0 + wn0 + acc_col(lane, nt, e);
        if (row < kg && col < cg) out[row * cg + col] = acc[mt][nt][e];
      }
}

// forward (kInputGrad = false) and input_grad: rows = result pixels, columns = its channels per group.
template <typename T, bool kInputGrad>
void launch_gather_gemm(const ConvArgs<T>& args, cudaStream_t stream) {
  auto kernel = conv2d_implicit_gemm_kernel<T, kInputGrad>;
  allow_full_smem(kernel);
  // Grid x covers the largest phase (the first); blocks past a smaller phase's rows store nothing.
  const GemmPhase first = gemm_phase<kInputGrad>(args, 0);
  const int64_t rows = args.n * first.rows_h * first.rows_w;
  const int64_t cols = (kInputGrad ? args.c : args.k) / args.groups;
  const dim3 grid(static_cast<unsigned>((rows + BM - 1) / BM), static_cast<unsigned>((cols + BN - 1) / BN),
                  static_cast<unsigned>(args.groups * gemm_phases<kInputGrad>(args)));
  kernel<<<grid, kThreads, kSmemBytes, stream>>>(args);
}

}  // namespace

template <typename T>
void launch_conv2d_implicit_gemm(const ConvArgs<T>& args, cudaStream_t stream) {
  launch_gather_gemm<T, false>(args, stream);
}

template <typename T>
void launch_conv2d_implicit_gemm_input_grad(const ConvArgs<T>& args, cudaStream_t stream) {
  launch_gather_gemm<T, true>(args, stream);
}

template <typename T>
void launch_conv2d_implicit_gemm_weight_grad(const ConvArgs<T>& args, cudaStream_t stream) {
  auto kernel = conv2d_implicit_gemm_weight_grad_kernel<T>;
  allow_full_smem(kernel);
  const int64_t kg = args.k / args.groups, cg = args.c / args.groups, taps = args.r * args.s;
  const int64_t pixels = args.n * args.p * args.q;
  // Slices of whole BK steps; the host sized the workspace for args.splits of them.
  const int64_t per_split = (((pixels + args.splits - 1) / args.splits + BK - 1) / BK) * BK;
  const int64_t splits = (pixels + per_split - 1) / per_split;
  const dim3 grid(static_cast<unsigned>(((kg + BM - 1) / BM) * ((cg + BN - 1) / BN)),
                  static_cast<unsigned>(args.groups * taps), static_cast<unsigned>(splits));
  kernel<<<grid, kThreads, kSmemBytes, stream>>>(args, per_split);
  launch_weight_grad_reduce(args, splits, stream);
}

#define AK_INSTANTIATE(T)                                                                         \
  template void launch_conv2d_implicit_gemm<T>(const ConvArgs<T>&, cudaStream_t);                \
  template void launch_conv2d_implicit_gemm_input_grad<T>(const ConvArgs<T>&, cudaStream_t);     \
  template void launch_conv2d_implicit_gemm_weight_grad<T>(const ConvArgs<T>&, cudaStream_t);
AK_INSTANTIATE(__half)
AK_INSTANTIATE(__nv_bfloat16)
#undef AK_INSTANTIATE

}  // namespace accelkernels
