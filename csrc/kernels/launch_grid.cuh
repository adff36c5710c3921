// The launch grid every tiled GEMM kernel in csrc/kernels/ uses: (M tiles, N tiles, batch), with the
// batch in chunks of gridDim.z's limit. The kernel takes (args, first batch of the chunk).
#pragma once

#include <algorithm>

#include "bmm_args.h"

namespace accelkernels {

constexpr int64_t kMaxGridZ = 65535;  // CUDA's limit on gridDim.z: larger batches launch in chunks

// M tiles go on grid x (2^31 - 1), N tiles on y (65535, checked by the host code).
template <typename Kernel, typename T>
void launch_tiled(Kernel kernel, const BmmArgs<T>& args, int tile_m, int tile_n, dim3 block, size_t smem,
                  cudaStream_t stream) {
  for (int64_t start = 0; start < args.batch; start += kMaxGridZ) {
    const int64_t count = std::min(kMaxGridZ, args.batch - start);
    const dim3 grid(static_cast<unsigned>((args.m + tile_m - 1) / tile_m),
                    static_cast<unsigned>((args.n + tile_n - 1) / tile_n), static_cast<unsigned>(count));
    kernel<<<grid, block, smem, stream>>>(args, start);
  }
}

}  // namespace accelkernels
