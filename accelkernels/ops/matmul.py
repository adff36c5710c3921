"""accelkernels.matmul: torch.matmul's semantics (1-D to N-D, batch broadcasting) with a choice of backend.

One registered op, ``accelkernels::matmul(a, b, backend)``; its backward calls the same op for
both gradients, so a backend's GEMM kernel serves forward and backward alike.
"""

from __future__ import annotations

import math

import torch

from ..backends import Problem, autotune, check_name, resolve
from ..backends import torch_backend as reference
from . import _shortcut
from ._checks import autocast, check_same, check_tensor, fail

OP = "matmul"


def output_shape(a_shape, b_shape) -> list:
    """torch.matmul's output shape; raises InvalidArgumentError on a mismatch."""
    a_vec, b_vec = len(a_shape) == 1, len(b_shape) == 1
    k_a = a_shape[-1]
    k_b = b_shape[0] if b_vec else b_shape[-2]
    if k_a != k_b:
        fail(OP, f"a's last dim ({k_a}) must equal b's {'only' if b_vec else 'second-to-last'} dim ({k_b}); "
                 f"got shapes {list(a_shape)} and {list(b_shape)}")
    a_batch = [] if a_vec else list(a_shape[:-2])
    b_batch = [] if b_vec else list(b_shape[:-2])
    if not a_batch or not b_batch:  # nothing to broadcast (torch.broadcast_shapes costs ~8 us per call)
        batch = a_batch or b_batch
    else:
        try:
            batch = list(torch.broadcast_shapes(torch.Size(a_batch), torch.Size(b_batch)))
        except RuntimeError:
            fail(OP, f"the batch dims of a {a_batch} and b {b_batch} do not broadcast; got shapes "
                     f"{list(a_shape)} and {list(b_shape)}")
    return batch + ([] if a_vec else [a_shape[-2]]) + ([] if b_vec else [b_shape[-1]])


def matmul_problem(a, b, run=True) -> Problem:
    """What auto times for this call (autotune.matmul_key): a kernel backend through the registered op,
    the reference as torch.matmul itself (see conv2d.forward_problem)."""

    def work(name: str):
        return reference.matmul(a, b) if name == "torch" else matmul_op(a, b, name)

    return Problem(lambda: autotune.matmul_key(a, b), work if run else None)


@torch.library.custom_op("accelkernels::matmul", mutates_args=())
def matmul_op(a: torch.Tensor, b: torch.Tensor, backend: str) -> torch.Tensor:
    impl = resolve(OP, backend, (a, b), problem=matmul_problem(a, b))
    autotune.ran(OP, impl.name)
    return impl.matmul(a, b).contiguous()


@matmul_op.register_fake
def _(a, b, backend):
    return a.new_empty(output_shape(a.shape, b.shape))


def _setup_context(ctx, inputs, output):
    a, b, backend = inputs
    ctx.backend = backend
    ctx.save_for_backward(a, b)


def _backward(ctx, grad):
    a, b = ctx.saved_tensors
    need_a, need_b = ctx.needs_input_grad[:2]
    # Work on the 2-D-or-more forms torch.matmul promotes vectors to, then undo the promotion.
    a2 = a.unsqueeze(0) if a.dim() == 1 else a
    b2 = b.unsqueeze(-1) if b.dim() == 1 else b
    g = grad.unsqueeze(-1) if b.dim() == 1 else grad  # b first: a 0-D grad (vector·vector) -> (1,) -> (1, 1)
    g = g.unsqueeze(-2) if a.dim() == 1 else g
    grad_a = grad_b = None
    # For complex tensors torch's gradients are dC @ B^H and A^H @ dC (conj() is a free view, and
    # a no-op for real dtypes).
    if need_a:
        # dA = dC @ B^T, summed over the dims along which A was broadcast.
        grad_a = matmul_op(g, b2.mT.conj(), ctx.backend).sum_to_size(a2.shape).reshape(a.shape)
    if need_b:
        if b2.dim() == 2 and g.dim() > 2:
            # B was shared by every batch: one GEMM over the folded batch instead of a sum of GEMMs.
            # The row count is explicit: with K or N zero, reshape(-1, 0) would be ambiguous.
            k, n = b2.shape
            rows = math.prod(g.shape[:-1])
            dB = matmul_op(a2.expand(*g.shape[:-1], k).reshape(rows, k).mT.conj(), g.reshape(rows, n), ctx.backend)
        else:
            dB = matmul_op(a2.mT.conj(), g, ctx.backend).sum_to_size(b2.shape)
        grad_b = dB.reshape(b.shape)
    return grad_a, grad_b, None


matmul_op.register_autograd(_backward, setup_context=_setup_context)


def matmul(a: torch.Tensor, b: torch.Tensor, *, backend: str = "auto") -> torch.Tensor:
    """Matrix product with ``torch.matmul``'s semantics.

    Args:
        a: (..., M, K), or (K,) treated as a row vector and dropped from the result.
        b: (..., K, N), or (K,) treated as a column vector and dropped from the result.
            Batch dims broadcast.
        backend: "auto" (the current default, see ``use_backend``), "torch", "triton" or "cuda".

    Returns:
        (broadcast batch..., M, N), contiguous, in the inputs' dtype (the autocast dtype under
        ``torch.autocast``).

    Dtypes: every dtype torch's own op computes on that device (integer and complex too, on the
    reference backend); where torch has none, a NotImplementedError naming the arguments. The kernel
    backends take float16/bfloat16/float32 and refuse others (BackendUnavailableError), which
    ``"auto"`` sends to the reference.
    """
    check_name(backend)
    check_tensor(OP, "a", a)
    check_tensor(OP, "b", b)
    if a.dim() == 0 or b.dim() == 0:
        fail(OP, f"both arguments must be at least 1-D, got a of shape {list(a.shape)} and b of shape {list(b.shape)}")
    a, b = autocast(a, b)
    check_same(OP, "a", a, "b", b)
    output_shape(a.shape, b.shape)
    if _shortcut.reference_directly(OP, backend, (a, b), matmul_problem(a, b)):
        return reference.matmul(a, b)
    return matmul_op(a, b, backend)
