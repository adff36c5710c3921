// Shared pieces of the SIMT fp32 ladder: bounds-checked strided element loads, the batch chunking
// of the launch grid, and the epilogue's store.
#pragma once

#include <algorithm>

#include "bmm_args.h"
#include "epilogue.cuh"

namespace accelkernels {

constexpr int64_t kMaxGridZ = 65535;  // CUDA's limit on gridDim.z: larger batches launch in chunks

// A[row, col] of a strided matrix, or 0 outside (rows x cols): the ragged edges read zeros.
__device__ __forceinline__ float load_or_zero(const float* base, int64_t row, int64_t col, int64_t rows, int64_t cols,
                                              int64_t stride_row, int64_t stride_col) {
  return (row < rows && col < cols) ? base[row * stride_row + col * stride_col] : 0.0f;
}

// Launch `kernel` over (M tiles, N tiles, batch), the batch in chunks of gridDim.z's limit; the kernel
// takes (args, first batch of the chunk). M tiles go on grid x (2^31 - 1), N tiles on y (65535,
// checked by the host code).
template <typename Kernel>
void launch_tiled(Kernel kernel, const BmmArgs<float>& args, int tile_m, int tile_n, dim3 block, size_t smem,
                  cudaStream_t stream) {
  for (int64_t start = 0; start < args.batch; start += kMaxGridZ) {
    const int64_t count = std::min(kMaxGridZ, args.batch - start);
    const dim3 grid(static_cast<unsigned>((args.m + tile_m - 1) / tile_m),
                    static_cast<unsigned>((args.n + tile_n - 1) / tile_n), static_cast<unsigned>(count));
    kernel<<<grid, block, smem, stream>>>(args, start);
  }
}

}  // namespace accelkernels
