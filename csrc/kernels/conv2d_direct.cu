// The direct (SIMT) convolution family: forward, input gradient and weight gradient for any dtype
// (fp32 accumulation), any strides (NCHW, channels_last, views), every stride / padding / dilation /
// groups combination. The readable first rung of the conv kernels, and the fallback wherever the
// tensor-core kernels cannot serve (fp32, channel counts that are not multiples of 8).
//
// forward: a block computes an 8 x 16 tile of output pixels for 8 output channels of one image and
//   group; each thread owns one pixel and keeps 8 accumulators (register blocking over K). The input
//   patch the tile reads — ((8-1)·stride + (R-1)·dilation + 1) x (... 16 ...) pixels — and the 8
//   filters are staged in shared memory, a chunk of up to 8 input channels at a time, so each input
//   element is fetched from global memory once per block rather than by every thread whose window
//   covers it. When even one
//   channel's patch and filters do not fit in 44 KB (huge dilations or filters), the kernel reads
//   straight from global memory instead. Results go out through a shared-memory tile, in the order
//   that coalesces the stores for y's layout.
// input_grad: one thread per dx element, summing dy · w over the taps that reach it (h + pad - r·dil
//   must be a multiple of the stride).
// weight_grad: one block per weight element, its 256 threads splitting the N·P·Q reduction, then a
//   fixed-order tree sum (deterministic).
#include <algorithm>

#include "conv_index.cuh"
#include "epilogue.cuh"

namespace accelkernels {
namespace {

constexpr int TP = 8, TQ = 16, KT = 8;          // forward tile: 8 x 16 pixels x 8 output channels
constexpr int kFwdThreads = TP * TQ;            // one output pixel per thread
constexpr int kMaxChannelsPerStage = 8;
constexpr int kSmemBudgetFloats = 44 * 1024 / 4;  // + 4 KB of output tile: under 48 KB, no opt-in needed
constexpr int kThreads = 256;                     // input_grad, weight_grad

template <typename T, bool kStaged>
__global__ void __launch_bounds__(kFwdThreads)
    conv2d_direct_kernel(ConvArgs<T> p, int channels_per_stage, int patch_h, int patch_w) {
  extern __shared__ float smem[];  // [channels][patch_h][patch_w] input patch, then [KT][channels][R][S]
  __shared__ float out_tile[KT * kFwdThreads];  // the block's results, for the epilogue
  const int64_t tiles_q = (p.q + TQ - 1) / TQ, tiles_p = (p.p + TP - 1) / TP;
  int64_t t = blockIdx.x;
  const int64_t tq = t % tiles_q;
  t /= tiles_q;
  const int64_t tp = t % tiles_p, n = t / tiles_p;
  const int64_t cg = p.c / p.groups, kg = p.k / p.groups, k_blocks = (kg + KT - 1) / KT;
  const int64_t g = blockIdx.y / k_blocks, k0 = g * kg + (blockIdx.y % k_blocks) * KT, k_end = (g + 1) * kg;
  const int tid = threadIdx.x, ty = tid / TQ, tx = tid % TQ;
  const int64_t op = tp * TP + ty, oq = tq * TQ + tx;
  const int64_t h0 = tp * TP * p.stride_h - p.pad_h, w0 = tq * TQ * p.stride_w - p.pad_w;  // patch origin
  const T* x = p.x + n * p.x_stride[0] + g * cg * p.x_stride[1];
  const int64_t rs = p.r * p.s;

  float acc[KT] = {};
  for (int64_t c0 = 0; c0 < cg; c0 += channels_per_stage) {
    const int cc = static_cast<int>(std::min<int64_t>(channels_per_stage, cg - c0));
    if constexpr (kStaged) {
      float* patch = smem;
      float* filt = smem + channels_per_stage * patch_h * patch_w;
      const int patch_size = patch_h * patch_w;
      __syncthreads();  // the previous chunk has been consumed
      for (int i = tid; i < cc * patch_size; i += kFwdThreads) {
        const int ci = i / patch_size, ph = (i % patch_size) / patch_w, pw = i % patch_w;
        const int64_t hh = h0 + ph, ww = w0 + pw;
        const bool inside = hh >= 0 && hh < p.h && ww >= 0 && ww < p.w;
        patch[i] = inside ? to_float(x[(c0 + ci) * p.x_stride[1] + hh * p.x_stride[2] + ww * p.x_stride[3]]) : 0.0f;
      }
      for (int64_t i = tid; i < KT * cc * rs; i += kFwdThreads) {
        const int64_t kt = i / (cc * rs), ci = (i / rs) % cc, r = (i % rs) / p.s, s = i % p.s;
        filt[i] = k0 + kt < k_end ? to_float(p.weight[(k0 + kt) * p.w_stride[0] + (c0 + ci) * p.w_stride[1] +
                                                      r * p.w_stride[2] + s * p.w_stride[3]])
                                  : 0.0f;
      }
      __syncthreads();
      // Shared-memory indices fit in 32 bits (the host sized the stage to 48 KB).
      const int R = static_cast<int>(p.r), S = static_cast<int>(p.s), taps = R * S;
      const int dh = static_cast<int>(p.dil_h), dw = static_cast<int>(p.dil_w);
      for (int ci = 0; ci < cc; ++ci) {
        const float* row0 = patch + (ci * patch_h + ty * static_cast<int>(p.stride_h)) * patch_w +
                            tx * static_cast<int>(p.stride_w);
        const float* f0 = filt + ci * taps;
        for (int r = 0; r < R; ++r)
          for (int s = 0; s < S; ++s) {
            const float v = row0[r * dh * patch_w + s * dw];
#pragma unroll
            for (int kt = 0; kt < KT; ++kt) acc[kt] += v * f0[kt * cc * taps + r * S + s];
          }
      }
    } else {
      if (op >= p.p || oq >= p.q) continue;  // (no barrier in this branch)
      for (int ci = 0; ci < cc; ++ci)
        for (int64_t r = 0; r < p.r; ++r)
          for (int64_t s = 0; s < p.s; ++s) {
            const int64_t hh = op * p.stride_h - p.pad_h + r * p.dil_h, ww = oq * p.stride_w - p.pad_w + s * p.dil_w;
            if (hh < 0 || hh >= p.h || ww < 0 || ww >= p.w) continue;
            const float v = to_float(x[(c0 + ci) * p.x_stride[1] + hh * p.x_stride[2] + ww * p.x_stride[3]]);
#pragma unroll
            for (int kt = 0; kt < KT; ++kt)
              if (k0 + kt < k_end)
                acc[kt] += v * to_float(p.weight[(k0 + kt) * p.w_stride[0] + (c0 + ci) * p.w_stride[1] +
                                                 r * p.w_stride[2] + s * p.w_stride[3]]);
          }
    }
  }
  // Epilogue through shared memory: the 8 x 128 results are written out in the order that suits
  // y's layout (pixels fastest for NCHW, channels fastest for channels_last), and the activation is
  // applied in a plain loop (unrolled 8 times over registers, erf's branches made ptxas spill:
  // 12 bytes at sm_90a, ptxas 13.0).
#pragma unroll
  for (int kt = 0; kt < KT; ++kt) out_tile[kt * kFwdThreads + tid] = acc[kt];
  __syncthreads();
  const bool channels_fastest = is_channels_fastest(p.y_stride);
  for (int i = tid; i < KT * kFwdThreads; i += kFwdThreads) {
    const int kt = channels_fastest ? i % KT : i / kFwdThreads;
    const int pixel = channels_fastest ? i / KT : i % kFwdThreads;
    const int64_t k = k0 + kt, yp = tp * TP + pixel / TQ, yq = tq * TQ + pixel % TQ;
    if (k >= k_end || yp >= p.p || yq >= p.q) continue;
    const float v = out_tile[kt * kFwdThreads + pixel] + (p.bias != nullptr ? to_float(p.bias[k]) : 0.0f);
    p.y[offset_of(p.y_stride, n, k, yp, yq)] = from_float<T>(apply_activation(v, p.activation));
  }
}

template <typename T, bool kChannelsFastest>
__global__ void __launch_bounds__(kThreads) conv2d_direct_input_grad_kernel(ConvArgs<T> p) {
  const int64_t i = flat_thread_index();
  if (i >= p.n * p.c * p.h * p.w) return;
  const Nchw e = nchw_of(i, p.c, p.h, p.w, kChannelsFastest);
  const int64_t cg = p.c / p.groups, kg = p.k / p.groups, g = e.c / cg;
  float acc = 0.0f;
  for (int64_t r = 0; r < p.r; ++r) {
    const int64_t th = e.h + p.pad_h - r * p.dil_h;  // = op * stride_h for the output row it feeds
    if (th < 0 || th % p.stride_h != 0 || th / p.stride_h >= p.p) continue;
    for (int64_t s = 0; s < p.s; ++s) {
      const int64_t tw = e.w + p.pad_w - s * p.dil_w;
      if (tw < 0 || tw % p.stride_w != 0 || tw / p.stride_w >= p.q) continue;
      const T* dy = p.y + offset_of(p.y_stride, e.n, g * kg, th / p.stride_h, tw / p.stride_w);
      const T* w = p.weight + g * kg * p.w_stride[0] + (e.c - g * cg) * p.w_stride[1] + r * p.w_stride[2] +
                   s * p.w_stride[3];
      for (int64_t kk = 0; kk < kg; ++kk) acc += to_float(dy[kk * p.y_stride[1]]) * to_float(w[kk * p.w_stride[0]]);
    }
  }
  p.x[offset_of(p.x_stride, e.n, e.c, e.h, e.w)] = from_float<T>(acc);
}

template <typename T>
__global__ void __launch_bounds__(kThreads) conv2d_direct_weight_grad_kernel(ConvArgs<T> p) {
  __shared__ float partial[kThreads / 32];
  const int64_t cg = p.c / p.groups, kg = p.k / p.groups;
  int64_t i = blockIdx.x;  // the weight element (k, c, r, s)
  const int64_t s = i % p.s;
  i /= p.s;
  const int64_t r = i % p.r;
  i /= p.r;
  const int64_t c = i % cg, k = i / cg, g = k / kg;
  const int64_t pq = p.p * p.q;
  float acc = 0.0f;
  for (int64_t j = threadIdx.x; j < p.n * pq; j += kThreads) {  // pixels q fastest
    const int64_t n = j / pq, op = (j % pq) / p.q, oq = j % p.q;
    const int64_t hh = op * p.stride_h - p.pad_h + r * p.dil_h, ww = oq * p.stride_w - p.pad_w + s * p.dil_w;
    if (hh < 0 || hh >= p.h || ww < 0 || ww >= p.w) continue;
    acc += to_float(p.y[offset_of(p.y_stride, n, k, op, oq)]) *
           to_float(p.x[offset_of(p.x_stride, n, g * cg + c, hh, ww)]);
  }
#pragma unroll
  for (int offset = 16; offset > 0; offset /= 2) acc += __shfl_down_sync(0xffffffffu, acc, offset);
  if (threadIdx.x % 32 == 0) partial[threadIdx.x / 32] = acc;
  __syncthreads();
  if (threadIdx.x == 0) {
    float total = 0.0f;
    for (int wi = 0; wi < kThreads / 32; ++wi) total += partial[wi];
    p.weight[offset_of(p.w_stride, k, c, r, s)] = from_float<T>(total);
  }
}

}  // namespace

template <typename T>
void launch_conv2d_direct(const ConvArgs<T>& args, cudaStream_t stream) {
  const int64_t tiles = args.n * ((args.p + TP - 1) / TP) * ((args.q + TQ - 1) / TQ);
  const int64_t kg = args.k / args.groups;
  const dim3 grid(static_cast<unsigned>(tiles), static_cast<unsigned>(args.groups * ((kg + KT - 1) / KT)));
  // Shared memory per input channel staged: its patch and the 8 filters' taps for it.
  const int64_t patch_h = (TP - 1) * args.stride_h + (args.r - 1) * args.dil_h + 1;
  const int64_t patch_w = (TQ - 1) * args.stride_w + (args.s - 1) * args.dil_w + 1;
  const int64_t per_channel = patch_h * patch_w + KT * args.r * args.s;
  const int64_t channels = std::min<int64_t>({kMaxChannelsPerStage, args.c / args.groups,
                                              kSmemBudgetFloats / per_channel});
  if (channels >= 1) {
    conv2d_direct_kernel<T, true><<<grid, kFwdThreads, channels * per_channel * sizeof(float), stream>>>(
        args, static_cast<int>(channels), static_cast<int>(patch_h), static_cast<int>(patch_w));
  } else {
    conv2d_direct_kernel<T, false><<<grid, kFwdThreads, 0, stream>>>(args, kMaxChannelsPerStage, 0, 0);
  }
}

template <typename T>
void launch_conv2d_direct_input_grad(const ConvArgs<T>& args, cudaStream_t stream) {
  const int64_t total = args.n * args.c * args.h * args.w;
  const dim3 grid(static_cast<unsigned>((total + kThreads - 1) / kThreads));
  if (is_channels_fastest(args.x_stride)) conv2d_direct_input_grad_kernel<T, true><<<grid, kThreads, 0, stream>>>(args);
  else conv2d_direct_input_grad_kernel<T, false><<<grid, kThreads, 0, stream>>>(args);
}

template <typename T>
void launch_conv2d_direct_weight_grad(const ConvArgs<T>& args, cudaStream_t stream) {
  const int64_t total = args.k * (args.c / args.groups) * args.r * args.s;
  conv2d_direct_weight_grad_kernel<T><<<static_cast<unsigned>(total), kThreads, 0, stream>>>(args);
}

#define AK_INSTANTIATE(T)                                                                     \
  template void launch_conv2d_direct<T>(const ConvArgs<T>&, cudaStream_t);                   \
  template void launch_conv2d_direct_input_grad<T>(const ConvArgs<T>&, cudaStream_t);        \
  template void launch_conv2d_direct_weight_grad<T>(const ConvArgs<T>&, cudaStream_t);
AK_INSTANTIATE(float)
AK_INSTANTIATE(__half)
AK_INSTANTIATE(__nv_bfloat16)
#undef AK_INSTANTIATE

}  // namespace accelkernels
