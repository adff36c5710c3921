"""Which sources make up ``accelkernels._C`` and how they are compiled.

Shared by ``setup.py`` (ahead-of-time build) and ``accelkernels._extension`` (compile on first use),
so both builds are the same. Imports nothing but the standard library: setup.py loads this file by
path before torch is known to be importable.
"""

from __future__ import annotations

import os
from pathlib import Path

EXTENSION_NAME = "accelkernels._C"
JIT_EXTENSION_NAME = "accelkernels_C_jit"

# Used when TORCH_CUDA_ARCH_LIST is unset and no GPU is visible at build time: sm_80 for the mma.sync
# kernels, sm_90a for the Hopper wgmma/TMA kernels (the "a" enables the arch-specific instructions).
DEFAULT_ARCH_LIST = "8.0;9.0a"


def csrc_dir(repo_root: Path) -> Path:
    return repo_root / "csrc"


def sources(repo_root: Path) -> list[str]:
    """Every C++ and CUDA source under csrc/, sorted so builds are reproducible; csrc/emulator/ (the
    CPU executor of the kernels, built by accelkernels.emulator) is not part of the CUDA extension."""
    root = csrc_dir(repo_root)
    files = [p for p in sorted(root.rglob("*.cpp")) + sorted(root.rglob("*.cu")) if "emulator" not in p.parts]
    return [str(p) for p in files]


def compile_flags(torch_version: str, cuda_version: str, arch_list: str) -> dict[str, list[str]]:
    """Compiler flags; the build metadata is baked into the binary so a stale build can be detected.

    Values go through the preprocessor as bare tokens (stringized in csrc/bindings.cpp) because
    quoted strings do not survive the shell that runs ninja's command lines; ';' would end the
    command there, so the arch list is joined with ','.
    """
    meta = [
        f"-DACCELKERNELS_TORCH_VERSION={torch_version}",
        f"-DACCELKERNELS_CUDA_VERSION={cuda_version}",
        f"-DACCELKERNELS_ARCH_LIST={arch_list.replace(';', ',').replace(' ', ',')}",
    ]
    return {
        "cxx": ["-O3", *meta],  # no -std: torch adds the standard it needs (C++20 for 2.14)
        "nvcc": [
            "-O3",
            "-lineinfo",  # source lines in profiler and compute-sanitizer reports, no runtime cost
            "--expt-relaxed-constexpr",
        ],
    }


def env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in {"1", "true", "yes", "on"}
