// The second half of every split-K weight gradient (conv2d_implicit_gemm.cu, conv2d_wgmma_weight_grad.cu):
// the slices' fp32 partial sums, workspace[split][group][tap][k][c], added in slice order (deterministic:
// the same bits for the same split count) and written into dw through its strides. One job: that sum.
#pragma once

#include <cstdint>

#include "conv_args.h"
#include "epilogue.cuh"

namespace accelkernels {
namespace {

constexpr int kReduceThreads = 256;

// dw[k, c, r, s] = Σ over slices, in slice order, of the partial sums; one thread per weight element.
template <typename T>
__global__ void __launch_bounds__(kReduceThreads) conv2d_weight_grad_reduce_kernel(ConvArgs<T> p, int64_t splits) {
  const int64_t kg = p.k / p.groups, cg = p.c / p.groups, taps = p.r * p.s;
  const int64_t total = p.k * cg * taps;
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= total) return;
  const int64_t c = i % cg, k = (i / cg) % p.k, tap = i / (cg * p.k);  // c fastest: coalesced reads
  const int64_t g = k / kg, slice = p.groups * taps * kg * cg;
  const float* part = p.workspace + ((g * taps + tap) * kg + (k - g * kg)) * cg + c;
  float sum = 0.0f;
  for (int64_t split = 0; split < splits; ++split) sum += part[split * slice];
  p.weight[k * p.w_stride[0] + c * p.w_stride[1] + (tap / p.s) * p.w_stride[2] + (tap % p.s) * p.w_stride[3]] =
      from_float<T>(sum);
}

template <typename T>
void launch_weight_grad_reduce(const ConvArgs<T>& args, int64_t splits, cudaStream_t stream) {
  const int64_t total = args.k * (args.c / args.groups) * args.r * args.s;
  conv2d_weight_grad_reduce_kernel<T><<<static_cast<unsigned>((total + kReduceThreads - 1) / kReduceThreads),
                                        kReduceThreads, 0, stream>>>(args, splits);
}

}  // namespace
}  // namespace accelkernels
