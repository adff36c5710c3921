// The fused epilogue: bias and activation applied to the fp32 accumulator, then the single store.
#pragma once

#include "bmm_args.h"

namespace accelkernels {

__device__ __forceinline__ float apply_activation(float x, Activation act) {
  switch (act) {
    case Activation::kRelu:
      return fmaxf(x, 0.0f);
    case Activation::kGelu:  // exact erf form, as F.gelu's default
      return 0.5f * x * (1.0f + erff(x * 0.70710678118654752f));
    case Activation::kSilu:
      return x / (1.0f + expf(-x));
    default:
      return x;
  }
}

__device__ __forceinline__ float to_float(float x) { return x; }
__device__ __forceinline__ float to_float(__half x) { return __half2float(x); }
__device__ __forceinline__ float to_float(__nv_bfloat16 x) { return __bfloat162float(x); }
template <typename T> __device__ __forceinline__ T from_float(float x);
template <> __device__ __forceinline__ float from_float<float>(float x) { return x; }
template <> __device__ __forceinline__ __half from_float<__half>(float x) { return __float2half_rn(x); }
template <> __device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float x) {
  return __float2bfloat16_rn(x);
}

// act(acc + bias[col]) into C[batch, row, col] (C contiguous (batch, M, N)), rounded once; nothing
// outside (M x N), so kernels can call it for every element of their padded tile.
template <typename T>
__device__ __forceinline__ void store_output(const BmmArgs<T>& p, int64_t batch, int64_t row, int64_t col,
                                             float acc) {
  if (row < p.m && col < p.n) {
    if (p.bias != nullptr) acc += to_float(p.bias[col]);
    p.c[(batch * p.m + row) * p.n + col] = from_float<T>(apply_activation(acc, p.activation));
  }
}

}  // namespace accelkernels
