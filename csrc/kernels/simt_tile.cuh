// Shared pieces of the SIMT fp32 ladder: bounds-checked strided element loads, the launch grid.
#pragma once

#include "bmm_args.h"
#include "epilogue.cuh"
#include "launch_grid.cuh"

namespace accelkernels {

// A[row, col] of a strided matrix, or 0 outside (rows x cols): the ragged edges read zeros.
__device__ __forceinline__ float load_or_zero(const float* base, int64_t row, int64_t col, int64_t rows, int64_t cols,
                                              int64_t stride_row, int64_t stride_col) {
  return (row < rows && col < cols) ? base[row * stride_row + col * stride_col] : 0.0f;
}

}  // namespace accelkernels
