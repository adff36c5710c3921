"""Backend choice: availability, the default and its overrides, explicit requests, fallback."""

from __future__ import annotations

import warnings

import pytest
import torch

import accelkernels as ak
from accelkernels import backends
from accelkernels.backends.cuda_backend import arch_runs_on


def test_available_backends_reports_every_name_with_a_reason():
    table = ak.available_backends()
    assert set(table) == {"torch", "triton", "cuda", "auto"}
    assert table["torch"]["available"] is True
    for name, entry in table.items():
        assert isinstance(entry["available"], bool)
        assert entry["reason"], f"{name} has no reason"
    if not torch.cuda.is_available():
        assert table["cuda"]["available"] is False
        assert "GPU" in table["cuda"]["reason"]


def test_explicit_backend_that_cannot_serve_raises_with_the_reason():
    a, b = torch.randn(3, 4), torch.randn(4, 5)
    if torch.cuda.is_available():
        pytest.skip("on a GPU machine the cuda backend may serve; covered by the GPU tests")
    with pytest.raises(ak.BackendUnavailableError, match="backend='cuda' cannot serve this call: no CUDA GPU"):
        ak.matmul(a, b, backend="cuda")
    assert issubclass(ak.BackendUnavailableError, RuntimeError)


def test_triton_on_cpu_without_interpreter_raises(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    with pytest.raises(ak.BackendUnavailableError, match="TRITON_INTERPRET=1"):
        ak.matmul(torch.randn(3, 4), torch.randn(4, 5), backend="triton")


def test_triton_dtype_it_cannot_serve_raises():
    with pytest.raises(ak.BackendUnavailableError, match="float64"):
        ak.matmul(torch.randn(3, 4, dtype=torch.float64), torch.randn(4, 5, dtype=torch.float64), backend="triton")


def test_auto_on_cpu_uses_the_reference_silently():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = ak.conv2d(torch.randn(1, 3, 6, 6), torch.randn(2, 3, 3, 3))
    assert out.shape == (1, 2, 4, 4)
    assert backends.resolve("conv2d", "auto", (torch.randn(1),)).name == "torch"


def test_use_backend_sets_the_default_and_restores_it(monkeypatch):
    monkeypatch.delenv("ACCELKERNELS_BACKEND", raising=False)
    assert backends.current_default() == "auto"
    with ak.use_backend("triton"):
        assert backends.current_default() == "triton"
        with ak.use_backend("torch"):
            assert backends.current_default() == "torch"
        assert backends.current_default() == "triton"
        # an explicit request through the default: Triton has no float64 kernels, so it raises
        with pytest.raises(ak.BackendUnavailableError, match="float64"):
            ak.conv2d(torch.randn(1, 3, 6, 6, dtype=torch.float64), torch.randn(2, 3, 3, 3, dtype=torch.float64))
    assert backends.current_default() == "auto"
    with pytest.raises(ValueError):
        with ak.use_backend("fastest"):
            pass


def test_environment_variable_sets_the_default(monkeypatch):
    monkeypatch.setenv("ACCELKERNELS_BACKEND", "triton")
    assert backends.current_default() == "triton"
    with ak.use_backend("torch"):  # the context manager wins over the variable
        assert backends.current_default() == "torch"
    monkeypatch.setenv("ACCELKERNELS_BACKEND", "bogus")
    with pytest.raises(ValueError, match="ACCELKERNELS_BACKEND"):
        ak.matmul(torch.randn(2, 2), torch.randn(2, 2))


def test_triton_backend_really_runs_the_triton_kernel(monkeypatch):
    """No aten matmul inside a backend="triton" call: the Triton launcher is what computes it."""
    from accelkernels.triton_kernels import matmul as triton_matmul

    calls = []
    real = triton_matmul.bmm
    monkeypatch.setattr(triton_matmul, "bmm", lambda *a, **k: calls.append(a[3]) or real(*a, **k))
    with torch.profiler.profile() as prof:
        ak.linear(torch.randn(3, 4), torch.randn(5, 4), torch.randn(5), activation="relu", backend="triton")
    assert calls == ["relu"]
    aten_gemms = [e.name for e in prof.events() if e.name in ("aten::mm", "aten::addmm", "aten::bmm", "aten::matmul")]
    assert aten_gemms == []


def test_auto_order_names_only_real_backends():
    for device_type, per_op in backends.AUTO_ORDER.items():
        assert set(per_op) == set(backends.OPS), device_type
        for op, order in per_op.items():
            assert all(name in backends.BACKENDS for name in order), (device_type, op)


@pytest.mark.parametrize(
    "arch_list,capability,expected",
    [
        ("8.0;9.0a", (9, 0), True),
        ("8.0;9.0a", (8, 6), True),  # sm_80 SASS runs on sm_86
        ("8.0;9.0a", (7, 5), False),
        ("8.0,9.0a", (10, 0), False),  # no PTX: nothing runs on Blackwell
        ("9.0a", (9, 1), False),  # arch-specific code runs on its exact arch only
        ("8.0+PTX", (10, 0), True),
        ("native", (12, 0), True),
    ],
)
def test_arch_list_matching(arch_list, capability, expected):
    assert arch_runs_on(arch_list, capability) is expected



def test_backends_modules_import_no_cycle():
    """No module of accelkernels/backends imports, at the top or inside a function, a module of the
    package that imports it back, directly or through others: a lazy import must not hide a circle."""
    import ast
    from pathlib import Path

    package = Path(backends.__file__).parent
    modules = {p.stem for p in package.glob("*.py")}

    def imported(name: str) -> set[str]:
        found = set()
        for node in ast.walk(ast.parse((package / f"{name}.py").read_text())):
            if isinstance(node, ast.Import):
                found |= {a.name.split(".")[2] for a in node.names if a.name.startswith("accelkernels.backends.")}
            elif isinstance(node, ast.ImportFrom):
                if node.level == 0 and (node.module or "").startswith("accelkernels.backends"):
                    path = node.module.split(".")[2:]
                elif node.level == 1:  # from .x import ..., from . import x
                    path = node.module.split(".") if node.module else []
                else:
                    continue
                # "from <package> import x": the submodule x, else a name of the package's __init__
                found |= {path[0]} if path else {a.name if a.name in modules else "__init__" for a in node.names}
        return (found & modules) - {name}

    imports = {name: imported(name) for name in modules}
    assert {"base", "cuda_backend"} <= imports["__init__"] and "base" in imports["cuda_backend"]  # the scan works

    def cycle_from(start: str) -> list[str] | None:
        paths = [[start, m] for m in sorted(imports[start])]
        seen = set()
        while paths:
            path = paths.pop()
            if path[-1] == start:
                return path
            if path[-1] not in seen:
                seen.add(path[-1])
                paths += [path + [m] for m in sorted(imports[path[-1]])]
        return None

    cycles = [" -> ".join(c) for c in map(cycle_from, sorted(modules)) if c]
    assert not cycles, f"import cycles in accelkernels/backends: {cycles}"
