// The convolution problem every CUDA conv2d kernel in csrc/kernels/ solves, and their launchers.
//
//   forward      y = act(conv(x, weight) + bias)      x (N, C, H, W), weight (K, C/groups, R, S), y (N, K, P, Q)
//   input_grad   dx = conv_transpose(dy, weight)      reads y (dy) and weight, writes x (dx)
//   weight_grad  dw = Σ_{n,p,q} dy ⊗ im2col(x)        reads y (dy) and x, writes weight (dw)
//
// One struct for all three: each pass reads two of (x, weight, y) and writes the third. Every tensor
// is addressed through its four element strides in (N, C, H, W) order, so NCHW, NHWC (channels_last)
// and strided views need no copy for the kernels that allow them (the tensor-core kernels need
// channels-last operands: conv_implicit_gemm_unsupported_reason). Plain C++ and CUDA runtime only.
#pragma once

#include <cstdint>

#include "bmm_args.h"

namespace accelkernels {

template <typename T>
struct ConvArgs {
  T* x;
  T* weight;
  T* y;
  const T* bias;  // forward only; nullptr: no bias
  int64_t n, c, h, w;  // input
  int64_t k, p, q;     // output channels and size
  int64_t r, s;        // filter size
  int64_t stride_h, stride_w, pad_h, pad_w, dil_h, dil_w, groups;
  int64_t x_stride[4], w_stride[4], y_stride[4];  // (N, C, H, W) / (K, C/groups, R, S) / (N, K, P, Q) order
  Activation activation;  // forward only
  float* workspace;       // implicit-GEMM weight_grad: splits x K x C/groups x R x S fp32 partial sums, or nullptr
  int64_t splits;         // weight_grad: how many slices the N·P·Q reduction is cut into
};

// Direct (SIMT) kernels, any dtype (fp32 accumulation), any strides and arguments: the readable
// first rung and the fallback for every problem the specialised kernels do not take.
template <typename T> void launch_conv2d_direct(const ConvArgs<T>& args, cudaStream_t stream);
template <typename T> void launch_conv2d_direct_input_grad(const ConvArgs<T>& args, cudaStream_t stream);
template <typename T> void launch_conv2d_direct_weight_grad(const ConvArgs<T>& args, cudaStream_t stream);

// Depthwise forward (groups = C, K = multiplier · C): one thread per output element, channels
// fastest when y is channels_last (coalesced), any dtype.
template <typename T> void launch_conv2d_depthwise(const ConvArgs<T>& args, cudaStream_t stream);

// Implicit GEMM on tensor cores (mma.sync, sm_80+, fp16/bf16): the im2col gather happens in the
// cp.async loads. Operands must satisfy conv_implicit_gemm_unsupported_reason.
template <typename T> void launch_conv2d_implicit_gemm(const ConvArgs<T>& args, cudaStream_t stream);
template <typename T> void launch_conv2d_implicit_gemm_input_grad(const ConvArgs<T>& args, cudaStream_t stream);
template <typename T> void launch_conv2d_implicit_gemm_weight_grad(const ConvArgs<T>& args, cudaStream_t stream);

// The implicit-GEMM kernels read 16-byte chunks of 8 channels: the channels per group (input and
// output) must be multiples of 8, and the tensors they gather from channels_last (channel stride 1,
// every other stride a multiple of 8) on 16-byte-aligned bases. forward and input_grad read the
// weight as a (columns, reduce-channels, R, S) matrix stored (columns, R, S, reduce-channels)
// contiguous, and weight/w_stride describe that matrix: for the forward it is the weight itself in
// channels_last order (K, C/groups, R, S); for input_grad the host passes the regrouped weight
// Wt[c, k % (K/groups), r, s] = weight[k, c % (C/groups), r, s] (columns = C, reduce = K/groups).
// weight_grad reads dy as one (N·P·Q, K) matrix, so dy must be contiguous channels_last there.
// Returns nullptr when they can serve.
enum class ConvPass { kForward, kInputGrad, kWeightGrad };

template <typename T>
const char* conv_implicit_gemm_unsupported_reason(const ConvArgs<T>& p, ConvPass pass) {
  auto aligned = [](const void* ptr) { return reinterpret_cast<uintptr_t>(ptr) % 16 == 0; };
  auto channels_last = [](const int64_t (&st)[4]) {
    return st[1] == 1 && st[0] % 8 == 0 && st[2] % 8 == 0 && st[3] % 8 == 0;
  };
  const int64_t cg = p.c / p.groups, kg = p.k / p.groups;
  if (cg % 8 != 0 || kg % 8 != 0) return "channels per group (input and output) must be multiples of 8";
  if (pass != ConvPass::kInputGrad && (!aligned(p.x) || !channels_last(p.x_stride)))
    return "x must be channels_last (channel stride 1, other strides multiples of 8) on a 16-byte boundary";
  if (pass != ConvPass::kForward && (!aligned(p.y) || !channels_last(p.y_stride)))
    return "dy must be channels_last (channel stride 1, other strides multiples of 8) on a 16-byte boundary";
  if (pass == ConvPass::kWeightGrad) {
    if (p.y_stride[3] != p.k || p.y_stride[2] != p.q * p.k || p.y_stride[0] != p.p * p.q * p.k)
      return "dy must be a contiguous channels_last tensor (read as one (N*P*Q, K) matrix)";
    return nullptr;
  }
  const int64_t red = pass == ConvPass::kInputGrad ? kg : cg;
  if (!aligned(p.weight) || p.w_stride[1] != 1 || p.w_stride[3] != red || p.w_stride[2] != p.s * red ||
      p.w_stride[0] != p.r * p.s * red)
    return "the weight matrix must be contiguous in (columns, R, S, channels) order on a 16-byte boundary";
  return nullptr;
}

// Hopper (sm_90a only): the implicit GEMMs on wgmma fed by TMA. forward and input_grad (conv2d_wgmma.cu):
// im2col TMA copies of the source (x, or dy) and tiled TMA copies of the filter; input_grad reads the
// regrouped Wt as above. weight_grad (conv2d_wgmma_weight_grad.cu): dy and im2col(x) as MN-major tiles,
// split-K into args.workspace (args.splits slices, as the implicit-GEMM weight_grad's) and the same
// reduction. Operands must satisfy conv_wgmma_unsupported_reason (conv_wgmma_views.h).
template <typename T> void launch_conv2d_wgmma(const ConvArgs<T>& args, cudaStream_t stream);
template <typename T> void launch_conv2d_wgmma_input_grad(const ConvArgs<T>& args, cudaStream_t stream);
template <typename T> void launch_conv2d_wgmma_weight_grad(const ConvArgs<T>& args, cudaStream_t stream);

}  // namespace accelkernels
