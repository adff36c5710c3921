"""Compile Triton kernels for a GPU that is not here (sm_90 by default) and return their PTX.

Used by the CI test that every configuration the autotuner can pick compiles for Hopper, and that
the fp16/bf16 kernels use wgmma. Must run without TRITON_INTERPRET=1 (interpreted kernels cannot be
compiled): the test calls it in a fresh process.
"""

from __future__ import annotations

import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

TRITON_DTYPES = {"fp16": "*fp16", "bf16": "*bf16", "fp32": "*fp32"}


def compile_config(jit_fn, constexprs: dict, dtype: str, num_warps: int, num_stages: int,
                   capability: int = 90, types: dict | None = None, divisible: tuple[str, ...] = ()) -> str:
    """PTX of ``jit_fn`` with these constexprs; pointer args typed by dtype, other args i32, unless
    ``types`` names them (e.g. "tensordesc<bf16[1, 128, 64]>" for a TMA descriptor).

    On a GPU, Triton specializes each launch: integer args equal to 1 become constants and args
    divisible by 16 are marked so. To see the code a real layout gets, pass unit strides among the
    constexprs and name the 16-divisible args in ``divisible`` (e.g. NHWC's strides and channel counts)."""
    names = jit_fn.arg_names
    signature = {}
    for name in names:
        if types and name in types:
            signature[name] = types[name]
        elif name in constexprs:
            signature[name] = "constexpr"
        elif name.endswith("_ptr"):
            signature[name] = TRITON_DTYPES[dtype]
        else:
            signature[name] = "i32"
    attrs = {(names.index(name),): [["tt.divisibility", 16]] for name in divisible}
    source = ASTSource(fn=jit_fn, signature=signature,
                       constexprs={(names.index(k),): v for k, v in constexprs.items()}, attrs=attrs)
    compiled = triton.compile(source, target=GPUTarget("cuda", capability, 32),
                              options={"num_warps": num_warps, "num_stages": num_stages})
    return compiled.asm["ptx"]
