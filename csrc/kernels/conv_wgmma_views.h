// The implicit GEMMs the wgmma convolutions (conv2d_wgmma.cu) run, described as what their im2col TMA map and
// their filter map must express, and the check of every requirement those maps put on a problem. Host and
// kernel share these structs; plain C++ (conv_op.cpp includes this file too).
//
// One launch of the kernel is one GEMM: rows = result pixels (images x rows_h x rows_w), columns = result
// channels of one group, reduction = (tap, channel block). Its A operand is an im2col view of the source:
// result pixel (i, j) starts at source position (origin_h + i * step_h, origin_w + j * step_w), tap (a, b)
// adds (offset0_h + a * offset_step_h, offset0_w + b * offset_step_w), and the filter tap it multiplies is
// (filter_r0 + a * filter_step_r, filter_s0 + b * filter_step_s). An im2col map says exactly that: its
// bounding box runs from the lower corner (the origin) by the traversal strides (step) to the upper corner
// (origin + (rows - 1) * step + 1 - source size), and each copy adds the tap's offsets.
//
//   forward     source x (H, W), rows (P, Q), origin -pad, step stride, taps R x S, offsets r * dil, filter tap (r, s)
//   input_grad  one launch per stride phase (conv_gather.cuh: the result pixels h = ph + i * stride_h, and the
//               taps that reach them, every tap_step-th from r0): source dy (P, Q), step 1. Tap a of the phase
//               reads dy row i + base - a * delta, with base = (ph + pad - r0 * dil) / stride and delta =
//               tap_step * dil / stride (both exact), so origin = base - (taps - 1) * delta and the offsets
//               (taps - 1 - a) * delta run down from (taps - 1) * delta to 0 (im2col offsets are unsigned).
#pragma once

#include <algorithm>
#include <cstdint>

#include "conv_gather.cuh"

namespace accelkernels {

struct Im2colView {
  int64_t rows_h, rows_w;    // result pixels per image
  int64_t src_h, src_w;      // the source's spatial size
  int64_t origin_h, origin_w, step_h, step_w;
  int64_t taps_r, taps_s;
  int64_t offset0_h, offset0_w, offset_step_h, offset_step_w;
  int64_t filter_r0, filter_s0, filter_step_r, filter_step_s;
  int64_t upper_h() const { return origin_h + (rows_h - 1) * step_h + 1 - src_h; }
  int64_t upper_w() const { return origin_w + (rows_w - 1) * step_w + 1 - src_w; }
  int64_t max_offset_h() const { return std::max(offset0_h, offset0_h + (taps_r - 1) * offset_step_h); }
  int64_t max_offset_w() const { return std::max(offset0_w, offset0_w + (taps_s - 1) * offset_step_w); }
  bool empty() const { return rows_h == 0 || rows_w == 0; }  // no result pixels (a phase past the input)
  bool tapless() const { return taps_r == 0 || taps_s == 0; }  // result pixels no tap reaches: zeros
};

template <typename T>
Im2colView forward_view(const ConvArgs<T>& p) {
  Im2colView v{};
  v.rows_h = p.p, v.rows_w = p.q, v.src_h = p.h, v.src_w = p.w;
  v.origin_h = -p.pad_h, v.origin_w = -p.pad_w, v.step_h = p.stride_h, v.step_w = p.stride_w;
  v.taps_r = p.r, v.taps_s = p.s;
  v.offset0_h = v.offset0_w = 0, v.offset_step_h = p.dil_h, v.offset_step_w = p.dil_w;
  v.filter_r0 = v.filter_s0 = 0, v.filter_step_r = v.filter_step_s = 1;
  return v;
}

// One axis of an input_grad phase: its origin and offsets (see the top of the file).
inline void input_grad_axis(int64_t phase, int64_t pad, int64_t dil, int64_t stride, int64_t r0, int64_t tap_step,
                            int64_t taps, int64_t& origin, int64_t& offset0, int64_t& offset_step) {
  if (taps == 0) {  // nothing is read (the launcher encodes a stand-in map)
    origin = offset0 = offset_step = 0;
    return;
  }
  const int64_t base = (phase + pad - r0 * dil) / stride, delta = tap_step * dil / stride;
  origin = base - (taps - 1) * delta;
  offset0 = (taps - 1) * delta;
  offset_step = -delta;
}

template <typename T>
Im2colView input_grad_view(const ConvArgs<T>& p, int64_t phase) {
  const GemmPhase f = gemm_phase<true>(p, phase);
  Im2colView v{};
  v.rows_h = f.rows_h, v.rows_w = f.rows_w, v.src_h = p.p, v.src_w = p.q;
  v.step_h = v.step_w = 1;
  v.taps_r = f.taps_r, v.taps_s = f.taps_s;
  input_grad_axis(f.ph, p.pad_h, p.dil_h, p.stride_h, f.r0, f.tap_step_r, f.taps_r, v.origin_h, v.offset0_h,
                  v.offset_step_h);
  input_grad_axis(f.pw, p.pad_w, p.dil_w, p.stride_w, f.s0, f.tap_step_s, f.taps_s, v.origin_w, v.offset0_w,
                  v.offset_step_w);
  v.filter_r0 = f.r0, v.filter_s0 = f.s0, v.filter_step_r = f.tap_step_r, v.filter_step_s = f.tap_step_s;
  return v;
}

// Why a view's im2col map cannot be encoded (nullptr when it can): traversal strides 1..8, the 4-D map's
// corners -128..127, and its two tap offsets 8 bits each (16 bits shared by the spatial dims: CUTLASS's
// offset_limit = (1 << (16 / spatial dims)) - 1; our emulator rejects 255 as well, so 254 is the limit).
inline const char* im2col_view_unsupported_reason(const Im2colView& v) {
  if (v.empty() || v.tapless()) return nullptr;  // nothing launched / nothing loaded (the map is a stand-in)
  if (v.step_h < 1 || v.step_h > 8 || v.step_w < 1 || v.step_w > 8)
    return "strides must be 1..8 (the im2col map's traversal strides)";
  for (int64_t corner : {v.origin_h, v.origin_w, v.upper_h(), v.upper_w()})
    if (corner < -128 || corner > 127)
      return "padding or output geometry outside the im2col map's corner range (-128..127)";
  if (v.max_offset_h() >= 255 || v.max_offset_w() >= 255) return "filter taps beyond the 8-bit im2col offsets";
  return nullptr;
}

// Why the wgmma convolutions cannot serve this pass (nullptr when it can). Every pass: channels per group
// multiples of 8 (16-byte TMA rows), dense channels_last x and y on 16-byte boundaries (the maps' only
// layout), fewer than 2^31 pixels (32-bit TMA coordinates), and every launch's im2col view encodable.
// forward reads the filter as (K, R, S, C/groups); input_grad reads the host's regrouped Wt (C, R, S,
// K/groups), writes dx and reads dy (conv_args.h); weight_grad (conv2d_wgmma_weight_grad.cu) reads x
// through the forward's view and dy as a matrix, and writes dw through its strides (any layout).
template <typename T>
const char* conv_wgmma_unsupported_reason(const ConvArgs<T>& p, ConvPass pass) {
  auto aligned = [](const void* ptr) { return reinterpret_cast<uintptr_t>(ptr) % 16 == 0; };
  auto dense_nhwc = [](const int64_t (&st)[4], int64_t c, int64_t h, int64_t w) {
    return st[1] == 1 && st[3] == c && st[2] == w * c && st[0] == h * w * c;
  };
  const int64_t cg = p.c / p.groups, kg = p.k / p.groups;
  if (cg % 8 != 0 || kg % 8 != 0) return "channels per group (input and output) must be multiples of 8";
  if (!aligned(p.x) || !dense_nhwc(p.x_stride, p.c, p.h, p.w)) return "x must be a dense channels_last tensor";
  if (!aligned(p.y) || !dense_nhwc(p.y_stride, p.k, p.p, p.q)) return "y must be a dense channels_last tensor";
  const bool forward = pass == ConvPass::kForward;
  if (pass != ConvPass::kWeightGrad && (!aligned(p.weight) || !dense_nhwc(p.w_stride, forward ? cg : kg, p.r, p.s)))
    return "the filter must be dense channels_last";
  if (p.n * p.p * p.q >= (int64_t{1} << 31) || p.n * p.h * p.w >= (int64_t{1} << 31))
    return "more than 2^31 pixels (32-bit TMA coordinates)";
  if (pass != ConvPass::kInputGrad) return im2col_view_unsupported_reason(forward_view(p));
  for (int64_t phase = 0; phase < gemm_phases<true>(p); ++phase)
    if (const char* why = im2col_view_unsupported_reason(input_grad_view(p, phase))) return why;
  return nullptr;
}

}  // namespace accelkernels
