"""The fused epilogue's activations, shared by every Triton kernel. Applied to fp32 accumulators."""

import triton
import triton.language as tl


@triton.jit
def apply_activation(x, ACTIVATION: tl.constexpr):
    """ACTIVATION is "none", "relu", "gelu" (exact erf form, as F.gelu) or "silu"."""
    if ACTIVATION == "relu":
        x = tl.maximum(x, 0.0)
    elif ACTIVATION == "gelu":
        x = 0.5 * x * (1.0 + tl.math.erf(x * 0.7071067811865476))
    elif ACTIVATION == "silu":
        x = x * tl.sigmoid(x)
    return x
