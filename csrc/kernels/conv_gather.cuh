// Where the implicit-GEMM convolutions gather from: the index math of their im2col loads, as
// __host__ __device__ functions so that a CPU test (tests/test_cuda_conv_gather.py) can build the
// same implicit matrices these functions describe and check them against torch's convolutions.
//
// The GEMM's rows are result pixels (forward: output pixels; input_grad: input pixels), its
// reduction index is (tap, channel) with the channel fastest: kidx = (r·S + s)·reduce_channels + c.
#pragma once

#include "conv_args.h"

namespace accelkernels {

// A result pixel: its batch offset in the gathered tensor (-1 past the last row) and the origin its
// taps count from (forward: the window's top-left input pixel; input_grad: (h + pad, w + pad)).
struct GatherRow {
  int64_t offset, h, w;
};

template <bool kInputGrad, typename T>
__host__ __device__ __forceinline__ GatherRow gather_row(const ConvArgs<T>& p, int64_t row) {
  const int64_t res_h = kInputGrad ? p.h : p.p, res_w = kInputGrad ? p.w : p.q;
  const int64_t n = row / (res_h * res_w), oh = (row / res_w) % res_h, ow = row % res_w;
  const int64_t batch_stride = kInputGrad ? p.y_stride[0] : p.x_stride[0];
  GatherRow g;
  g.offset = row < p.n * res_h * res_w ? n * batch_stride : -1;
  g.h = kInputGrad ? oh + p.pad_h : oh * p.stride_h - p.pad_h;
  g.w = kInputGrad ? ow + p.pad_w : ow * p.stride_w - p.pad_w;
  return g;
}

// Reduction index -> (r, s, channel within the group).
__host__ __device__ __forceinline__ void split_reduction(int64_t kidx, int64_t reduce_channels, int64_t s_size,
                                                         int64_t& r, int64_t& s, int64_t& c) {
  const int64_t tap = kidx / reduce_channels;
  c = kidx - tap * reduce_channels;
  r = tap / s_size;
  s = tap - r * s_size;
}

// The gathered tensor's pixel (hh, ww) that tap (r, s) of a row reads, and whether there is one
// (false: padding, or for input_grad a tap that misses the stride grid — zero-filled).
template <bool kInputGrad, typename T>
__host__ __device__ __forceinline__ bool gather_tap(const ConvArgs<T>& p, const GatherRow& row, int64_t r, int64_t s,
                                                    int64_t& hh, int64_t& ww) {
  if (kInputGrad) {  // output row (h + pad - r·dil) / stride, where that division is exact
    const int64_t th = row.h - r * p.dil_h, tw = row.w - s * p.dil_w;
    hh = th / p.stride_h;
    ww = tw / p.stride_w;
    return row.offset >= 0 && th >= 0 && tw >= 0 && hh * p.stride_h == th && ww * p.stride_w == tw && hh < p.p &&
           ww < p.q;
  }
  hh = row.h + r * p.dil_h;
  ww = row.w + s * p.dil_w;
  return row.offset >= 0 && hh >= 0 && hh < p.h && ww >= 0 && ww < p.w;
}

// weight_grad: the x pixel that output pixel `pixel` (flat over N·P·Q) reads through tap (r, s).
template <typename T>
__host__ __device__ __forceinline__ bool weight_grad_source(const ConvArgs<T>& p, int64_t pixel, int64_t r, int64_t s,
                                                            int64_t& n, int64_t& hh, int64_t& ww) {
  n = pixel / (p.p * p.q);
  const int64_t op = (pixel / p.q) % p.p, oq = pixel % p.q;
  hh = op * p.stride_h - p.pad_h + r * p.dil_h;
  ww = oq * p.stride_w - p.pad_w + s * p.dil_w;
  return pixel < p.n * p.p * p.q && hh >= 0 && hh < p.h && ww >= 0 && ww < p.w;
}

}  // namespace accelkernels
