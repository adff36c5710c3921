// Where the implicit-GEMM convolutions gather from: the index math of their im2col loads, as
// __host__ __device__ functions so that a CPU test (tests/test_cuda_conv_gather.py) can build the
// same implicit matrices these functions describe and check them against torch's convolutions.
//
// The GEMM's rows are result pixels (forward: output pixels; input_grad: input pixels of one stride
// phase), its reduction index is (tap, channel) with the channel fastest.
#pragma once

#include "conv_args.h"

namespace accelkernels {

// The part of the GEMM one block works on. forward: all of it. input_grad: one stride phase — the
// result pixels (h, w) with h ≡ ph (mod stride_h) and w ≡ pw (mod stride_w). Those share the taps that
// reach them (h + pad - r·dil must be a multiple of the stride: every tap_step-th r from r0), so the
// reduction runs over those taps only instead of zero-filling the others (3 of 4 at stride 2).
struct GemmPhase {
  int64_t ph, pw, step_h, step_w;  // result pixels: (ph + i·step_h, pw + j·step_w)
  int64_t rows_h, rows_w;          // i < rows_h, j < rows_w
  int64_t r0, s0, tap_step_r, tap_step_s, taps_r, taps_s;  // taps: r0 + a·tap_step_r, a < taps_r (same for s)
};

__host__ __device__ __forceinline__ int64_t gcd64(int64_t a, int64_t b) {
  while (b != 0) {
    const int64_t t = a % b;
    a = b;
    b = t;
  }
  return a;
}

// The taps r in [0, size) with (offset - r·dil) a multiple of stride: first, step, count (0: none).
__host__ __device__ __forceinline__ void taps_on_grid(int64_t offset, int64_t dil, int64_t stride, int64_t size,
                                                      int64_t& first, int64_t& step, int64_t& count) {
  step = stride / gcd64(dil, stride);
  first = 0;
  while (first < step && first < size && ((offset - first * dil) % stride + stride) % stride != 0) ++first;
  count = first < step && first < size ? (size - 1 - first) / step + 1 : 0;
}

// Phases: forward 1; input_grad stride_h · stride_w (phase = ph · stride_w + pw).
template <bool kInputGrad, typename T>
__host__ __device__ __forceinline__ int64_t gemm_phases(const ConvArgs<T>& p) {
  return kInputGrad ? p.stride_h * p.stride_w : 1;
}

template <bool kInputGrad, typename T>
__host__ __device__ __forceinline__ GemmPhase gemm_phase(const ConvArgs<T>& p, int64_t phase) {
  GemmPhase f;
  if (!kInputGrad) {
    f.ph = f.pw = f.r0 = f.s0 = 0;
    f.step_h = f.step_w = f.tap_step_r = f.tap_step_s = 1;
    f.rows_h = p.p, f.rows_w = p.q, f.taps_r = p.r, f.taps_s = p.s;
    return f;
  }
  f.ph = phase / p.stride_w, f.pw = phase % p.stride_w;
  f.step_h = p.stride_h, f.step_w = p.stride_w;
  f.rows_h = f.ph < p.h ? (p.h - f.ph + p.stride_h - 1) / p.stride_h : 0;
  f.rows_w = f.pw < p.w ? (p.w - f.pw + p.stride_w - 1) / p.stride_w : 0;
  taps_on_grid(f.ph + p.pad_h, p.dil_h, p.stride_h, p.r, f.r0, f.tap_step_r, f.taps_r);
  taps_on_grid(f.pw + p.pad_w, p.dil_w, p.stride_w, p.s, f.s0, f.tap_step_s, f.taps_s);
  return f;
}

// GEMM row `row` of a phase -> the result pixel (n, oh, ow); false past the phase's last row.
__host__ __device__ __forceinline__ bool result_pixel(const GemmPhase& f, int64_t batch, int64_t row, int64_t& n,
                                                      int64_t& oh, int64_t& ow) {
  const int64_t per_image = f.rows_h * f.rows_w;
  if (per_image == 0 || row >= batch * per_image) return false;
  n = row / per_image;
  oh = f.ph + ((row / f.rows_w) % f.rows_h) * f.step_h;
  ow = f.pw + (row % f.rows_w) * f.step_w;
  return true;
}

// A result pixel: its batch offset in the gathered tensor (-1 past the last row) and the origin its
// taps count from (forward: the window's top-left input pixel; input_grad: (h + pad, w + pad)).
struct GatherRow {
  int64_t offset, h, w;
};

template <bool kInputGrad, typename T>
__host__ __device__ __forceinline__ GatherRow gather_row(const ConvArgs<T>& p, const GemmPhase& f, int64_t row) {
  int64_t n = 0, oh = 0, ow = 0;
  const bool inside = result_pixel(f, p.n, row, n, oh, ow);
  GatherRow g;
  g.offset = inside ? n * (kInputGrad ? p.y_stride[0] : p.x_stride[0]) : -1;
  g.h = kInputGrad ? oh + p.pad_h : oh * p.stride_h - p.pad_h;
  g.w = kInputGrad ? ow + p.pad_w : ow * p.stride_w - p.pad_w;
  return g;
}

// Reduction index of a phase -> (r, s, channel within the group) and the index of that (tap,
// channel) in the full (R, S, channels) order the weight matrix is stored in.
__host__ __device__ __forceinline__ int64_t split_reduction(const GemmPhase& f, int64_t kidx, int64_t reduce_channels,
                                                            int64_t s_size, int64_t& r, int64_t& s, int64_t& c) {
  const int64_t tap = kidx / reduce_channels;
  c = kidx - tap * reduce_channels;
  const int64_t a = tap / f.taps_s;
  r = f.r0 + a * f.tap_step_r;
  s = f.s0 + (tap - a * f.taps_s) * f.tap_step_s;
  return (r * s_size + s) * reduce_channels + c;
}

// The gathered tensor's pixel (hh, ww) that tap (r, s) of a row reads, and whether there is one
// (false: padding, or for input_grad a tap off the stride grid — zero-filled).
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
