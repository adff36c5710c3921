"""Building the CPU executor's module: csrc/kernels/ rewritten and compiled with g++ against
csrc/emulator/, plus the ops' host code (csrc/bmm_op.cpp, csrc/conv_op.cpp) compiled for CPU tensors.

Cached by a hash of every source and flag, under torch's extension cache; built on first use, or
ahead of time with ``ACCELKERNELS_BUILD_EMULATOR=1 accelkernels build`` / ``accelkernels info``.
Needs a C++ compiler and the CUDA headers (a CUDA toolkit's include/, or the nvidia/cu13/include
folder of torch's CUDA wheel): no nvcc, no GPU.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

from .. import _build_config, _env
from .rewrite import rewrite

CSRC = _build_config.csrc_dir()  # the checkout's csrc/, or the copy a wheel installs
KERNELS = CSRC / "kernels"
EMULATOR = CSRC / "emulator"
RUNTIME_SOURCES = ("runtime.cpp", "ptx.cpp", "cuda_api.cpp", "emu_ops.cpp")
HOST_SOURCES = ("bmm_op.cpp", "conv_op.cpp", "kernel_registry.cpp")
HOST_HEADERS = ("device_host.h", "kernel_registry.h", "registry_listing.h")


class EmulatorBuildError(RuntimeError):
    """The executor cannot be built here; the message says what is missing and how to get it."""


def compiler() -> str:
    cxx = os.environ.get("CXX", "c++")
    found = shutil.which(cxx) or shutil.which("g++")
    if not found:
        raise EmulatorBuildError(
            f"no C++ compiler found (tried $CXX={cxx!r} and g++): install one, e.g. `apt-get install g++`")
    return found


def header_candidates() -> list[Path]:
    """Where the CUDA headers may be, in order: $CUDA_HOME, /usr/local/cuda, torch's CUDA wheel."""
    candidates = []
    for var in ("CUDA_HOME", "CUDA_PATH"):
        if os.environ.get(var):
            candidates.append(Path(os.environ[var], "include"))
    candidates.append(Path("/usr/local/cuda/include"))
    spec = importlib.util.find_spec("nvidia")
    if spec is not None and spec.submodule_search_locations:
        for root in spec.submodule_search_locations:
            candidates += sorted(Path(root).glob("cu*/include")) + sorted(Path(root).glob("cuda_runtime/include"))
    return candidates


def cuda_include_dir() -> Path:
    """A folder with cuda_runtime.h, cuda.h and cuda_fp16.h."""
    candidates = header_candidates()
    for c in candidates:
        if (c / "cuda_runtime.h").exists() and (c / "cuda.h").exists() and (c / "cuda_fp16.h").exists():
            return c
    raise EmulatorBuildError(
        "the CUDA headers were not found (looked in " + ", ".join(str(c) for c in candidates) + "): set CUDA_HOME "
        "to a CUDA toolkit, or install torch's CUDA build (pip install torch==2.14.1), whose wheel carries them")


def coverage_enabled() -> bool:
    return _env.flag("ACCELKERNELS_EMULATOR_COVERAGE")


def inputs() -> list[Path]:
    """Every file of csrc/ the build reads (the kernels and their headers, the executor, the ops' host
    code): hashed into the cache key, and what a wheel must ship (tests/test_packaging.py)."""
    if not (KERNELS.is_dir() and EMULATOR.is_dir()):
        raise EmulatorBuildError(f"the kernel sources are not in {CSRC} (kernels/ and emulator/): reinstall "
                                 "accelkernels (a wheel ships them as accelkernels/_csrc/) or run from a checkout")
    kernels = sorted(p for p in KERNELS.iterdir() if p.suffix in (".cu", ".cuh", ".h"))
    executor = sorted(p for p in EMULATOR.iterdir() if p.suffix in (".cpp", ".h"))
    return kernels + executor + [CSRC / n for n in HOST_SOURCES + HOST_HEADERS]


def _flags(include: Path) -> list[str]:
    flags = ["-O2", "-g0", "-DAK_EMULATED_HOST=1", "-DAK_WGMMA_ENABLED=1", "-Wno-unknown-pragmas",
             "-Wno-attributes", f"-I{include}", f"-I{CSRC}", f"-I{KERNELS}", f"-I{EMULATOR}"]
    if coverage_enabled():
        flags = [f for f in flags if f != "-O2"] + ["-O0", "--coverage"]
    return flags


def source_hash(extra: list[str]) -> str:
    h = hashlib.sha256()
    for f in inputs() + [Path(__file__), Path(__file__).with_name("rewrite.py")]:
        if f.is_file():
            h.update(f.name.encode())
            h.update(f.read_bytes())
    h.update(" ".join(extra).encode())
    h.update(sys.version.encode())
    return h.hexdigest()[:16]


def preprocess(source: Path, include: Path, cxx: str) -> str:
    cmd = [cxx, "-E", "-x", "c++", "-std=c++20", "-DAK_WGMMA_ENABLED=1", "-include",
           str(EMULATOR / "ak_emu_shim.h"), f"-I{include}", f"-I{KERNELS}", f"-I{EMULATOR}", str(source)]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise EmulatorBuildError(f"preprocessing {source.name} failed:\n{done.stderr[-4000:]}")
    return done.stdout


def build_dir(digest: str) -> Path:
    from torch.utils.cpp_extension import _get_build_directory

    return Path(_get_build_directory(f"accelkernels_emu_{digest}", verbose=False))


def build(verbose: bool = False):
    """Compile (or load from the cache) the executor module and return it."""
    cxx = compiler()
    include = cuda_include_dir()
    flags = _flags(include)
    digest = source_hash(flags)
    name = f"accelkernels_emu_{digest}"
    if name in sys.modules:
        return sys.modules[name]
    out = build_dir(digest)
    gen = out / "generated"
    gen.mkdir(parents=True, exist_ok=True)
    sources = []
    for cu in sorted(KERNELS.glob("*.cu")):
        target = gen / (cu.stem + ".cpp")
        text = rewrite(preprocess(cu, include, cxx))
        if not target.exists() or target.read_text() != text:
            target.write_text(text)
        sources.append(str(target))
    sources += [str(EMULATOR / n) for n in RUNTIME_SOURCES] + [str(CSRC / n) for n in HOST_SOURCES]
    from torch.utils import cpp_extension

    print(f"accelkernels: building the CPU executor of the CUDA kernels ({len(sources)} sources; cached afterwards) ...",
          file=sys.stderr, flush=True)
    try:
        return cpp_extension.load(
            name=name,
            sources=sources,
            extra_cflags=flags,
            # -Bsymbolic: the CUDA runtime calls resolve to csrc/emulator/cuda_api.cpp, not to the
            # libcudart that a CUDA build of torch has already loaded into the process.
            extra_ldflags=["-Wl,-Bsymbolic"] + (["--coverage"] if coverage_enabled() else []),
            build_directory=str(out),
            with_cuda=False,
            verbose=verbose,
        )
    except Exception as exc:
        raise EmulatorBuildError(f"compiling the CPU executor failed: {exc}") from exc
