"""`accelkernels info` / `build`, and the compiled extension when it was built (CI builds it)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import accelkernels as ak
from accelkernels import _extension, cli


def test_info_text_lists_versions_extension_and_the_op_table(capsys):
    assert cli.main(["info"]) == 0
    out = capsys.readouterr().out
    assert f"torch         {torch.__version__}" in out
    for word in ("triton", "nvcc", "gpu", "extension", "op x backend", "conv2d", "matmul", "linear"):
        assert word in out
    assert re.search(r"extension\s+(ahead of time|compiled on first use|absent)", out)


def test_info_json_is_machine_readable(capsys):
    assert cli.main(["info", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["torch"] == torch.__version__
    assert set(data["backends"]) == {"torch", "triton", "cuda", "auto"}
    assert set(data["ops"]) == {"conv2d", "matmul", "linear"}
    assert data["ops"]["conv2d"]["torch"] == "yes"


def test_python_dash_m_entry_point():
    result = subprocess.run([sys.executable, "-m", "accelkernels", "info"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "op x backend" in result.stdout


def test_build_reports_ready_or_why_not(capsys):
    code = cli.main(["build"])
    out, err = capsys.readouterr()
    if _extension.status().loaded:
        assert code == 0 and "ready" in out
    else:
        assert code == 1 and "not available" in err
        if not torch.cuda.is_available():
            assert "no CUDA GPU visible" in err


def test_import_does_not_touch_the_gpu_or_compile():
    code = (
        "import torch, accelkernels\n"
        "from accelkernels import _extension\n"
        "assert not torch.cuda.is_initialized()\n"
        "assert _extension._status is None\n"
        "import sys; assert 'triton' not in sys.modules\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


# --- the compiled extension ---------------------------------------------------------------------------

status = _extension.status()
built = pytest.mark.skipif(not status.loaded, reason=f"CUDA extension not built here: {status.reason}")


def test_extension_is_built_when_ci_expects_it():
    if os.environ.get("ACCELKERNELS_EXPECT_EXTENSION") != "1":
        pytest.skip("set ACCELKERNELS_EXPECT_EXTENSION=1 where the build must have produced accelkernels._C")
    assert status.loaded, status.reason
    assert status.mode == _extension.AHEAD_OF_TIME


@built
def test_extension_build_info_and_registry():
    info = status.module.build_info()
    assert info["torch_version"] == torch.__version__
    assert info["cuda_version"] == torch.version.cuda
    kernels = status.module.kernels()
    names = [k["name"] for k in kernels]
    # the SIMT ladder in order, then the tensor-core kernels; then the conv2d kernels per pass
    gemm = [k["name"] for k in kernels if k["op"] == "cuda_bmm"]
    assert gemm == ["naive", "smem_tiled", "blocktile_1d", "blocktile_2d", "vectorized", "warptile", "mma_sync",
                    "wgmma"]
    conv = {(k["op"], k["name"]) for k in kernels if k["op"] != "cuda_bmm"}
    assert conv == {("cuda_conv2d", "direct"), ("cuda_conv2d", "depthwise"), ("cuda_conv2d", "implicit_gemm"),
                    ("cuda_conv2d_input_grad", "direct"), ("cuda_conv2d_input_grad", "implicit_gemm"),
                    ("cuda_conv2d_weight_grad", "direct"), ("cuda_conv2d_weight_grad", "implicit_gemm")}
    assert all(k["tensor_cores"] == (k["name"] == "implicit_gemm") for k in kernels if k["op"] != "cuda_bmm")
    kernels = [k for k in kernels if k["op"] == "cuda_bmm"]
    by_name = {k["name"]: k for k in kernels}
    assert by_name["mma_sync"]["dtypes"] == "float16,bfloat16" and by_name["mma_sync"]["min_arch"] == "8.0"
    assert by_name["mma_sync"]["tensor_cores"] and not by_name["warptile"]["tensor_cores"]
    assert by_name["wgmma"]["min_arch"] == "9.0a" and by_name["wgmma"]["tensor_cores"]
    assert all(k["dtypes"] == "float32" for k in kernels if k["name"] not in ("mma_sync", "wgmma"))
    # the kernel-level op has a CUDA implementation registered from C++
    for op in ("cuda_bmm", "cuda_conv2d", "cuda_conv2d_input_grad", "cuda_conv2d_weight_grad"):
        assert torch._C._dispatch_has_kernel_for_dispatch_key(f"accelkernels::{op}", "CUDA"), op


def _cuobjdump() -> str | None:
    try:
        import triton
    except ImportError:
        return None
    path = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump"
    return str(path) if path.exists() else shutil.which("cuobjdump")


def _sass_functions(sass: str) -> dict[str, str]:
    """cuobjdump --dump-sass output -> {mangled function name: its SASS}, per cubin (names repeat)."""
    functions: dict[str, str] = {}
    for block in sass.split("Function : ")[1:]:
        name, _, body = block.partition("\n")
        functions[name.strip()] = functions.get(name.strip(), "") + body
    return functions


@built
def test_sass_has_every_kernel_for_sm80_and_sm90a_without_spills():
    """Every kernel file has sm_80 and sm_90a code; the SIMT steps are FFMA loops, the mma.sync kernel
    and the implicit-GEMM convolutions use tensor cores (HMMA) and ldmatrix (LDSM) fed by cp.async
    (LDGSTS), the Hopper kernel wgmma (HGMMA) fed by TMA (UTMALDG) on mbarriers (SYNCS); nothing
    spills (LDL/STL)."""
    tool = _cuobjdump()
    if tool is None:
        pytest.skip("cuobjdump not found (it ships with Triton)")
    so = status.module.__file__
    elfs = subprocess.run([tool, "--list-elf", so], capture_output=True, text=True, check=True).stdout
    arch_list = status.module.build_info()["arch_list"]
    sources = sorted(p.stem for p in (Path(__file__).resolve().parent.parent / "csrc" / "kernels").glob("*.cu"))
    assert len(sources) == 11, sources
    for sm, arch in (("sm_80", "8.0"), ("sm_90a", "9.0a")):
        if arch in arch_list.split(","):
            for source in sources:
                assert f"{source}.{sm}.cubin" in elfs, (source, sm, elfs)
    sass = subprocess.run([tool, "--dump-sass", so], capture_output=True, text=True, check=True).stdout
    functions = _sass_functions(sass)
    for step in ("naive", "smem_tiled", "blocktile_1d", "blocktile_2d", "vectorized", "warptile"):
        bodies = [body for name, body in functions.items() if f"bmm_{step}_f32_kernel" in name]
        assert bodies and all("FFMA" in body for body in bodies), step
    mma = [body for name, body in functions.items() if "bmm_mma_sync_kernel" in name]
    assert len(mma) == 8  # 2 dtypes x 4 operand orientations (each body holds every arch's SASS)
    for body in mma:
        assert "HMMA" in body and "LDSM" in body and "LDGSTS.E.BYPASS.128" in body
    # implicit-GEMM conv: forward and input_grad x 2 dtypes, weight_grad x 2 dtypes
    conv_mma = [body for name, body in functions.items()
                if re.search(r"conv2d_implicit_gemm(_weight_grad)?_kernelI", name)]
    assert len(conv_mma) == 6, [name for name in functions if "conv2d_implicit_gemm" in name]
    for body in conv_mma:
        assert "HMMA" in body and "LDSM" in body and "LDGSTS.E.BYPASS.128" in body
    for family in ("conv2d_direct_kernel", "conv2d_direct_input_grad_kernel", "conv2d_direct_weight_grad_kernel",
                   "conv2d_depthwise_kernel"):
        bodies = [body for name, body in functions.items() if family in name]
        assert bodies and all("FFMA" in body or "FMUL" in body for body in bodies), family
    if "9.0a" in arch_list.split(","):
        hopper = [body for name, body in functions.items() if "bmm_wgmma_kernel" in name]
        assert len(hopper) == 2  # fp16, bf16
        for body in hopper:
            assert "HGMMA.64x128x16.F32" in body and "UTMALDG.3D" in body and "SYNCS" in body
    spills = [line for line in sass.splitlines() if re.search(r"\b(LDL|STL)\b", line)]
    assert not spills, f"local-memory traffic (register spills) in SASS: {spills[:3]}"


def test_backend_names_are_stable():
    assert ak.backends.BACKEND_NAMES == ("torch", "triton", "cuda", "auto")


def test_stale_build_is_reported_not_loaded():
    reason = _extension._stale_reason({"torch_version": "1.0.0"})
    assert "built for torch 1.0.0" in reason and "rebuild" in reason
    assert _extension._stale_reason({"torch_version": torch.__version__}) is None


def test_one_warning_when_a_gpu_is_present_but_the_extension_is_absent(monkeypatch):
    from accelkernels import backends

    absent = _extension.ExtensionStatus(_extension.ABSENT, "not built ahead of time")
    monkeypatch.setattr(_extension, "status", lambda **kw: absent)
    monkeypatch.setattr(backends, "_warned_not_built", False)
    with pytest.warns(RuntimeWarning, match="not built ahead of time"):
        backends._warn_once_if_gpu_without_kernels("cuda")
    assert backends._warned_not_built
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        backends._warn_once_if_gpu_without_kernels("cuda")  # once per process
        backends._warn_once_if_gpu_without_kernels("cpu")  # never for CPU tensors


@pytest.mark.skipif(os.environ.get("ACCELKERNELS_TEST_JIT") != "1", reason="set ACCELKERNELS_TEST_JIT=1 (about 2 minutes of nvcc)")
def test_compile_on_first_use_builds_the_same_sources(tmp_path):
    """The first-use build (torch's cpp_extension.load) compiles and loads csrc/ on its own; run in a
    fresh process so the ahead-of-time module, if any, is not loaded beside it."""
    code = (
        "from accelkernels import _extension\n"
        "s = _extension.jit_build('9.0a')\n"
        "assert s.loaded, s.reason\n"
        "assert s.mode == _extension.JIT\n"
        "ks = s.module.kernels()\n"
        "print(s.build_info['arch_list'], [k['name'] for k in ks if k['op'] == 'cuda_bmm'], len(ks))\n"
    )
    env = {**os.environ, "TORCH_EXTENSIONS_DIR": str(tmp_path), "MAX_JOBS": os.environ.get("MAX_JOBS", "2")}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=1200, env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert ("9.0a ['naive', 'smem_tiled', 'blocktile_1d', 'blocktile_2d', 'vectorized', 'warptile', 'mma_sync', "
            "'wgmma'] 15") in result.stdout  # + the 7 conv2d kernels


@pytest.mark.parametrize("script", [".ci/run", "bench/gpu_check.sh"])
def test_shell_scripts_parse(script):
    path = Path(__file__).resolve().parent.parent / script
    result = subprocess.run(["bash", "-n", str(path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
