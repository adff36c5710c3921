// The fused epilogue's activations, applied to the fp32 accumulator before the single store.
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

}  // namespace accelkernels
