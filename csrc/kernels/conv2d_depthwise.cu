// Depthwise convolution forward (groups = C, K = multiplier · C): a dedicated kernel rather than a
// degenerate GEMM. Each output element reads its own R·S window of one input channel, so there is
// no reuse across channels for tensor cores to exploit: the work is memory-bound and the kernel's
// job is to read x with coalesced accesses. One thread per output element, enumerated channels
// fastest when y is channels_last (neighbouring threads read neighbouring channels of one pixel)
// and width fastest otherwise; fp32 accumulation, the fused epilogue, any strides and arguments.
// Its gradients run on the direct family (conv2d_direct.cu), which handles any groups.
#include "conv_index.cuh"
#include "epilogue.cuh"

namespace accelkernels {
namespace {

constexpr int kThreads = 256;

template <typename T, bool kChannelsFastest>
__global__ void __launch_bounds__(kThreads) conv2d_depthwise_kernel(ConvArgs<T> p) {
  const int64_t i = flat_thread_index();
  if (i >= p.n * p.k * p.p * p.q) return;
  const Nchw e = nchw_of(i, p.k, p.p, p.q, kChannelsFastest);  // e.c is the output channel
  const int64_t multiplier = p.k / p.c, c = e.c / multiplier;
  const T* x = p.x + e.n * p.x_stride[0] + c * p.x_stride[1];
  const T* w = p.weight + e.c * p.w_stride[0];
  const int64_t h0 = e.h * p.stride_h - p.pad_h, w0 = e.w * p.stride_w - p.pad_w;
  float acc = 0.0f;
  for (int64_t r = 0; r < p.r; ++r) {
    const int64_t hh = h0 + r * p.dil_h;
    if (hh < 0 || hh >= p.h) continue;
    for (int64_t s = 0; s < p.s; ++s) {
      const int64_t ww = w0 + s * p.dil_w;
      if (ww < 0 || ww >= p.w) continue;
      acc += to_float(x[hh * p.x_stride[2] + ww * p.x_stride[3]]) * to_float(w[r * p.w_stride[2] + s * p.w_stride[3]]);
    }
  }
  if (p.bias != nullptr) acc += to_float(p.bias[e.c]);
  p.y[offset_of(p.y_stride, e.n, e.c, e.h, e.w)] = from_float<T>(apply_activation(acc, p.activation));
}

}  // namespace

template <typename T>
void launch_conv2d_depthwise(const ConvArgs<T>& args, cudaStream_t stream) {
  const int64_t total = args.n * args.k * args.p * args.q;
  const dim3 grid(static_cast<unsigned>((total + kThreads - 1) / kThreads));
  if (is_channels_fastest(args.y_stride)) conv2d_depthwise_kernel<T, true><<<grid, kThreads, 0, stream>>>(args);
  else conv2d_depthwise_kernel<T, false><<<grid, kThreads, 0, stream>>>(args);
}

template void launch_conv2d_depthwise<float>(const ConvArgs<float>&, cudaStream_t);
template void launch_conv2d_depthwise<__half>(const ConvArgs<__half>&, cudaStream_t);
template void launch_conv2d_depthwise<__nv_bfloat16>(const ConvArgs<__nv_bfloat16>&, cudaStream_t);

}  // namespace accelkernels
