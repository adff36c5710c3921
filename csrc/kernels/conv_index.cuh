// Index helpers shared by the SIMT convolution kernels: flat thread index -> (n, c, h, w) in the
// order that makes a warp's accesses to the tensor it writes coalesced.
#pragma once

#include "conv_args.h"

namespace accelkernels {

struct Nchw {
  int64_t n, c, h, w;
};

// Element `i` of an (n, c, h, w)-shaped tensor, enumerated channels fastest (for channels_last
// tensors) or width fastest (for NCHW ones).
__device__ __forceinline__ Nchw nchw_of(int64_t i, int64_t c, int64_t h, int64_t w, bool channels_fastest) {
  Nchw e;
  if (channels_fastest) {
    e.c = i % c; i /= c;
    e.w = i % w; i /= w;
    e.h = i % h; e.n = i / h;
  } else {
    e.w = i % w; i /= w;
    e.h = i % h; i /= h;
    e.c = i % c; e.n = i / c;
  }
  return e;
}

__device__ __forceinline__ int64_t offset_of(const int64_t (&stride)[4], int64_t n, int64_t c, int64_t h,
                                             int64_t w) {
  return n * stride[0] + c * stride[1] + h * stride[2] + w * stride[3];
}

// Whether a tensor with these (N, C, H, W) strides is laid out channels last (C the fastest dim).
__host__ __device__ inline bool is_channels_fastest(const int64_t (&stride)[4]) {
  return stride[1] <= stride[3] && stride[1] <= stride[2];
}

// Blocks of kThreads covering `total` elements, with the flat index of a thread.
__device__ __forceinline__ int64_t flat_thread_index() {
  return static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
}

}  // namespace accelkernels
