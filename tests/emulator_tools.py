"""Building torch-free programs on the CPU executor (the defect tests' GEMM driver, the PTX probes):
the executor's runtime compiled once per session, then one kernel source preprocessed, rewritten and
linked with a driver."""

from __future__ import annotations

import subprocess
from pathlib import Path

from accelkernels.emulator import build
from accelkernels.emulator.rewrite import rewrite


class Toolchain:
    def __init__(self, root: Path, sanitize: bool = False):
        """sanitize: AddressSanitizer on everything (plain C++ global accesses of the kernels are checked
        there; the executor's fibers are ucontext, which ASan supports with a warning)."""
        self.root = root
        self.cxx, self.include = build.compiler(), build.cuda_include_dir()
        self.common = ["-std=c++20", "-O1", "-Wno-unknown-pragmas", "-Wno-attributes", f"-I{self.include}",
                       f"-I{build.EMULATOR}", f"-I{build.KERNELS}"] + (["-g", "-fsanitize=address"] if sanitize else [])
        self.objects = []
        for name in ("runtime.cpp", "ptx.cpp", "cuda_api.cpp"):
            obj = root / (name + ".o")
            subprocess.run([self.cxx, *self.common, "-c", str(build.EMULATOR / name), "-o", str(obj)], check=True)
            self.objects.append(str(obj))

    def program(self, source: Path, out: Path, kernels_dir: Path = build.KERNELS, defines=(), extra_sources=()) -> Path:
        """Executable of `source` (a .cu rewritten for the executor) + extra host sources."""
        cmd = [self.cxx, "-E", "-x", "c++", "-std=c++20", "-DAK_WGMMA_ENABLED=1", "-include",
               str(build.EMULATOR / "ak_emu_shim.h"), f"-I{self.include}", f"-I{kernels_dir}",
               f"-I{build.EMULATOR}", *[f"-D{d}" for d in defines], str(source)]
        pre = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
        generated = out.with_suffix(".cpp")
        generated.write_text(rewrite(pre))
        exe = out.with_suffix(".exe")
        subprocess.run([self.cxx, *self.common, f"-I{kernels_dir}", *[f"-D{d}" for d in defines], str(generated),
                        *map(str, extra_sources), *self.objects, "-o", str(exe)], check=True)
        return exe
