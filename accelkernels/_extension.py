"""Finding the compiled CUDA extension: ahead of time, compiled on first use, or absent (and why).

Nothing here runs at import time: the first caller decides whether compiling is wanted. The ops'
schemas live in Python (accelkernels.ops), so everything but the CUDA kernels works without this.
"""

from __future__ import annotations

import importlib
import os
import shutil
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

import torch

from . import _build_config as cfg
from . import _env

AHEAD_OF_TIME = "ahead of time"
JIT = "compiled on first use"
ABSENT = "absent"


@dataclass(frozen=True)
class ExtensionStatus:
    mode: str  # AHEAD_OF_TIME, JIT or ABSENT
    reason: str  # why absent, or how it was built
    module: ModuleType | None = None
    build_info: dict = field(default_factory=dict)

    @property
    def loaded(self) -> bool:
        return self.module is not None


_lock = threading.Lock()
_status: ExtensionStatus | None = None  # the AOT probe, or the JIT result once attempted
_jit_attempted = False


def cuda_home() -> str | None:
    """CUDA_HOME as torch's build would find it, without importing torch.utils.cpp_extension (which
    prints a warning on machines with no CUDA runtime)."""
    for var in ("CUDA_HOME", "CUDA_PATH"):
        if os.environ.get(var):
            return os.environ[var]
    if Path("/usr/local/cuda/bin/nvcc").exists():
        return "/usr/local/cuda"
    found = shutil.which("nvcc")
    return str(Path(found).resolve().parent.parent) if found else None


def nvcc_path() -> str | None:
    home = cuda_home()
    nvcc = Path(home, "bin", "nvcc") if home else None
    return str(nvcc) if nvcc is not None and nvcc.exists() else None


def _stale_reason(info: dict) -> str | None:
    built_for = info.get("torch_version", "?")
    if built_for != torch.__version__:
        return (
            f"the extension was built for torch {built_for} but torch {torch.__version__} is running; "
            "rebuild with: pip install --no-build-isolation --no-deps -e ."
        )
    return None


def _accept(module: ModuleType, mode: str, how: str) -> ExtensionStatus:
    info = dict(module.build_info())
    stale = _stale_reason(info)
    if stale:
        return ExtensionStatus(ABSENT, stale, None, info)
    return ExtensionStatus(mode, how, module, info)


def _probe_ahead_of_time() -> ExtensionStatus:
    try:
        module = importlib.import_module(cfg.EXTENSION_NAME)
    except ModuleNotFoundError:
        return ExtensionStatus(
            ABSENT,
            "not built ahead of time (install with torch and nvcc visible: "
            "pip install --no-build-isolation -e .)",
        )
    except ImportError as exc:  # built, but cannot load: usually a torch/CUDA mismatch
        return ExtensionStatus(
            ABSENT,
            f"accelkernels._C failed to load ({exc}); rebuild with: pip install --no-build-isolation --no-deps -e .",
        )
    return _accept(module, AHEAD_OF_TIME, "built by pip install")


def visible_gpu_arch() -> str:
    """TORCH_CUDA_ARCH_LIST for the visible GPUs; 9.0 and later get the arch-specific "a" target
    (wgmma/TMA need sm_90a): _build_config.arch_list_for."""
    return cfg.arch_list_for(torch.cuda.get_device_capability(i) for i in range(torch.cuda.device_count()))


def jit_build(arch_list: str) -> ExtensionStatus:
    """Compile csrc/ with torch's cpp_extension.load (cached by torch under TORCH_EXTENSIONS_DIR)."""
    _env.check("MAX_JOBS")  # torch ignores a non-numeric value and lets ninja use every core: say so instead
    sources = cfg.sources()
    if not sources:
        return ExtensionStatus(ABSENT, f"CUDA sources not found under {cfg.csrc_dir()}")
    if cuda_home():  # cpp_extension resolves CUDA_HOME when first imported; point it at the nvcc we found
        os.environ.setdefault("CUDA_HOME", cuda_home())
    from torch.utils import cpp_extension

    print(
        f"accelkernels: compiling the CUDA extension for {arch_list} (first use; cached afterwards) ...",
        file=sys.stderr,
        flush=True,
    )
    flags = cfg.compile_flags(torch.__version__, torch.version.cuda, arch_list)
    saved_arch_list = os.environ.get("TORCH_CUDA_ARCH_LIST")
    os.environ["TORCH_CUDA_ARCH_LIST"] = arch_list  # cpp_extension reads the targets from here
    try:
        module = cpp_extension.load(
            name=cfg.JIT_EXTENSION_NAME,
            sources=sources,
            extra_include_paths=[str(cfg.csrc_dir())],
            extra_cflags=flags["cxx"],
            extra_cuda_cflags=flags["nvcc"],
            verbose=False,
        )
    except Exception as exc:  # compile or link error: report it, fall back
        return ExtensionStatus(ABSENT, f"compiling on first use failed: {str(exc).strip().splitlines()[-1]}")
    finally:
        if saved_arch_list is None:
            os.environ.pop("TORCH_CUDA_ARCH_LIST", None)
        else:
            os.environ["TORCH_CUDA_ARCH_LIST"] = saved_arch_list
    return _accept(module, JIT, f"compiled on first use for {arch_list}")


def status(*, build: bool = False) -> ExtensionStatus:
    """The extension's state. ``build=True`` compiles on first use when possible (GPU and nvcc present)."""
    global _status, _jit_attempted
    with _lock:
        if _status is None:
            _status = _probe_ahead_of_time()
        if build and not _status.loaded and not _jit_attempted and _jit_possible():
            _jit_attempted = True
            _status = jit_build(os.environ.get("TORCH_CUDA_ARCH_LIST") or visible_gpu_arch())
        return _status


def _jit_missing() -> list[str]:
    """Everything that stands between this machine and a first-use build, all of it at once: a user who
    fixes the first problem should not discover the second only afterwards."""
    if _env.flag("ACCELKERNELS_SKIP_CUDA_BUILD"):
        return ["disabled by ACCELKERNELS_SKIP_CUDA_BUILD"]
    missing = []
    if torch.version.cuda is None:
        missing.append(f"torch {torch.__version__} is a CPU-only build")
    elif not torch.cuda.is_available():
        missing.append("no CUDA GPU visible")
    if nvcc_path() is None:
        home = cuda_home()
        missing.append(f"nvcc not found in {home}/bin (point CUDA_HOME at a CUDA toolkit)" if home else
                       "nvcc not found (looked at $CUDA_HOME, $CUDA_PATH, /usr/local/cuda and PATH; "
                       "install a CUDA toolkit and set CUDA_HOME)")
    return missing


def _jit_possible() -> bool:
    return not _jit_missing()


def describe_jit_possibility() -> str:
    """One line for `info` and `build`: could the extension be compiled on first use here, and if not, why."""
    missing = _jit_missing()
    return "no: " + "; ".join(missing) if missing else "yes (nvcc found, GPU visible)"
