"""`accelkernels info` / `build` / `--version`, the environment variables (accelkernels/_env.py), where the
sources are, and the compiled extension when it was built (CI builds it; tests/test_packaging.py compiles
it on first use from an installed wheel)."""

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
from accelkernels import _env, _extension, cli

REPO = Path(__file__).resolve().parent.parent


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
                    "wgmma", "wgmma_v2", "wgmma_cluster"]
    conv = {(k["op"], k["name"]) for k in kernels if k["op"] != "cuda_bmm"}
    assert conv == {("cuda_conv2d", "direct"), ("cuda_conv2d", "depthwise"), ("cuda_conv2d", "implicit_gemm"),
                    ("cuda_conv2d", "wgmma"),
                    ("cuda_conv2d_input_grad", "direct"), ("cuda_conv2d_input_grad", "implicit_gemm"),
                    ("cuda_conv2d_input_grad", "wgmma"),
                    ("cuda_conv2d_weight_grad", "direct"), ("cuda_conv2d_weight_grad", "implicit_gemm"),
                    ("cuda_conv2d_weight_grad", "wgmma")}
    assert all(k["tensor_cores"] == (k["name"] in ("implicit_gemm", "wgmma")) for k in kernels if k["op"] != "cuda_bmm")
    kernels = [k for k in kernels if k["op"] == "cuda_bmm"]
    by_name = {k["name"]: k for k in kernels}
    assert by_name["mma_sync"]["dtypes"] == "float16,bfloat16" and by_name["mma_sync"]["min_arch"] == "8.0"
    assert by_name["mma_sync"]["tensor_cores"] and not by_name["warptile"]["tensor_cores"]
    for hopper in ("wgmma", "wgmma_v2", "wgmma_cluster"):
        assert by_name[hopper]["min_arch"] == "9.0a" and by_name[hopper]["tensor_cores"]
        assert by_name[hopper]["dtypes"] == "float16,bfloat16"
    assert all(k["dtypes"] == "float32" for k in kernels
               if k["name"] not in ("mma_sync", "wgmma", "wgmma_v2", "wgmma_cluster"))
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
    assert len(sources) == 15, sources
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
        # wgmma_v2: m64n256k16; the consumers wait with one wgmma group outstanding; the register split
        # (40 for the producer, 232 for the consumers: 0x28, 0xe8) from the block's pool; the epilogue by
        # stmatrix and TMA stores
        v2 = [body for name, body in functions.items() if "bmm_wgmma_v2_kernel" in name or "bmm_wgmma_cluster_kernel" in name]
        assert len(v2) == 4  # (wgmma_v2, wgmma_cluster) x (fp16, bf16)
        for body in v2:
            assert "HGMMA.64x256x16.F32" in body and "UTMALDG.3D" in body
            assert re.search(r"WARPGROUP\.DEPBAR\.LE gsb0, 0x1\b", body)
            assert "USETMAXREG.DEALLOC.CTAPOOL 0x28" in body and re.search(r"USETMAXREG\.TRY_ALLOC\.CTAPOOL \S+, 0xe8", body)
            assert "STSM.16.M88.4" in body and "UTMASTG.3D" in body
        # wgmma_cluster: B multicast by TMA, the cluster barrier, arrives on the peer's mbarriers
        for body in (body for name, body in functions.items() if "bmm_wgmma_cluster_kernel" in name):
            assert "UTMALDG.3D.MULTICAST" in body and "UCGABAR_ARV" in body and "UCGABAR_WAIT" in body
            assert "SYNCS.ARRIVE.TRANS64.RED.A1T0" in body
        # the Hopper convolutions: wgmma on im2col TMA loads of the source, tiled TMA loads of the filter; the
        # TMA-store epilogue (forward, input_grad at stride 1) or plain stores to a stride phase's pixels
        conv = {name: body for name, body in functions.items() if "conv2d_wgmma_kernel" in name}
        assert len(conv) == 4, list(conv)  # (fp16, bf16) x (TMA stores, phase stores)
        for name, body in conv.items():
            assert "HGMMA.64x256x16.F32" in body and "UTMALDG.4D.IM2COL" in body and "UTMALDG.3D" in body
            assert "USETMAXREG.DEALLOC.CTAPOOL 0x28" in body
            phase_store = re.search(r"Lb1E", name) is not None  # conv2d_wgmma_kernel<T, kPhaseStore = true>
            assert ("UTMASTG.3D" in body) != phase_store and (not phase_store or "STG.E" in body), name
            assert ".tnspA" not in body, name  # K-major operands
        # the weight gradient: wgmma on MN-major (transposed) tiles of dy (tiled TMA) and x (im2col TMA), the
        # fp32 partial sums stored as 64-bit pairs
        wgrad = [body for name, body in functions.items() if "conv2d_wgmma_weight_grad_kernel" in name]
        assert len(wgrad) == 2  # fp16, bf16
        for body in wgrad:
            assert re.search(r"HGMMA\.64x256x16\.F32\S* \S+, gdesc\[\S+\]\.tnspA\.tnspB", body)
            assert "UTMALDG.4D.IM2COL" in body and "UTMALDG.3D" in body and "STG.E.64" in body
            assert "USETMAXREG.DEALLOC.CTAPOOL 0x28" in body
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


@pytest.mark.parametrize("script", [".ci/run", "bench/gpu_check.sh"])
def test_shell_scripts_parse(script):
    path = Path(__file__).resolve().parent.parent / script
    result = subprocess.run(["bash", "-n", str(path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


# --- the command a packager and a first-time user meet ---------------------------------------------------

def test_version_has_one_source_of_truth(capsys):
    import importlib.metadata
    import tomllib

    with pytest.raises(SystemExit) as exit_:
        cli.main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.strip() == f"accelkernels {ak.__version__}"
    # pyproject takes the version from accelkernels/__init__.py; the installed metadata was made from it
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert "version" not in project["project"] and project["project"]["dynamic"] == ["version"]
    assert project["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "accelkernels.__version__"}
    assert importlib.metadata.version("accelkernels") == ak.__version__, "stale install: pip install -e . again"


def test_bare_command_prints_the_help(capsys):
    assert cli.main([]) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: accelkernels")
    for command in ("info", "build", "bench", "tune", "--version"):
        assert command in out


@pytest.mark.parametrize("gpu", [False, True], ids=["no-gpu", "gpu"])
def test_build_names_nvcc_when_nvcc_is_missing(monkeypatch, capsys, gpu):
    absent = _extension.ExtensionStatus(_extension.ABSENT, "not built ahead of time")
    monkeypatch.setattr(_extension, "status", lambda **kw: absent)
    monkeypatch.setattr(_extension, "cuda_home", lambda: None)
    monkeypatch.setattr(_extension, "nvcc_path", lambda: None)
    monkeypatch.setattr(torch.version, "cuda", "13.0")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: gpu)
    for var in ("ACCELKERNELS_BUILD_EMULATOR", "ACCELKERNELS_CUDA_EMULATE", "ACCELKERNELS_SKIP_CUDA_BUILD"):
        monkeypatch.delenv(var, raising=False)
    assert cli.main(["build"]) == 1
    err = capsys.readouterr().err
    assert "nvcc not found" in err and "CUDA_HOME" in err, err
    assert ("no CUDA GPU visible" in err) == (not gpu), err  # both problems at once, not one per attempt


# --- environment variables --------------------------------------------------------------------------------

# What the brief of issue 16 lists, at least; test_every_variable_read_is_in_the_table finds the rest.
EXPECTED_VARIABLES = {"ACCELKERNELS_BACKEND", "ACCELKERNELS_CUDA_EMULATE", "ACCELKERNELS_BUILD_EMULATOR",
                      "ACCELKERNELS_SKIP_CUDA_BUILD", "ACCELKERNELS_FORCE_CUDA", "ACCELKERNELS_TRITON_AUTOTUNE",
                      "ACCELKERNELS_EMULATOR_COVERAGE", "TRITON_INTERPRET", "TORCH_CUDA_ARCH_LIST", "CUDA_HOME",
                      "MAX_JOBS"}


def _variables_read_by_the_code() -> set[str]:
    """Names passed to os.environ / os.getenv / the _env readers in the package, setup.py and conftest."""
    reader = re.compile(r"""(?:environ\.get|environ\.setdefault|environ\[|getenv|\.flag|\.check)\(?\s*"""
                        r"""["']([A-Z][A-Z0-9_]+)["']""")
    files = [*(REPO / "accelkernels").rglob("*.py"), *(REPO / "triton_kernels").rglob("*.py"), REPO / "setup.py",
             REPO / "tests" / "conftest.py"]
    names = set()
    for f in files:
        text = f.read_text()
        names |= set(reader.findall(text))
        names |= {n for group in re.findall(r"for var in \(([^)]*)\)", text) for n in re.findall(r'"(\w+)"', group)}
    return names


def test_every_variable_read_is_in_the_table():
    read = _variables_read_by_the_code()
    assert EXPECTED_VARIABLES <= read  # the scan itself still sees what it must
    assert read <= set(_env.VARIABLES), f"read but not in accelkernels/_env.py: {sorted(read - set(_env.VARIABLES))}"
    assert EXPECTED_VARIABLES <= set(_env.VARIABLES)


def test_backend_choices_are_the_backend_names():
    assert _env.VARIABLES["ACCELKERNELS_BACKEND"].choices == ak.backends.BACKEND_NAMES


def test_info_shows_every_variable_with_its_value(monkeypatch, capsys):
    monkeypatch.setenv("ACCELKERNELS_BACKEND", "torch")
    monkeypatch.delenv("ACCELKERNELS_FORCE_CUDA", raising=False)
    monkeypatch.setenv("ACCELKERNELS_CUDA_EMULATE", "off")
    assert cli.main(["info"]) == 0
    out = capsys.readouterr().out
    for name, var in _env.VARIABLES.items():
        assert re.search(rf"^  {name} +\S", out, re.M), name
        assert var.means in out
    assert re.search(r"^  ACCELKERNELS_BACKEND +torch ", out, re.M)
    assert re.search(r"^  ACCELKERNELS_FORCE_CUDA +unset \(off\) ", out, re.M)
    assert re.search(r"^  ACCELKERNELS_CUDA_EMULATE +off \(off\) ", out, re.M)
    assert cli.main(["info", "--json"]) == 0
    env = json.loads(capsys.readouterr().out)["environment"]
    assert set(env) == set(_env.VARIABLES)
    assert env["ACCELKERNELS_BACKEND"]["value"] == "torch" and env["ACCELKERNELS_FORCE_CUDA"]["value"] is None
    assert env["ACCELKERNELS_TRITON_AUTOTUNE"]["effect"] in ("on", "off") and all(v["valid"] for v in env.values())


FLAGS = [name for name, var in _env.VARIABLES.items() if var.kind == _env.FLAG]


@pytest.mark.parametrize("name", FLAGS)
def test_flags_accept_the_usual_spellings_and_reject_the_rest(monkeypatch, name):
    for value, expected in (("1", True), ("ON", True), (" yes ", True), ("True", True), ("0", False), ("off", False),
                            ("No", False), ("FALSE", False), ("", _env.VARIABLES[name].default)):
        monkeypatch.setenv(name, value)
        assert _env.flag(name) is expected, (name, value)
    monkeypatch.delenv(name)
    assert _env.flag(name) is _env.VARIABLES[name].default
    monkeypatch.setenv(name, "maybe")
    with pytest.raises(ValueError, match=rf"^{name} must be 1, true, yes or on \(on\), 0, false, no or off \(off\), "
                                         r"or unset; got 'maybe'$"):
        _env.flag(name)


def test_an_invalid_value_raises_at_first_use(monkeypatch):
    """Where the error surfaces: the call that reads the variable, with the variable's name."""
    from accelkernels import emulator

    monkeypatch.setenv("ACCELKERNELS_CUDA_EMULATE", "maybe")
    with pytest.raises(_env.EnvironmentVariableError, match="ACCELKERNELS_CUDA_EMULATE .*got 'maybe'"):
        emulator.enabled()
    a = torch.randn(4, 4)
    with pytest.raises(ValueError, match="ACCELKERNELS_CUDA_EMULATE"):
        ak.matmul(a, a, backend="cuda")
    with pytest.raises(ValueError, match="ACCELKERNELS_CUDA_EMULATE"):
        ak.matmul(a, a)  # auto reads it too: on the CPU, the executor is what competes with ATen
    torch.testing.assert_close(ak.matmul(a, a, backend="torch"), a @ a)  # the reference never reads it
    monkeypatch.setenv("MAX_JOBS", "two")
    with pytest.raises(ValueError, match="MAX_JOBS must be a positive integer, or unset; got 'two'"):
        _extension.jit_build("8.0")  # before any compiling starts
    monkeypatch.setenv("ACCELKERNELS_BACKEND", "Triton")
    with pytest.raises(ValueError, match="ACCELKERNELS_BACKEND must be one of torch, triton, cuda, auto, or unset; "
                                         "got 'Triton'"):
        ak.matmul(a, a)


def test_triton_autotune_flag_is_validated(monkeypatch):
    pytest.importorskip("triton")
    from accelkernels.triton_kernels import matmul as triton_matmul

    monkeypatch.delenv("ACCELKERNELS_TRITON_AUTOTUNE", raising=False)
    assert triton_matmul.autotuning()
    monkeypatch.setenv("ACCELKERNELS_TRITON_AUTOTUNE", "false")  # used to mean "on": only "0" was off
    assert not triton_matmul.autotuning()
    monkeypatch.setenv("ACCELKERNELS_TRITON_AUTOTUNE", "of")
    with pytest.raises(ValueError, match="ACCELKERNELS_TRITON_AUTOTUNE"):
        triton_matmul.autotuning()


def test_info_lists_an_invalid_value_instead_of_crashing(monkeypatch, capsys):
    monkeypatch.setenv("ACCELKERNELS_CUDA_EMULATE", "maybe")
    assert cli.main(["info"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^  ACCELKERNELS_CUDA_EMULATE +maybe \(invalid\) ", out, re.M)
    assert "warning: ACCELKERNELS_CUDA_EMULATE must be 1, true, yes or on (on)" in out
    assert "backends      cannot tell while an environment variable is invalid" in out
    assert cli.main(["info", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["environment"]["ACCELKERNELS_CUDA_EMULATE"] == {**data["environment"]["ACCELKERNELS_CUDA_EMULATE"],
                                                               "value": "maybe", "valid": False, "effect": "invalid"}
    assert data["backends"] is None and data["ops"] is None and data["cuda_emulator"].startswith("cannot tell")


def test_a_command_with_an_invalid_value_exits_2_naming_it(monkeypatch, capsys):
    monkeypatch.setenv("ACCELKERNELS_BUILD_EMULATOR", "sure")
    assert cli.main(["build"]) == 2
    assert capsys.readouterr().err.startswith("accelkernels: error: ACCELKERNELS_BUILD_EMULATOR must be 1, true")


def test_setup_py_rejects_an_invalid_build_switch():
    env = {**os.environ, "ACCELKERNELS_FORCE_CUDA": "maybe"}
    env.pop("ACCELKERNELS_SKIP_CUDA_BUILD", None)
    result = subprocess.run([sys.executable, "setup.py", "--name"], cwd=REPO, env=env, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode != 0
    assert "ACCELKERNELS_FORCE_CUDA must be 1, true, yes or on (on), 0, false, no or off (off), or unset; got 'maybe'" \
        in result.stderr


# --- where the C++/CUDA sources are -----------------------------------------------------------------------

def test_sources_come_from_the_installed_copy_when_there_is_one(monkeypatch, tmp_path):
    from accelkernels import _build_config

    assert _build_config.csrc_dir() == REPO / "csrc"  # a checkout (the editable install)
    here = [os.path.relpath(s, REPO / "csrc") for s in _build_config.sources()]
    assert "bindings.cpp" in here and "kernels/bmm_wgmma.cu" in here
    assert not any(s.startswith("emulator/") for s in here)  # the CPU executor is not part of _C
    shutil.copytree(REPO / "csrc", tmp_path / "emulator" / "_csrc")  # a folder named emulator above it
    monkeypatch.setattr(_build_config, "INSTALLED_CSRC", tmp_path / "emulator" / "_csrc")
    assert _build_config.csrc_dir() == tmp_path / "emulator" / "_csrc"
    assert [os.path.relpath(s, _build_config.csrc_dir()) for s in _build_config.sources()] == here


@pytest.mark.parametrize("arch_list,expected", [("8.0;9.0a", True), ("9.0a+PTX", True), ("8.0, 9.0a", True),
                                                ("9.0", False), ("8.0;9.0+PTX", False), ("", False), ("9.0a0", False)])
def test_a_build_knows_whether_it_asked_for_sm90a(arch_list, expected):
    from accelkernels import _build_config as cfg

    assert cfg.has_sm90a(arch_list) is expected
    assert f"-DACCELKERNELS_HAS_SM90A={int(expected)}" in cfg.compile_flags("t", "c", arch_list)["cxx"]


def test_a_build_for_the_visible_gpus_gives_hopper_its_sm90a_code():
    """With a GPU visible and no TORCH_CUDA_ARCH_LIST, setup.py and the first-use build target the GPUs'
    archs; plain "9.0" would hold only the wgmma kernels' empty stubs."""
    from accelkernels import _build_config as cfg

    assert cfg.arch_list_for([(9, 0)]) == "9.0a"
    assert cfg.arch_list_for([(8, 0), (9, 0), (9, 0)]) == "8.0;9.0a"
    assert cfg.arch_list_for([(8, 6)]) == "8.6"
    setup = (REPO / "setup.py").read_text()
    assert "cfg.arch_list_for(" in setup and "torch.cuda.get_device_capability(i)" in setup
