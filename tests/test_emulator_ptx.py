"""Each PTX instruction family of the executor against tables computed here from the PTX ISA and the
CuTe layouts (../shared/EMULATION.md §1), independently of our kernels: the probes
(tests/emulator/ptx_probe.cu) run one instruction on known inputs and print what each lane or shared
byte holds."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest
from emulator_tools import Toolchain

pytestmark = pytest.mark.emulated

PROBE = Path(__file__).parent / "emulator" / "ptx_probe.cu"


@pytest.fixture(scope="module")
def probe(tmp_path_factory):
    tools = Toolchain(tmp_path_factory.mktemp("ptx"))
    exe = tools.program(PROBE, tools.root / "ptx_probe")

    def run(what: str) -> dict[str, np.ndarray]:
        done = subprocess.run([str(exe), what], capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stdout + done.stderr
        rows = {}
        for line in done.stdout.splitlines():
            name, *values = line.split()
            rows[name] = np.array([float(v) for v in values])
        return rows

    return run


def a_value(m, k):
    return (m * 3 + k * 5) % 7 - 3


def b_value(k, n):
    return (k * 2 + n * 3) % 5 - 2


def test_ldmatrix_x4_fragments(probe):
    """Element (j, row, col) of the four 8x8 matrices holds 64 j + 8 row + col. PTX: without .trans
    lane l's r_j holds row l/4, columns 2(l%4) and +1 (low half first); with .trans, column l/4 of
    rows 2(l%4) and +1 (CuTe SM75_U32x4_LDSM_N / SM75_U16x8_LDSM_T)."""
    out = probe("ldmatrix")
    for l in range(32):
        for j in range(4):
            lo, hi = 64 * j + 8 * (l // 4) + 2 * (l % 4), 64 * j + 8 * (l // 4) + 2 * (l % 4) + 1
            assert out["plain"][l * 4 + j] == lo | (hi << 16), (l, j)
            lo, hi = 64 * j + 8 * (2 * (l % 4)) + l // 4, 64 * j + 8 * (2 * (l % 4) + 1) + l // 4
            assert out["trans"][l * 4 + j] == lo | (hi << 16), (l, j)


@pytest.mark.parametrize("dtype", ["f16", "bf16"])
def test_mma_m16n8k16_products_in_the_accumulator_layout(probe, dtype):
    """D = A B + C with C[lane, e] = (4 lane + e) / 2; D's lane l, register e is D[g + 8(e/2)][2t + e%2]."""
    d = probe("mma")[dtype]
    A = np.array([[a_value(m, k) for k in range(16)] for m in range(16)], dtype=np.float64)
    B = np.array([[b_value(k, n) for n in range(8)] for k in range(16)], dtype=np.float64)
    D = A @ B
    for l in range(32):
        g, t = l // 4, l % 4
        for e in range(4):
            assert d[l * 4 + e] == D[g + 8 * (e // 2), 2 * t + e % 2] + (l * 4 + e) * 0.5, (l, e)


def test_cp_async_zero_fill_and_landing_at_the_covering_wait(probe):
    """src-size 16, 5 and 0: the rest of each 16 bytes is zero; after wait_group 1 the last group is
    still in flight (the destination holds the executor's poison), after wait_group 0 it is zeros."""
    b = probe("cp_async")["bytes"]
    assert list(b[:16]) == list(range(1, 17))
    assert list(b[16:32]) == [17, 18, 19, 20, 21] + [0] * 11
    assert list(b[32:48]) == [0xFF] * 16  # read before wait_group 0: not landed yet (poison)
    assert list(b[48:64]) == [0] * 16 and b.size == 64


def test_mbarrier_parity_before_and_after_the_first_phase(probe):
    assert list(probe("mbarrier")["flags"]) == [1, 1, 1, 1]


def test_tma_box_lands_in_the_128b_swizzled_image_with_zeros_outside(probe):
    """A 16 x 64 bf16 box at (k=-8, row=12) of a 20 x 40 matrix (element row*100+k): byte offset
    ((row)*64 + k)*2 in dense order, 16-byte chunk c of 128-byte line r moved to c ^ (r % 8) (PTX
    swizzling modes table); elements outside the matrix are zero."""
    img = probe("tma")["image"].astype(np.uint8)
    got = img.view(np.uint16)
    expect = np.zeros(16 * 64, dtype=np.float32)
    for r in range(16):
        for k in range(64):
            gr, gk = 12 + r, -8 + k
            dense = r * 64 + k
            chunk, within = (dense * 2 // 16) % 8, dense * 2 % 16
            phys = (r * 128 + ((chunk ^ (r % 8)) * 16) + within) // 2
            expect[phys] = gr * 100 + gk if (0 <= gr < 20 and 0 <= gk < 40) else 0.0
    bits = expect.view(np.uint32).astype(np.uint64)
    bf16_bits = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype(np.uint16)  # rounded to nearest even, as the host
    assert np.array_equal(got, bf16_bits)


def test_wgmma_m64n128k16_from_swizzled_descriptors(probe):
    """D = 1 + A (64x16) B (16x128); thread t holds D[16w + g + 8(e/2)][8j + 2c + e%2] in register 4j+e
    (w = t/32, g = (t%32)/4, c = t%4; CuTe CLayout_64xN)."""
    d = probe("wgmma")["d"]
    A = np.array([[a_value(m, k) for k in range(16)] for m in range(64)], dtype=np.float64)
    B = np.array([[b_value(k, n) for n in range(128)] for k in range(16)], dtype=np.float64)
    D = A @ B + 1.0
    for t in range(128):
        w, g, c = t // 32, (t % 32) // 4, t % 4
        for j in range(16):
            for e in range(4):
                assert d[t * 64 + 4 * j + e] == D[16 * w + g + 8 * (e // 2), 8 * j + 2 * c + e % 2], (t, j, e)
