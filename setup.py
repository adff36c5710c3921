"""Build script for accelkernels.

Plain ``pip install -e .`` is a pure-Python install in seconds, on any machine. The CUDA extension
``accelkernels._C`` is compiled ahead of time only when torch (with CUDA) and nvcc are visible at
build time, which needs ``pip install --no-build-isolation -e .`` (build isolation hides the
installed torch). Switches:

- ``ACCELKERNELS_SKIP_CUDA_BUILD=1``: never compile csrc/ (Python-only install).
- ``ACCELKERNELS_FORCE_CUDA=1``: compile csrc/ or fail loudly (CI uses this: a compile error fails).
- ``TORCH_CUDA_ARCH_LIST``: target architectures; default: the visible GPUs' (9.0 as 9.0a, so the wgmma
  kernels have code), or 8.0 and 9.0a when no GPU is visible.
- ``MAX_JOBS``: parallel compile jobs (torch's ninja build reads it).

Values are validated by accelkernels/_env.py (``ACCELKERNELS_FORCE_CUDA=maybe`` is an error, not "off").
Without an ahead-of-time build, a GPU machine with nvcc compiles the same sources on first use: every
install ships them (a wheel as the package data accelkernels/_csrc/, see pyproject.toml).
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

from setuptools import setup

ROOT = Path(__file__).resolve().parent


def _load(name: str):
    # Loaded by path: importing the accelkernels package here would import torch.
    spec = importlib.util.spec_from_file_location(f"_ak{name}", ROOT / "accelkernels" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


cfg = _load("_build_config")
env = _load("_env")  # the validating reader: ACCELKERNELS_FORCE_CUDA=maybe fails here, by name


def _say(msg: str) -> None:
    print(f"accelkernels setup: {msg}", file=sys.stderr)


def _cuda_extensions():
    """Return (ext_modules, cmdclass) for csrc/, or ([], {}) with the reason printed."""
    force = env.flag("ACCELKERNELS_FORCE_CUDA")
    if env.flag("ACCELKERNELS_SKIP_CUDA_BUILD"):
        if force:
            raise RuntimeError("ACCELKERNELS_SKIP_CUDA_BUILD=1 and ACCELKERNELS_FORCE_CUDA=1 contradict each other")
        _say("ACCELKERNELS_SKIP_CUDA_BUILD=1: Python-only install")
        return [], {}
    if not (os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH")) and Path("/usr/local/cuda/bin/nvcc").exists():
        # torch would otherwise take CUDA_HOME from `which nvcc`, which may be a symlink in /usr/local/bin
        # whose parent has no CUDA headers or libraries.
        os.environ["CUDA_HOME"] = "/usr/local/cuda"
    try:
        import torch
        from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CUDAExtension
    except ImportError as exc:
        reason = (
            f"torch is not importable at build time ({exc}); the CUDA extension will compile on first use "
            "on a GPU machine. For an ahead-of-time build: pip install --no-build-isolation -e ."
        )
        if force:
            raise RuntimeError("ACCELKERNELS_FORCE_CUDA=1 but " + reason) from exc
        _say(reason)
        return [], {}
    problems = []
    if torch.version.cuda is None:
        problems.append(f"torch {torch.__version__} is a CPU-only build")
    if CUDA_HOME is None or not Path(CUDA_HOME, "bin", "nvcc").exists():
        problems.append("nvcc not found (set CUDA_HOME, e.g. CUDA_HOME=/usr/local/cuda)")
    elif not Path(CUDA_HOME, "include", "cuda_runtime.h").exists():
        problems.append(f"CUDA_HOME={CUDA_HOME} has no include/cuda_runtime.h (point CUDA_HOME at the toolkit)")
    env.check("MAX_JOBS")  # torch ignores a non-numeric value and lets ninja use every core: say so instead
    if problems:
        reason = "; ".join(problems)
        if force:
            raise RuntimeError("ACCELKERNELS_FORCE_CUDA=1 but " + reason)
        _say(f"skipping the CUDA extension: {reason}")
        return [], {}

    if not os.environ.get("TORCH_CUDA_ARCH_LIST"):
        if torch.cuda.is_available():
            # torch's default would be the GPUs' plain archs ("9.0"), whose wgmma kernels are empty stubs:
            # the visible GPUs' targets with the arch-specific "a" from 9.0 on.
            os.environ["TORCH_CUDA_ARCH_LIST"] = cfg.arch_list_for(
                torch.cuda.get_device_capability(i) for i in range(torch.cuda.device_count()))
        else:
            # torch's own default with no GPU visible is every arch it knows; ours is the two we tune for.
            os.environ["TORCH_CUDA_ARCH_LIST"] = cfg.DEFAULT_ARCH_LIST
    arch_list = os.environ["TORCH_CUDA_ARCH_LIST"]
    _say(f"building {cfg.EXTENSION_NAME} for TORCH_CUDA_ARCH_LIST={arch_list} with nvcc from {CUDA_HOME}")
    flags = cfg.compile_flags(torch.__version__, torch.version.cuda, arch_list)
    ext = CUDAExtension(
        name=cfg.EXTENSION_NAME,
        sources=[os.path.relpath(s, ROOT) for s in cfg.sources()],
        include_dirs=[str(cfg.csrc_dir())],
        extra_compile_args=flags,
    )
    return [ext], {"build_ext": BuildExtension.with_options(use_ninja=True)}


ext_modules, cmdclass = _cuda_extensions()

setup(ext_modules=ext_modules, cmdclass=cmdclass)
