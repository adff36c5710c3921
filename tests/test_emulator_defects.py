"""The executor's checks have teeth: deliberate defects, each applied to a copy of the kernel
sources, must each be caught — by wrong numbers or by one of the executor's reports. Every mutant is
built with a torch-free driver (tests/emulator/gemm_harness.cpp) and run in its own process; the
unmodified sources must pass the same driver first (so a catch is the defect's doing)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from emulator_tools import Toolchain

from accelkernels.emulator import build

pytestmark = pytest.mark.emulated

HARNESS = Path(__file__).parent / "emulator" / "gemm_harness.cpp"
CONV_HARNESS = Path(__file__).parent / "emulator" / "conv_harness.cpp"
HARNESSES = {"conv2d_wgmma": CONV_HARNESS, "conv2d_wgmma_weight_grad": CONV_HARNESS}  # the rest: HARNESS
DEFINES = {"conv2d_wgmma_weight_grad": ("AK_CONV_WEIGHT_GRAD=1",)}  # kernel file -> the driver's extra defines
LAUNCHERS = {  # kernel file -> (launcher, element type)
    "bmm_naive": ("launch_bmm_naive_f32", "float"),
    "bmm_warptile": ("launch_bmm_warptile_f32", "float"),
    "bmm_mma_sync": ("launch_bmm_mma_sync_f16", "__half"),
    "bmm_wgmma": ("launch_bmm_wgmma_bf16", "__nv_bfloat16"),
    "bmm_wgmma_v2": ("launch_bmm_wgmma_v2_bf16", "__nv_bfloat16"),
    "bmm_wgmma_cluster": ("launch_bmm_wgmma_cluster_bf16", "__nv_bfloat16"),
    "conv2d_wgmma": ("launch_conv2d_wgmma<__nv_bfloat16>", "__nv_bfloat16"),
    "conv2d_wgmma_weight_grad": ("launch_conv2d_wgmma_weight_grad<__nv_bfloat16>", "__nv_bfloat16"),
}
PROBLEMS = {  # batch m n k a_kcontig b_kcontig sms
    "bmm_naive": "1 33 17 19 1 0 2",
    "bmm_warptile": "1 130 70 36 1 0 2",
    "bmm_mma_sync": "2 136 72 88 1 0 2",
    "bmm_mma_sync_mk": "1 136 72 88 0 0 2",
    "bmm_wgmma": "1 130 70 600 1 1 1",
    "bmm_wgmma_v2": "1 130 264 600 1 1 1",  # one SM walks 4 tiles of 128x256, 10 K tiles each
    "bmm_wgmma_cluster": "1 300 264 200 1 1 2",  # one cluster of 2 walks 4 tile pairs, the last pair half outside M
    "conv2d_wgmma": "2 72 21 23 24 3 3 2 1 1 2",  # n c h w k r s stride pad dilation sms: 2 channel blocks, stride 2,
                                                  # 264 pixels: tiles that start inside an image
    # input_grad at stride 2, dilation 3 (4 phases of 1, 2, 2, 4 taps; a first tap of 1 moves the dy origin),
    # 2 groups of 40 channels and 16 output channels
    "conv2d_wgmma_input_grad": "2 80 11 13 32 3 3 2 1 3 2 input_grad 2",
    "conv2d_wgmma_input_grad_s1": "1 16 9 10 24 3 3 1 1 2 2 input_grad 1",  # stride 1, dilation 2: TMA stores
    "conv2d_wgmma_input_grad_tapless": "1 16 9 10 16 3 3 2 1 2 2 input_grad 1",  # dilation 2 at stride 2: odd rows
                                                                                  # and columns get no tap
    # weight_grad, 2 groups of 72 input channels (2 channel blocks per tap, the second ragged) and 16 output
    # channels, stride 2, padding 2, dilation 2, 2 images of 10 x 10 output pixels (200: 4 pixel steps, the last
    # ragged), 2 slices of 2 steps; 3 x 3 x 2 = 18 column blocks: 5 column tiles, the last with two blocks past
    "conv2d_wgmma_weight_grad": "2 144 19 20 32 3 3 2 2 2 2 weight_grad 2 2",
    "conv2d_wgmma_weight_grad_one_slice": "1 16 9 10 24 3 3 1 1 1 1 weight_grad 1 1",  # stride 1, one slice
    "conv2d_wgmma_weight_grad_wide": "1 16 9 10 264 3 3 1 1 1 2 weight_grad 1 2",  # 264 output channels: 3 row tiles
    "conv2d_wgmma_weight_grad_ragged_slice": "1 16 13 14 24 3 3 1 1 1 1 weight_grad 1 2",  # 182 pixels: slices of 2, 1 steps
}
KERNEL_OF = {"bmm_mma_sync_mk": "bmm_mma_sync"}  # problem -> kernel file, where the prefix does not say
KERNEL_OF.update({problem: "conv2d_wgmma" for problem in PROBLEMS if problem.startswith("conv2d_wgmma")})
KERNEL_OF.update({problem: "conv2d_wgmma_weight_grad" for problem in PROBLEMS
                  if problem.startswith("conv2d_wgmma_weight_grad")})

# (id, file, text, replacement, kernel file, problem)
DEFECTS = [
    ("wait_group count one too high", "mma_sync_tile.cuh", "cp_async_wait<kStages - 2>();",
     "cp_async_wait<kStages - 1>();", "bmm_mma_sync", "bmm_mma_sync"),
    ("missing __syncthreads in the cp.async ring", "mma_sync_tile.cuh",
     "    __syncthreads();  // slice kt visible", "    // slice kt visible", "bmm_mma_sync", "bmm_mma_sync"),
    ("swapped B fragment registers", "mma_sync_tile.cuh",
     "bf[nt / 2][(nt % 2) * 2], bf[nt / 2][(nt % 2) * 2 + 1]",
     "bf[nt / 2][(nt % 2) * 2 + 1], bf[nt / 2][(nt % 2) * 2]", "bmm_mma_sync", "bmm_mma_sync"),
    ("unswizzled shared write", "mma_sync_tile.cuh", "cp_async_16(smem + swizzled(row, chunk, kRowElems * 2)",
     "cp_async_16(smem + static_cast<unsigned>(row * kRowElems * 2 + chunk * 16)", "bmm_mma_sync", "bmm_mma_sync"),
    ("ldmatrix without .trans on an M-contiguous tile", "mma_sync_tile.cuh",
     "else ldmatrix_x4<true>(sa + swizzled(k + r, m / 8, BM * 2), af[mt]);",
     "else ldmatrix_x4<false>(sa + swizzled(k + r, m / 8, BM * 2), af[mt]);", "bmm_mma_sync", "bmm_mma_sync_mk"),
    ("cp.async zero-fill dropped", "mma_sync_tile.cuh", '"r"(valid ? 16 : 0)', '"r"(16)',
     "bmm_mma_sync", "bmm_mma_sync"),
    ("wrong descriptor stride byte offset", "hopper_tma.cuh", "(uint64_t{16 >> 4} << 16) | (uint64_t{1024 >> 4} << 32)",
     "(uint64_t{16 >> 4} << 16) | (uint64_t{512 >> 4} << 32)", "bmm_wgmma", "bmm_wgmma"),
    ("wrong mbarrier parity", "bmm_wgmma.cu", "mbar_wait(&full[s], static_cast<unsigned>((step / kStages) & 1));",
     "mbar_wait(&full[s], static_cast<unsigned>(((step / kStages) & 1) ^ 1));", "bmm_wgmma", "bmm_wgmma"),
    ("TMA box off by one row", "bmm_wgmma.cu", "static_cast<int>(tm * BM), static_cast<int>(b), &full[s]);",
     "static_cast<int>(tm * BM + 1), static_cast<int>(b), &full[s]);", "bmm_wgmma", "bmm_wgmma"),
    ("stage released before its wgmma retired", "bmm_wgmma.cu",
     '      asm volatile("wgmma.wait_group.sync.aligned 0;\\n" ::: "memory");\n'
     "      if (thread_in_group == 0) mbar_arrive(&empty[s]);",
     "      if (thread_in_group == 0) mbar_arrive(&empty[s]);\n"
     '      asm volatile("wgmma.wait_group.sync.aligned 0;\\n" ::: "memory");', "bmm_wgmma", "bmm_wgmma"),
    ("expect_tx byte count short by one box", "bmm_wgmma.cu", "mbar_expect_tx(&full[s], kStageBytes);",
     "mbar_expect_tx(&full[s], kTileBytes);", "bmm_wgmma", "bmm_wgmma"),
    # wgmma_v2: the in-flight group, the register split and the TMA-store epilogue
    ("stage released one step early (its wgmma group still in flight)", "wgmma_128x256.cuh",
     "    if (kt > 0 && thread_in_group == 0) release(static_cast<int>((step - 1) % kStages));",
     "    if (kt + 1 < k_tiles && thread_in_group == 0) release(static_cast<int>(step % kStages));",
     "bmm_wgmma_v2", "bmm_wgmma_v2"),
    ("last stage of a tile never released", "wgmma_128x256.cuh",
     "  if (k_tiles > 0 && thread_in_group == 0) release(static_cast<int>((step - 1) % kStages));\n", "",
     "bmm_wgmma_v2", "bmm_wgmma_v2"),
    ("accumulators read before the last wgmma group retired", "wgmma_128x256.cuh",
     "  wgmma_wait<0>();\n  fence_operands(d);", "  fence_operands(d);", "bmm_wgmma_v2", "bmm_wgmma_v2"),
    ("TMA stores not waited for before exit", "bmm_wgmma_v2.cu",
     "  if (thread_in_group == 0) bulk_wait<0>();", "", "bmm_wgmma_v2", "bmm_wgmma_v2"),
    ("staging buffer reused without the warpgroup's barrier", "wgmma_128x256.cuh",
     ("    if (thread_in_group == 0) bulk_wait_read<1>();  // the store that read this buffer two chunks ago is done with it\n"
      "    named_barrier_sync(named, 128);"),
     "    if (thread_in_group == 0) bulk_wait_read<1>();  // the store that read this buffer two chunks ago is done with it",
     "bmm_wgmma_v2", "bmm_wgmma_v2"),
    ("register budget that does not add up", "bmm_wgmma_v2.cu", "  setmaxnreg_inc<kConsumerRegs>();",
     "  setmaxnreg_inc<kConsumerRegs + 8>();", "bmm_wgmma_v2", "bmm_wgmma_v2"),
    ("TMA store issued before the shared tile is complete", "wgmma_128x256.cuh",
     ("    fence_proxy_async();  // this thread's stmatrix writes, before the async proxy reads them\n"
      "    named_barrier_sync(named, 128);"),
     "    fence_proxy_async();  // this thread's stmatrix writes, before the async proxy reads them",
     "bmm_wgmma_v2", "bmm_wgmma_v2"),
    ("stmatrix writes not fenced to the async proxy", "wgmma_128x256.cuh",
     "    fence_proxy_async();  // this thread's stmatrix writes, before the async proxy reads them\n", "",
     "bmm_wgmma_v2", "bmm_wgmma_v2"),
    ("staging buffer rewritten while its TMA store may still read it", "wgmma_128x256.cuh",
     "    if (thread_in_group == 0) bulk_wait_read<1>();  //", "    if (thread_in_group == 0) bulk_wait_read<2>();  //",
     "bmm_wgmma_v2", "bmm_wgmma_v2"),
    ("TMA store at the other consumer's rows", "wgmma_128x256.cuh", "static_cast<int>(tm * BM + consumer * 64),",
     "static_cast<int>(tm * BM),", "bmm_wgmma_v2", "bmm_wgmma_v2"),
    # wgmma_cluster: multicast, cluster-wide release, barrier.cluster
    ("multicast mask that misses a block of the cluster", "bmm_wgmma_cluster.cu",
     "static_cast<uint16_t>((1u << kCluster) - 1)", "static_cast<uint16_t>(1u << rank)",
     "bmm_wgmma_cluster", "bmm_wgmma_cluster"),
    ("expect_tx that leaves out the peer's multicast half", "bmm_wgmma_cluster.cu",
     "mbar_expect_tx(&full[s], kStageBytes);", "mbar_expect_tx(&full[s], kATileBytes + kBHalfBytes);",
     "bmm_wgmma_cluster", "bmm_wgmma_cluster"),
    ("stage released only in the consumer's own block", "bmm_wgmma_cluster.cu",
     "mbar_arrive_cluster(mapa(&empty[stage], r));", "mbar_arrive_cluster(mapa(&empty[stage], rank));",
     "bmm_wgmma_cluster", "bmm_wgmma_cluster"),
    ("cluster barrier left out after the mbarrier inits", "bmm_wgmma_cluster.cu",
     "  cluster_sync();  // the peer's barriers exist before anything reaches them", "",
     "bmm_wgmma_cluster", "bmm_wgmma_cluster"),
    ("cluster barrier left out before exit", "bmm_wgmma_cluster.cu",
     "  cluster_sync();  // neither block leaves while the other may still reach its shared memory", "",
     "bmm_wgmma_cluster", "bmm_wgmma_cluster"),
    # conv2d_wgmma: the im2col copies, the stride phases of the input gradient, the groups
    ("im2col offsets of the filter tap swapped", "conv2d_wgmma.cu",
     "static_cast<uint16_t>(v.offset0_w + tb * v.offset_step_w),\n"
     "                        static_cast<uint16_t>(v.offset0_h + ta * v.offset_step_h)",
     "static_cast<uint16_t>(v.offset0_h + ta * v.offset_step_h),\n"
     "                        static_cast<uint16_t>(v.offset0_w + tb * v.offset_step_w)", "conv2d_wgmma", "conv2d_wgmma"),
    ("im2col bounding box without the padding", "hopper_tma.cuh",
     "const int lower[2] = {static_cast<int>(-pad_w), static_cast<int>(-pad_h)};", "const int lower[2] = {0, 0};",
     "conv2d_wgmma", "conv2d_wgmma"),
    ("tile's first input position without the stride", "conv2d_wgmma.cu",
     "(ij / v.rows_w) * v.step_h", "(ij / v.rows_w)", "conv2d_wgmma", "conv2d_wgmma"),
    ("filter box one tap off", "conv2d_wgmma.cu", "static_cast<int>(filter_tap),",
     "static_cast<int>(filter_tap + 1),", "conv2d_wgmma", "conv2d_wgmma"),
    ("a phase reads filter taps it should skip", "conv_wgmma_views.h", "v.filter_step_r = f.tap_step_r",
     "v.filter_step_r = 1", "conv2d_wgmma", "conv2d_wgmma_input_grad"),
    ("a phase's dy offsets run forwards", "conv_wgmma_views.h", "  offset_step = -delta;",
     "  offset_step = delta;\n  offset0 = 0;", "conv2d_wgmma", "conv2d_wgmma_input_grad_s1"),
    ("a phase's dy origin without its first tap", "conv_wgmma_views.h",
     "const int64_t base = (phase + pad - r0 * dil) / stride", "const int64_t base = (phase + pad) / stride",
     "conv2d_wgmma", "conv2d_wgmma_input_grad"),
    ("a phase's pixels stored at stride 1", "conv2d_wgmma.cu", "a.h, a.w, a.c, gemm_phase<true>(a, phase)}",
     "a.h, a.w, a.c, gemm_phase<false>(a, phase)}", "conv2d_wgmma", "conv2d_wgmma_input_grad"),
    ("a phase no tap reaches left unwritten", "conv2d_wgmma.cu",
     "      if (g.view.empty()) continue;", "      if (g.view.empty() || g.view.tapless()) continue;",
     "conv2d_wgmma", "conv2d_wgmma_input_grad_tapless"),
    ("the group's filter rows at group 0", "conv2d_wgmma.cu", "filter_map(a.weight + group * cg * a.r * a.s * kg",
     "filter_map(a.weight + 0 * cg * a.r * a.s * kg", "conv2d_wgmma", "conv2d_wgmma_input_grad"),
    # conv2d_wgmma_weight_grad: MN-major operands, the (tap, channel block) columns, split-K
    ("MN-major tiles read as K-major", "conv2d_wgmma_weight_grad.cu",
     "mainloop<T, kStages, kStageBytes, kATileBytes, true>", "mainloop<T, kStages, kStageBytes, kATileBytes, false>",
     "conv2d_wgmma_weight_grad", "conv2d_wgmma_weight_grad"),
    ("MN-major leading byte offset half a box", "wgmma_128x256.cuh",
     "matrix_descriptor_mn(b_tile + k * 16 * 128, kBox)", "matrix_descriptor_mn(b_tile + k * 16 * 128, kBox / 2)",
     "conv2d_wgmma_weight_grad", "conv2d_wgmma_weight_grad"),
    ("weight_grad im2col offsets of the tap swapped", "conv2d_wgmma_weight_grad.cu",
     "static_cast<uint16_t>(v.offset0_w + tb * v.offset_step_w),\n"
     "                          static_cast<uint16_t>(v.offset0_h + ta * v.offset_step_h)",
     "static_cast<uint16_t>(v.offset0_h + ta * v.offset_step_h),\n"
     "                          static_cast<uint16_t>(v.offset0_w + tb * v.offset_step_w)",
     "conv2d_wgmma_weight_grad", "conv2d_wgmma_weight_grad"),
    ("partial sums of channels past the group's stored", "conv2d_wgmma_weight_grad.cu", "        if (c < g.channels)\n",
     "        if (c < g.channel_blocks * kBox)\n", "conv2d_wgmma_weight_grad", "conv2d_wgmma_weight_grad"),
    ("every slice's partial sums in slice 0", "conv2d_wgmma_weight_grad.cu", "float* out = g.partial + split * g.slice;",
     "float* out = g.partial;", "conv2d_wgmma_weight_grad", "conv2d_wgmma_weight_grad"),
    ("a split-K slice summed twice", "conv_weight_grad_reduce.cuh", "sum += part[split * slice];",
     "sum += part[split * slice] * (split == 0 ? 2.0f : 1.0f);", "conv2d_wgmma_weight_grad", "conv2d_wgmma_weight_grad"),
    ("dy boxes of the first row tile in every row tile", "conv2d_wgmma_weight_grad.cu",
     "static_cast<int>(tm * BM) + j * kBox, pixel", "j * kBox, pixel", "conv2d_wgmma_weight_grad",
     "conv2d_wgmma_weight_grad_wide"),
    ("the producer's last slice a full slice long", "conv2d_wgmma_weight_grad.cu",
     "      const int64_t first = split * g.steps_per_split, count = std::min(g.steps_per_split, g.steps - first);",
     "      const int64_t first = split * g.steps_per_split, count = g.steps_per_split;",
     "conv2d_wgmma_weight_grad", "conv2d_wgmma_weight_grad_ragged_slice"),
    ("out-of-bounds epilogue store", "epilogue.cuh", "if (row < p.m && col < p.n)", "if (row <= p.m && col < p.n)",
     "bmm_mma_sync", "bmm_mma_sync"),
    ("missing __syncthreads after a shared-tile refill (SIMT)", "bmm_warptile.cu",
     "    if (t + 1 < tiles) store_tile(As[cur ^ 1], Bs[cur ^ 1], tid, ra, rb);\n    __syncthreads();",
     "    if (t + 1 < tiles) store_tile(As[cur ^ 1], Bs[cur ^ 1], tid, ra, rb);", "bmm_warptile", "bmm_warptile"),
]


@pytest.fixture(scope="module")
def toolchain(tmp_path_factory):
    return Toolchain(tmp_path_factory.mktemp("defects"))


@pytest.fixture(scope="module")
def asan_toolchain(tmp_path_factory):
    return Toolchain(tmp_path_factory.mktemp("defects_asan"), sanitize=True)


def compile_kernel(tools: Toolchain, kernels_dir: Path, kernel: str, out: Path) -> Path:
    launcher, element = LAUNCHERS[kernel]
    return tools.program(kernels_dir / f"{kernel}.cu", out, kernels_dir,
                         defines=(f"AK_LAUNCH={launcher}", f"AK_T={element}", *DEFINES.get(kernel, ())),
                         extra_sources=(HARNESSES.get(kernel, HARNESS),))


def run(exe: Path, problem: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(exe), *PROBLEMS[problem].split()], capture_output=True, text=True, timeout=300)


def copy_of_kernels(root: Path, name: str) -> Path:
    target = root / name
    shutil.copytree(build.KERNELS, target)
    return target


@pytest.mark.parametrize("problem", sorted(PROBLEMS))
def test_unmodified_sources_pass_the_driver(toolchain, problem):
    kernel = KERNEL_OF.get(problem, problem)
    exe = compile_kernel(toolchain, build.KERNELS, kernel, toolchain.root / f"clean_{problem}")
    done = run(exe, problem)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("what,file,text,replacement,kernel,problem", DEFECTS, ids=[d[0] for d in DEFECTS])
def test_defect_is_caught(toolchain, what, file, text, replacement, kernel, problem):
    slug = "".join(c if c.isalnum() else "_" for c in what)
    kernels = copy_of_kernels(toolchain.root, slug)
    source = (kernels / file).read_text()
    assert source.count(text) == 1, f"the defect's anchor is not in {file} exactly once: {text!r}"
    (kernels / file).write_text(source.replace(text, replacement))
    exe = compile_kernel(toolchain, kernels, kernel, toolchain.root / f"{slug}_{kernel}")
    done = run(exe, problem)
    print(f"{what}: exit {done.returncode}: {done.stdout.strip()[:400]}")
    assert done.returncode in (1, 2), f"not caught: {what}\n{done.stdout}{done.stderr}"


def test_plain_global_read_past_a_tensor_is_caught_by_the_sanitizer(asan_toolchain):
    """A SIMT kernel's plain C++ load past the end of A: only a sanitizer sees it. The case runs in its own
    process under AddressSanitizer, and the sanitizer's report is the catch (the clean kernel passes there)."""
    clean = compile_kernel(asan_toolchain, build.KERNELS, "bmm_naive", asan_toolchain.root / "clean_naive")
    assert run(clean, "bmm_naive").returncode == 0
    kernels = copy_of_kernels(asan_toolchain.root, "read_past_a")
    source = (kernels / "bmm_naive.cu").read_text()
    anchor = "for (int64_t k = 0; k < p.k; ++k)"
    assert source.count(anchor) == 1
    (kernels / "bmm_naive.cu").write_text(source.replace(anchor, "for (int64_t k = 0; k <= p.k; ++k)"))
    exe = compile_kernel(asan_toolchain, kernels, "bmm_naive", asan_toolchain.root / "read_past_a")
    done = run(exe, "bmm_naive")
    report = [line for line in done.stderr.splitlines() if "ERROR: AddressSanitizer" in line]
    print(f"read past A: exit {done.returncode}: {report[:1]}")
    assert done.returncode != 0 and report, done.stdout + done.stderr[-2000:]
