"""A wheel keeps the README's promises: it carries the C++/CUDA sources, so a non-editable install can
still compile the CUDA extension and the CPU executor on first use, and the bench suites.

The wheel is built from a clean copy of the checkout (the files a fresh clone would have, plus new ones
git does not ignore) and installed into a fresh virtual environment that sees this environment's torch
through a .pth file. A .pth *path* line is not a site directory, so the .pth hooks there (this
checkout's editable install) do not run: the venv imports the installed wheel, and the probe checks it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest
import torch

import accelkernels as ak
from accelkernels import _build_config
from accelkernels.emulator import build as emulator_build

REPO = Path(__file__).resolve().parent.parent
KERNEL_NAMES = ["naive", "smem_tiled", "blocktile_1d", "blocktile_2d", "vectorized", "warptile", "mma_sync", "wgmma",
                "wgmma_v2", "wgmma_cluster"]


def _checkout_files() -> list[str]:
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                            capture_output=True)
    if listed.returncode != 0:
        pytest.skip(f"not a git checkout, so which files a clean clone has is unknown: {listed.stderr.decode()[-200:]}")
    return [name for name in listed.stdout.decode().split("\0") if name and (REPO / name).is_file()]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The pure-Python wheel: `ACCELKERNELS_SKIP_CUDA_BUILD=1 pip wheel --no-build-isolation --no-deps .`."""
    root = tmp_path_factory.mktemp("wheel")
    src = root / "src"
    for name in _checkout_files():  # a clean copy: no build/, no compiled _C, no egg-info of the checkout
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, src / name)
    env = {**os.environ, "ACCELKERNELS_SKIP_CUDA_BUILD": "1"}
    env.pop("ACCELKERNELS_FORCE_CUDA", None)  # CI sets it; with SKIP it is a contradiction setup.py refuses
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-build-isolation", "--no-deps", "--no-index",
                           "-q", ".", "-w", str(root / "dist")], cwd=src, env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    wheels = list((root / "dist").glob("*.whl"))
    # py3-none-any: nothing was compiled, so the sources are all a first-use build can start from
    assert [w.name for w in wheels] == [f"accelkernels-{ak.__version__}-py3-none-any.whl"], wheels
    return wheels[0]


@pytest.fixture(scope="module")
def venv_python(wheel, tmp_path_factory) -> Path:
    """A fresh venv with the wheel installed (--no-deps) and this environment's packages (torch) visible."""
    venv = tmp_path_factory.mktemp("venv") / "env"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    site = subprocess.run([str(python), "-I", "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    here = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"], str(Path(torch.__file__).parent.parent)}
    Path(site, "_accelkernels_test_deps.pth").write_text("\n".join(sorted(here)) + "\n")
    # this environment's pip installs into the venv (pip >= 22.3), so the venv needs no pip of its own
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index", "-q",
                    str(wheel)], check=True, capture_output=True, timeout=300)
    return python


def _run_in(python: Path, code: str, tmp_path: Path, timeout: int = 300, **env) -> subprocess.CompletedProcess:
    # -I: neither the current folder nor PYTHONPATH can put this checkout on sys.path
    return subprocess.run([str(python), "-I", "-c", code], cwd=tmp_path, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **env})


PROBE = """
import importlib.metadata, json, os
import accelkernels
from accelkernels import _build_config, cli
from accelkernels.benchmark import suites
from accelkernels.emulator import build
csrc = _build_config.csrc_dir()
print(json.dumps({
    "package": accelkernels.__file__,
    "version": accelkernels.__version__,
    "metadata_version": importlib.metadata.version("accelkernels"),
    "csrc": str(csrc),
    "sources": [os.path.relpath(s, csrc) for s in _build_config.sources()],
    "emulator_inputs": [str(p.relative_to(csrc)) for p in build.inputs()],
    "emulator_missing": [str(p) for p in build.inputs() if not p.is_file()],
    "suites": {name: len(suites.load_suite(name)) for name in suites.available_suites()},
}))
"""


def test_the_installed_wheel_finds_every_first_use_source(venv_python, tmp_path):
    result = _run_in(venv_python, PROBE, tmp_path)
    assert result.returncode == 0, result.stderr
    found = json.loads(result.stdout.strip().splitlines()[-1])
    venv = venv_python.parent.parent
    assert Path(found["package"]).is_relative_to(venv), found["package"]  # the wheel, not this checkout
    assert Path(found["csrc"]) == Path(found["package"]).parent / "_csrc"
    assert found["version"] == found["metadata_version"] == ak.__version__
    here = _build_config.csrc_dir()
    assert found["sources"] and found["sources"] == [os.path.relpath(s, here) for s in _build_config.sources()]
    assert found["emulator_inputs"] == [str(p.relative_to(here)) for p in emulator_build.inputs()]
    assert found["emulator_missing"] == []
    assert found["suites"] and all(found["suites"].values()), found["suites"]
    assert (venv / "bin" / "accelkernels").is_file()  # the console script


def test_the_wheel_carries_the_sources_the_suites_and_the_license(wheel):
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        metadata = z.read(f"accelkernels-{ak.__version__}.dist-info/METADATA").decode()
    # every file of csrc/ but the notes (*.md): a new kind of source file must be added to pyproject's globs
    csrc = {str(p.relative_to(REPO / "csrc")) for p in (REPO / "csrc").rglob("*") if p.is_file() and p.suffix != ".md"}
    shipped = {n.removeprefix("accelkernels/_csrc/") for n in names if n.startswith("accelkernels/_csrc/")}
    assert csrc and shipped == csrc, (sorted(csrc - shipped), sorted(shipped - csrc))
    suites = {p.name for p in (REPO / "bench" / "suites").glob("*.csv")}
    assert suites and {n.removeprefix("accelkernels/bench_suites/") for n in names if n.endswith(".csv")} == suites
    assert f"accelkernels-{ak.__version__}.dist-info/licenses/LICENSE" in names
    assert "License-Expression: BSD-3-Clause" in metadata
    requires = [line.removeprefix("Requires-Dist: ") for line in metadata.splitlines()
                if line.startswith("Requires-Dist:")]
    core = [r for r in requires if "extra ==" not in r]
    assert core == ["torch>=2.5", "tqdm"], core  # matplotlib and numpy are extras, not for every install
    assert 'matplotlib; extra == "bench"' in requires and 'hypothesis; extra == "test"' in requires


@pytest.mark.skipif(os.environ.get("ACCELKERNELS_TEST_JIT") != "1",
                    reason="set ACCELKERNELS_TEST_JIT=1 (a minutes-long nvcc build; CI sets it)")
def test_compile_on_first_use_from_the_installed_wheel(venv_python, tmp_path):
    """The first-use build (torch's cpp_extension.load) compiles and loads the wheel's sources on their own,
    for one architecture: the ahead-of-time build already compiles sm_80 and sm_90a, so this proves the
    first-use path and the shipped sources without a second full compile. Registered kernels do not
    depend on the architecture (wgmma is listed with min_arch 9.0a either way)."""
    code = (
        "from accelkernels import _extension\n"
        "s = _extension.jit_build('8.0')\n"
        "assert s.loaded, s.reason\n"
        "assert s.mode == _extension.JIT\n"
        "assert s.module.__file__.startswith(%r), s.module.__file__\n"
        "ks = s.module.kernels()\n"
        "print(s.build_info['arch_list'], [k['name'] for k in ks if k['op'] == 'cuda_bmm'], len(ks))\n"
    ) % str(tmp_path / "cache")
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])  # ninja
    result = _run_in(venv_python, code, tmp_path, timeout=1500, TORCH_EXTENSIONS_DIR=str(tmp_path / "cache"),
                     MAX_JOBS=os.environ.get("MAX_JOBS", "2"), PATH=path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"8.0 {KERNEL_NAMES} 20" in result.stdout  # + the 10 conv2d kernels
