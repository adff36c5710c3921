// Four consecutive elements at a time, for the vectorized SIMT steps: one 16-byte load (float4)
// when the operand is contiguous along that run and aligned, else four bounds-checked loads — the
// same values either way, so ragged edges and arbitrary strides stay correct.
#pragma once

#include "simt_tile.cuh"

namespace accelkernels {

// Whether 16-byte loads of runs of four along the contiguous dim are safe: unit stride there, every
// other stride (and the run's extent) a multiple of 4 elements, a 16-byte-aligned base.
inline bool quads_vectorizable(const float* base, int64_t stride_run, int64_t extent_run, int64_t stride_other,
                               int64_t stride_batch) {
  return stride_run == 1 && extent_run % 4 == 0 && stride_other % 4 == 0 && stride_batch % 4 == 0 &&
         reinterpret_cast<uintptr_t>(base) % 16 == 0;
}

// Elements (row, col .. col+3) of a (rows x cols) strided matrix, zeros outside.
template <bool kVector>
__device__ __forceinline__ float4 load_quad(const float* base, int64_t row, int64_t col, int64_t rows, int64_t cols,
                                            int64_t stride_row, int64_t stride_col) {
  if (kVector) {  // cols % 4 == 0 and col % 4 == 0: the run is wholly inside or wholly outside
    if (row < rows && col < cols) return *reinterpret_cast<const float4*>(base + row * stride_row + col);
    return make_float4(0.0f, 0.0f, 0.0f, 0.0f);
  }
  return make_float4(load_or_zero(base, row, col + 0, rows, cols, stride_row, stride_col),
                     load_or_zero(base, row, col + 1, rows, cols, stride_row, stride_col),
                     load_or_zero(base, row, col + 2, rows, cols, stride_row, stride_col),
                     load_or_zero(base, row, col + 3, rows, cols, stride_row, stride_col));
}

using SimtKernel = void (*)(BmmArgs<float>, int64_t);

// The vectorized kernels are templates on <A's runs along K vectorizable, B's runs along N
// vectorizable>; the caller passes the four instantiations, in that order: tt, tf, ft, ff.
inline void launch_with_quads(const BmmArgs<float>& p, SimtKernel tt, SimtKernel tf, SimtKernel ft, SimtKernel ff,
                              int tile_m, int tile_n, dim3 block, cudaStream_t stream) {
  const bool va = quads_vectorizable(p.a, p.a_stride_k, p.k, p.a_stride_m, p.a_stride_batch);
  const bool vb = quads_vectorizable(p.b, p.b_stride_n, p.n, p.b_stride_k, p.b_stride_batch);
  const SimtKernel kernel = va ? (vb ? tt : tf) : (vb ? ft : ff);
  launch_tiled(kernel, p, tile_m, tile_n, block, 0, stream);
}

}  // namespace accelkernels
