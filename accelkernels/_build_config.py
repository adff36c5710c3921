"""Which sources make up ``accelkernels._C`` and how they are compiled.

Shared by ``setup.py`` (ahead-of-time build) and ``accelkernels._extension`` (compile on first use),
so both builds are the same. Imports nothing but the standard library: setup.py loads this file by
path before torch is known to be importable.
"""

from __future__ import annotations

from pathlib import Path

EXTENSION_NAME = "accelkernels._C"
JIT_EXTENSION_NAME = "accelkernels_C_jit"

# Used when TORCH_CUDA_ARCH_LIST is unset and no GPU is visible at build time: sm_80 for the mma.sync
# kernels, sm_90a for the Hopper wgmma/TMA kernels (the "a" enables the arch-specific instructions).
DEFAULT_ARCH_LIST = "8.0;9.0a"


PACKAGE_DIR = Path(__file__).resolve().parent
# A wheel installs csrc/ as the package data accelkernels/_csrc/ (pyproject.toml), so the first-use
# builds work from any install; a checkout (editable install, setup.py) has it beside the package.
INSTALLED_CSRC = PACKAGE_DIR / "_csrc"
CHECKOUT_CSRC = PACKAGE_DIR.parent / "csrc"


def csrc_dir() -> Path:
    """The folder of the C++/CUDA sources that every build compiles (the one place that knows where)."""
    return INSTALLED_CSRC if INSTALLED_CSRC.is_dir() else CHECKOUT_CSRC


def sources(root: Path | None = None) -> list[str]:
    """Every C++ and CUDA source under ``root`` (default: csrc_dir()), sorted so builds are reproducible;
    csrc/emulator/ (the CPU executor of the kernels, built by accelkernels.emulator) is not part of the
    CUDA extension."""
    root = csrc_dir() if root is None else root
    # relative parts: a folder named "emulator" above the install must not hide every source
    files = [p for p in sorted(root.rglob("*.cpp")) + sorted(root.rglob("*.cu"))
             if "emulator" not in p.relative_to(root).parts]
    return [str(p) for p in files]


def arch_tokens(arch_list: str) -> list[str]:
    """TORCH_CUDA_ARCH_LIST's entries (separated by ';', ',' or spaces)."""
    return [t for t in arch_list.replace(";", " ").replace(",", " ").split() if t]


def has_sm90a(arch_list: str) -> bool:
    """Whether the list asks for sm_90a code ("9.0a", or "9.0a+PTX"): the wgmma kernels' bodies exist only there."""
    return any(t.removesuffix("+PTX") == "9.0a" for t in arch_tokens(arch_list or ""))


def arch_for(major: int, minor: int) -> str:
    """The TORCH_CUDA_ARCH_LIST entry for a GPU: 9.0 and later get the arch-specific "a" target
    (wgmma/TMA need sm_90a; plain 9.0 code would hold only the wgmma kernels' empty stubs)."""
    return f"{major}.{minor}" + ("a" if major >= 9 else "")


def arch_list_for(capabilities) -> str:
    """The build's targets for these visible GPUs ((major, minor) pairs), each once, in order."""
    return ";".join(dict.fromkeys(arch_for(*c) for c in capabilities))


def compile_flags(torch_version: str, cuda_version: str, arch_list: str) -> dict[str, list[str]]:
    """Compiler flags; the build metadata is baked into the binary so a stale build can be detected.

    Values go through the preprocessor as bare tokens (stringized in csrc/build_meta.h) because
    quoted strings do not survive the shell that runs ninja's command lines; ';' would end the
    command there, so the arch list is joined with ','.
    """
    meta = [
        f"-DACCELKERNELS_TORCH_VERSION={torch_version}",
        f"-DACCELKERNELS_CUDA_VERSION={cuda_version}",
        f"-DACCELKERNELS_ARCH_LIST={arch_list.replace(';', ',').replace(' ', ',')}",
        f"-DACCELKERNELS_HAS_SM90A={int(has_sm90a(arch_list))}",
    ]
    return {
        "cxx": ["-O3", *meta],  # no -std: torch adds the standard it needs (C++20 for 2.14)
        "nvcc": [
            "-O3",
            "-lineinfo",  # source lines in profiler and compute-sanitizer reports, no runtime cost
            "--expt-relaxed-constexpr",
        ],
    }
