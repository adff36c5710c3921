"""Each PTX instruction family of the executor against tables computed here from the PTX ISA and the
CuTe layouts (../shared/EMULATION.md §1), independently of our kernels: the probes
(tests/emulator/ptx_probe.cu) run one instruction on known inputs and print what each lane or shared
byte holds."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
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


# ---- the PTX of bmm_wgmma_v2.cu (tests/emulator/ptx_probe_sm90.cu) ------------------------------------

PROBE_SM90 = Path(__file__).parent / "emulator" / "ptx_probe_sm90.cu"


@pytest.fixture(scope="module")
def probe_sm90(tmp_path_factory):
    """Runs one probe; returns its rows, or the executor's report (a str) when the probe was refused."""
    tools = Toolchain(tmp_path_factory.mktemp("ptx_sm90"))
    exe = tools.program(PROBE_SM90, tools.root / "ptx_probe_sm90")

    def run(what: str, mode: int | str = 0) -> dict[str, np.ndarray] | str:
        done = subprocess.run([str(exe), what, *str(mode).split()], capture_output=True, text=True, timeout=120,
                              check=False)
        if done.returncode == 2:
            assert done.stdout.startswith("REPORT "), done.stdout + done.stderr
            return done.stdout
        assert done.returncode == 0, done.stdout + done.stderr
        return {name: np.array([float(v) for v in values])
                for name, *values in (line.split() for line in done.stdout.splitlines())}

    return run


def test_stmatrix_x4_is_the_inverse_of_ldmatrix(probe_sm90):
    """Lane l's register j holds row l/4, columns 2(l%4) and +1 of matrix j (low half first), lane l
    names row l%8 of matrix l/8 (PTX stmatrix; CuTe SM90_U32x4_STSM_N): each element lands at 64 j + 8 row + col."""
    assert list(probe_sm90("stmatrix")["tile"]) == list(range(256))


def test_named_barriers_order_their_own_threads(probe_sm90):
    """bar.sync 1, 64 and bar.sync 2, 64 each order one writer warp before one reader warp; a reader
    that skips its barrier is a race; two counts for one barrier are refused."""
    regs = probe_sm90("bar_sync")["regs"]
    for pair in range(2):
        for lane in range(32):
            for j in range(4):
                # the reader's ldmatrix gives back what the writer's stmatrix put there (inverse maps)
                assert regs[pair * 128 + lane * 4 + j] == (1000 * pair + 10 * j + lane) | (1 << 16)
    assert "shared-memory race" in probe_sm90("bar_sync", 1)
    assert "bar.sync misuse" in probe_sm90("bar_sync", 2) and "count" in probe_sm90("bar_sync", 2)


def test_setmaxnreg_moves_registers_within_the_block_pool(probe_sm90):
    """384 threads start with 168 registers each; .dec 40 by one warpgroup frees what .inc 232 by two
    others takes. 240 does not add up: the .inc waits forever (a deadlock naming setmaxnreg); .inc below
    the current count is a misuse."""
    assert list(probe_sm90("setmaxnreg", 232)["flags"]) == [1] * 384
    over = probe_sm90("setmaxnreg", 240)
    assert "deadlock" in over and "setmaxnreg.inc to 240" in over and "registers" in over
    assert "setmaxnreg misuse" in probe_sm90("setmaxnreg", 160) and "below the current 168" in probe_sm90("setmaxnreg", 160)
    assert "above the current 168" in probe_sm90("setmaxnreg", 1)
    assert "not a multiple of 8" in probe_sm90("setmaxnreg", 2)


def test_tma_store_writes_the_swizzled_box_clipped_to_the_tensor(probe_sm90):
    """A 64 x 64 box at (col 72, row 8) of a 40 x 104 bf16 matrix: the elements inside the matrix hold
    the tile's (r, c) = (7r + 3c) % 61 - 30 (the stmatrix image read through the 128B swizzle), the rest
    of the matrix keeps its poison (the store clips, it writes nothing outside)."""
    c = probe_sm90("tma_store")["c"].reshape(40, 104)
    for row in range(40):
        for col in range(104):
            if row >= 8 and col >= 72:
                assert c[row, col] == (7 * (row - 8) + 3 * (col - 72)) % 61 - 30, (row, col)
            else:
                assert np.isnan(c[row, col]), (row, col)
    # negative coordinates (col -8, row -60): only the box's part inside the matrix is written,
    # rows 0..3 and columns 0..55 holding tile element (row + 60, col + 8)
    c = probe_sm90("tma_store", 4)["c"].reshape(40, 104)
    for row in range(40):
        for col in range(104):
            if row < 4 and col < 56:
                assert c[row, col] == (7 * (row + 60) + 3 * (col + 8)) % 61 - 30, (row, col)
            else:
                assert np.isnan(c[row, col]), (row, col)


@pytest.mark.parametrize("mode,rule", [
    (1, "generic-proxy write not fenced before an async-proxy read"),  # no fence.proxy.async
    (2, "shared-memory race"),                                        # no barrier before the store
    (3, "shared-memory race (write after read)"),                     # rewritten before wait_group.read
])
def test_tma_store_ordering_rules(probe_sm90, mode, rule):
    assert rule in probe_sm90("tma_store", mode)


def m64n256_registers(products: int):
    """What the 128 threads' 128 accumulators hold for D = 1 + products * A (64x16) B (16x256), as (128, 32, 4):
    thread t holds D[16w + g + 8(e/2)][8j + 2c + e%2] in register 4j+e, j = 0..31 (CuTe CLayout_64xN, N = 256);
    and each register's column."""
    A = np.array([[a_value(m, k) for k in range(16)] for m in range(64)], dtype=np.float64)
    B = np.array([[b_value(k, n) for n in range(256)] for k in range(16)], dtype=np.float64)
    D = products * (A @ B) + 1.0
    t = np.arange(128)[:, None, None]
    j = np.arange(32)[None, :, None]
    e = np.arange(4)[None, None, :]
    rows = 16 * (t // 32) + (t % 32) // 4 + 8 * (e // 2)
    cols = np.broadcast_to(8 * j + 2 * (t % 4) + e % 2, (128, 32, 4))
    return D[rows, cols], cols


def test_wgmma_m64n256k16_layout(probe_sm90):
    """D = 1 + A (64x16) B (16x256) from K-major operands, in the accumulator layout."""
    expected, _ = m64n256_registers(1)
    assert np.array_equal(probe_sm90("wgmma256")["d"].reshape(128, 32, 4), expected)


def test_wgmma_m64n256k16_from_mn_major_operands(probe_sm90):
    """imm-trans-a/b = 1: A stored as 16 k-rows of 64 m, B as 16 k-rows of 256 n in four 64-column TMA boxes
    (the descriptor's leading byte offset from one box to the next), both 128B-swizzled; D = 1 + A B in the
    same accumulator layout as the K-major case. With B's leading byte offset wrong (mode 1) columns 64-255
    are wrong and columns 0-63 right: the offset is what finds the next 64 columns."""
    expected, cols = m64n256_registers(1)
    assert np.array_equal(probe_sm90("wgmma256_mn")["d"].reshape(128, 32, 4), expected)
    wrong = probe_sm90("wgmma256_mn", 1)["d"].reshape(128, 32, 4)
    assert np.array_equal(wrong[cols < 64], expected[cols < 64]) and not np.array_equal(wrong, expected)


def test_wgmma_groups_chained_in_flight(probe_sm90):
    """Two groups on the same accumulators, the second issued while the first is in flight: after
    wait_group 1 the registers are still undefined (poison), after wait_group 0 they hold 1 + 2 A B —
    both products, in order (the handler's chains; PTX: accumulator chains need no wait in between)."""
    rows = probe_sm90("wgmma256", 1)
    assert np.isnan(rows["mid"]).all()
    assert np.array_equal(rows["d"].reshape(128, 32, 4), m64n256_registers(2)[0])


def test_cluster_multicast_remote_arrive_and_barrier(probe_sm90):
    """Two blocks in a cluster: block 0's multicast lands the same 128B-swizzled box in both blocks, each
    completing its own block's mbarrier; arrives through mapa complete the peer's barrier. Misuses: a
    ctaMask outside the cluster, mapa of a rank outside it, remote arrives with no barrier.cluster after
    the inits, exit with no barrier.cluster after the peer's last access, a grid the cluster does not divide."""
    img = probe_sm90("cluster")["image"].astype(np.uint8).view(np.uint16)
    expect = np.zeros(16 * 64, dtype=np.float32)
    for r in range(16):
        for k in range(64):
            chunk, within = (k * 2 // 16), k * 2 % 16
            phys = (r * 128 + ((chunk ^ (r % 8)) * 16) + within) // 2
            expect[phys] = r * 100 + k if k < 40 else 0.0
    bits = expect.view(np.uint32).astype(np.uint64)
    bf16_bits = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype(np.uint16)
    assert np.array_equal(img[: 16 * 64], bf16_bits) and np.array_equal(img[16 * 64:], bf16_bits)
    assert "TMA multicast misuse" in probe_sm90("cluster", 1)
    assert "mapa misuse" in probe_sm90("cluster", 2)
    unordered = probe_sm90("cluster", 3)
    assert "mbarrier misuse" in unordered and ("not ordered after its init" in unordered or "no initialised" in unordered)
    early_exit = probe_sm90("cluster", 4)
    assert ("block exits while its cluster may still reach its shared memory" in early_exit
            or "access to an exited block's shared memory" in early_exit)
    assert "must hold 1 to 8 blocks" in probe_sm90("cluster", 5)



@pytest.mark.parametrize("n,h,w,c,r,s,stride,pad,dil,tap,m0", [
    (2, 7, 9, 40, 3, 3, 1, 1, 1, (2, 0), 5),     # padding, 40 of 64 channels (the rest zero), rows wrap
    (2, 11, 10, 64, 7, 7, 2, 3, 1, (6, 6), 20),  # the stem's geometry: stride 2, padding 3, the last tap
    (1, 9, 8, 16, 3, 3, 1, 2, 2, (1, 2), 0),     # dilation 2 ("same" padding)
    (2, 5, 6, 8, 1, 1, 1, 0, 1, (0, 0), 50),     # a 1x1: 60 pixels in all, the column runs past the last image
    (3, 6, 7, 24, 3, 2, 3, 1, 1, (0, 1), 3),     # stride 3, a 3x2 filter
])
def test_im2col_tma_against_an_independent_im2col(probe_sm90, n, h, w, c, r, s, stride, pad, dil, tap, m0):
    """An im2col TMA copy (PTX tensor im2col mode, map from cuTensorMapEncodeIm2col) of 32 output pixels x
    64 channels for one filter tap equals torch's unfold of the same input, column for column: padding and
    channels past C zero-filled, the traversal wrapping rows and images, pixels past N*P*Q zero."""
    x = torch.tensor([[[[(7 * i + 5 * y + 3 * xx + ch) % 97 - 48 for ch in range(c)] for xx in range(w)]
                       for y in range(h)] for i in range(n)], dtype=torch.float64).permute(0, 3, 1, 2)
    cols = torch.nn.functional.unfold(x, (r, s), dilation=dil, padding=pad, stride=stride)  # (N, C*R*S, P*Q)
    pq = cols.shape[2]
    expect = np.zeros((32, 64))
    for j in range(32):
        m = m0 + j
        if m // pq < n:
            expect[j, :c] = cols[m // pq, :, m % pq].reshape(c, r, s)[:, tap[0], tap[1]].numpy()
    args = " ".join(map(str, (n, h, w, c, r, s, stride, pad, dil, tap[0], tap[1], m0)))
    img = probe_sm90("im2col", args)["image"].astype(np.uint8).view(np.uint16)
    got = np.zeros((32, 64))
    for row in range(32):
        for k in range(64):
            chunk, within = k * 2 // 16, k * 2 % 16
            bits = np.array([img[(row * 128 + ((chunk ^ (row % 8)) * 16) + within) // 2]], dtype=np.uint16)
            got[row, k] = (bits.astype(np.uint32) << 16).view(np.float32)[0]
    assert np.array_equal(got, expect)
