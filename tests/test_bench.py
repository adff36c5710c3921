"""The benchmark harness itself, on the CPU: suites, counts, rows, reports, plots, the tuning table."""

from __future__ import annotations

import json
import math
import os
import warnings

import pytest
import torch

from accelkernels import cli
from accelkernels.benchmark import problems, report, runner, suites, timing, tuning
from accelkernels.benchmark.suites import Case


def test_every_suite_parses_and_has_a_quick_subset():
    names = suites.available_suites()
    assert {"gemm_square", "gemm_llm", "gemm_odd", "resnet50", "seed_cnn", "depthwise"} <= set(names)
    for name in names:
        cases = suites.load_suite(name)
        assert cases and any(c.quick for c in cases), name
        for c in cases:
            assert c.op in suites.OPS and c.name
    resnet = suites.load_suite("resnet50")
    assert len(resnet) == 26 and {c.dims["batch"] for c in resnet} == {32, 128}
    stem = next(c for c in resnet if c.name.startswith("stem"))
    assert (stem.dims["kernel_h"], stem.dims["stride"], stem.dims["padding"]) == (7, 2, 3)  # the real padding


def test_bad_suite_rows_are_reported_with_suite_and_line():
    with pytest.raises(ValueError, match="suite 'x' line 2: conv2d needs integer columns"):
        suites._parse_row("x", {"name": "a", "op": "conv2d", "batch": "1"}, 2)
    with pytest.raises(ValueError, match="op must be one of"):
        suites._parse_row("x", {"name": "a", "op": "conv3d"}, 5)
    with pytest.raises(ValueError, match="unknown suite"):
        suites.load_suite("nope")


def _gemm(m, n, k, op="matmul"):
    return Case("t", f"{m}x{n}x{k}", op, {"m": m, "n": n, "k": k})


def _conv(batch, c, hw, k, r, stride, pad, groups=1):
    return Case("t", "conv", "conv2d", dict(batch=batch, in_ch=c, height=hw, width=hw, out_ch=k, kernel_h=r,
                                              kernel_w=r, stride=stride, padding=pad, groups=groups))


def test_fused_suite_fuses_for_us_and_runs_torch_unfused():
    cases = suites.load_suite("conv_fused")
    assert cases and all(c.activation == "relu" and c.op == "conv2d" for c in cases)
    assert cases[0].shape_text().endswith("+relu")
    with pytest.raises(ValueError, match="activation must be empty or one of"):
        suites._parse_row("x", {"name": "a", "op": "matmul", "m": "1", "n": "1", "k": "1", "activation": "relu"}, 3)
    small = Case("t", "c", "conv2d", dict(batch=1, in_ch=2, height=5, width=5, out_ch=3, kernel_h=3, kernel_w=3,
                                          stride=1, padding=1, groups=1), activation="relu")
    x, w, b = problems.make_inputs(small, torch.float32, "cpu", "nchw", requires_grad=False).tensors
    expected = torch.relu(torch.nn.functional.conv2d(x, w, b, 1, 1))
    for provider in ("torch", "auto"):
        torch.testing.assert_close(problems.forward_fn(small, provider)(x, w, b), expected)


def test_flop_and_byte_counts_for_known_cases():
    assert problems.flops(_gemm(4096, 4096, 4096), "fwd") == 2 * 4096**3
    resnet_3x3 = _conv(32, 64, 56, 64, 3, 1, 1)
    assert problems.forward_flops(resnet_3x3) == 2 * 32 * 64 * 56 * 56 * 64 * 9
    assert problems.flops(resnet_3x3, "fwd+bwd") == 3 * problems.forward_flops(resnet_3x3)
    stem = _conv(32, 3, 224, 64, 7, 2, 3)
    assert problems.conv_output_hw(stem.dims) == (112, 112)
    depthwise = _conv(32, 64, 56, 64, 3, 1, 1, groups=64)
    assert problems.forward_flops(depthwise) == 2 * 32 * 64 * 56 * 56 * 1 * 9
    # bytes: A, B and C once each, at 2 bytes for bf16
    assert problems.bytes_moved(_gemm(1000, 33, 4097), "fwd", torch.bfloat16) == 2 * (1000 * 4097 + 4097 * 33 + 1000 * 33)


def _settings(**kw):
    defaults = dict(device="cpu", dtypes=["fp32"], modes=["fwd", "fwd+bwd"], layouts=["nchw"],
                    providers=["torch", "cuda", "auto"], pair_budget_s=0.2)  # the tests check rows, not the machine
    return runner.Settings(**{**defaults, **kw})


def test_rows_have_every_field_and_unservable_providers_say_why():
    cases = [c for c in suites.load_suite("seed_cnn") if c.op == "linear"]
    rows = runner.run(cases, _settings(), progress=False)
    assert rows and all(set(r) == set(runner.ROW_FIELDS) for r in rows)
    dense = {c.name: c for c in cases}
    assert all(r["fwd_gflop"] == problems.forward_flops(dense[r["case"]]) / 1e9 for r in rows)  # skipped rows too
    ok = [r for r in rows if r["status"] == "ok"]
    assert {r["provider"] for r in ok} >= {"torch", "auto"}
    for r in ok:
        assert r["median_ms"] > 0 and r["p20_ms"] <= r["median_ms"] <= r["p80_ms"]
        assert r["tflops"] > 0 and r["gbps"] > 0 and r["throughput_unit"] == "rows/s"
        assert r["max_error"] <= 2 * r["torch_error"] + 1e-6
        if r["provider"] == "torch":  # the reference: a latency, no ratio to itself
            assert r["speedup"] is None and r["verdict"] == "reference" and r["same_path"] is None
            continue
        assert r["speedup_low"] <= r["speedup"] <= r["speedup_high"]
        assert r["verdict"] in ("faster", "slower", "no difference")
        assert r["rounds"] >= timing.MIN_ROUNDS_FLOOR and len(r["round_ratios"]) == r["rounds"]
        assert "(paired)" in r["timer"]
    if not torch.cuda.is_available():
        auto = [r for r in ok if r["provider"] == "auto"]
        assert auto and all(r["same_path"] is True and r["reason"] == runner.SAME_PATH_NOTE for r in auto)
    if not torch.cuda.is_available():
        cuda_rows = [r for r in rows if r["provider"] == "cuda"]
        assert cuda_rows and all(r["status"] == "skipped" and "GPU" in r["reason"] for r in cuda_rows)
    assert {r["mode"] for r in rows} == {"fwd", "fwd+bwd"}


def test_a_wrong_provider_is_caught_before_timing(monkeypatch):
    real = problems.forward_fn

    def forward_fn(case, provider):
        fn = real(case, "torch")
        return (lambda *t: fn(*t) * 1.001) if provider == "auto" else fn

    monkeypatch.setattr(problems, "forward_fn", forward_fn)
    rows = runner.run([_gemm(64, 48, 80)], _settings(), progress=False)
    auto = next(r for r in rows if r["provider"] == "auto")
    assert auto["status"] == "wrong" and auto["median_ms"] is None and "2 x torch" in auto["reason"]


def test_report_and_plots_from_a_small_run(tmp_path):
    cases = [_gemm(64, 48, 80), _gemm(128, 128, 128), _conv(2, 3, 12, 4, 3, 1, 1)]
    rows = runner.run(cases, _settings(), progress=False)
    ceilings = {"source": "test", "tbps": 0.02, "tflops": {"fp32": 0.1}}
    meta = {"settings_text": "test", "no_gpu": True, "ceilings": ceilings}
    report.write_data(rows, tmp_path, meta)
    plots = report.write_plots(rows, tmp_path, ceilings)
    report.write_markdown(rows, tmp_path, meta, plots)
    assert set(plots) == {"gemm_tflops.png", "conv_speedup.png", "roofline.png"}
    for p in plots:
        assert (tmp_path / p).read_bytes()[:4] == b"\x89PNG"
    text = (tmp_path / "report.md").read_text()
    for needle in ("No CUDA GPU was found", "α (training", "β (inference", "## t", "Not run on this machine",
                   "Ceilings" if False else "% peak", "(test)", "auto (same path)", "measure accelkernels' dispatch overhead"):
        assert needle in text, needle
    # the headline comes first, the definitions after it
    assert text.index("## Headline") < text.index("## Definitions") < text.index("## t")
    saved = json.loads((tmp_path / "results.json").read_text())
    assert len(saved) == len(rows) and saved[1]["round_ratios"] == rows[1]["round_ratios"]
    header, *lines = (tmp_path / "results.csv").read_text().splitlines()
    assert header.split(",") == list(runner.ROW_FIELDS) and len(lines) == len(rows)


def _ratio_row(provider, mode, ratios, case="c", same_path=False, **kw):
    est = timing.ratio_interval(ratios, [1.0] * len(ratios))
    return dict(suite="s", case=case, op="conv2d", dtype="fp32", layout="nchw", mode=mode, provider=provider,
                status="ok", reason="", speedup=est.ratio, speedup_low=est.low, speedup_high=est.high,
                verdict=est.verdict, tight=est.tight, rounds=est.rounds, round_ratios=ratios, same_path=same_path,
                median_ms=1.0, p20_ms=0.9, p80_ms=1.1, tflops=1.0, gbps=1.0, pct_peak=None, throughput=1.0,
                throughput_unit="images/s", fwd_gflop=1.0, **kw)


def test_alpha_and_beta_are_geometric_means_with_an_interval():
    rows = [_ratio_row("triton", "fwd", [2.0, 2.1, 1.9] * 6, case="a"),
            _ratio_row("triton", "fwd", [0.5, 0.52, 0.48] * 6, case="b"),
            _ratio_row("triton", "fwd+bwd", [4.0, 4.1, 3.9] * 6)]
    ab = report.alpha_beta(rows)["triton"]
    assert ab["beta"].ratio == pytest.approx(1.0) and ab["alpha"].ratio == pytest.approx(4.0)
    assert ab["beta"].cases == 2 and ab["beta"].verdict == "no difference"  # 2x and 0.5x average out
    assert ab["alpha"].verdict == "faster" and ab["alpha"].low < 4.0 < ab["alpha"].high
    # the old format (a single speedup per row, no rounds): the point estimate, and no interval
    old = [dict(status="ok", provider="triton", mode="fwd", speedup=s) for s in (2.0, 0.5)]
    est = report.alpha_beta(old)["triton"]["beta"]
    assert est.ratio == pytest.approx(1.0) and math.isnan(est.low) and report.describe(est) == "1 (no interval)"


def test_the_speedup_is_the_paired_median_of_round_ratios_not_a_quotient_of_medians(monkeypatch):
    """Rounds chosen so the two differ: the median of per-round ratios is 1.5, while the quotient of
    the two sides' medians would be 2.5 / 1.5."""
    ref = [1.0, 4.0, 4.0, 1.0] * 4
    prov = [1.0, 4.0, 2.0, 0.5] * 4  # ratios 1, 1, 2, 2 -> median 1.5; medians: ref 2.5 / prov 1.5
    calls = []

    def fake(reference, provider, device, timer, **kw):
        calls.append(kw)
        return timing.PairedTiming(ref, prov, timing.ratio_interval(ref, prov), "fake (paired)")

    monkeypatch.setattr(timing, "paired_or_events", fake)
    rows = runner.run([_gemm(16, 16, 16)], _settings(providers=["torch", "auto"], modes=["fwd"]), progress=False)
    auto, reference = next(r for r in rows if r["provider"] == "auto"), next(r for r in rows if r["provider"] == "torch")
    assert auto["speedup"] == pytest.approx(1.5) and auto["timer"] == "fake (paired)"
    assert reference["median_ms"] == pytest.approx(2.5) and auto["median_ms"] == pytest.approx(1.5)
    assert auto["round_ratios"] == [r / p for r, p in zip(ref, prov)]
    assert calls == [{"budget_s": 0.2}]  # the settings' budget reaches the pairing


def test_a_provider_doing_twice_the_work_is_slower_with_an_interval_excluding_one(monkeypatch):
    real = problems.forward_fn

    def forward_fn(case, provider):
        fn = real(case, "torch")
        if provider != "auto":
            return fn
        return lambda *t: (fn(*t), fn(*t))[1]

    monkeypatch.setattr(problems, "forward_fn", forward_fn)
    settings = _settings(providers=["torch", "auto"], modes=["fwd"], pair_budget_s=0.5, threads=1)
    rows = runner.run([_gemm(256, 256, 256)], settings, progress=False)
    auto = next(r for r in rows if r["provider"] == "auto")
    assert auto["verdict"] == "slower" and auto["speedup_high"] < 1.0 and 0.3 < auto["speedup"] < 0.8, auto


def test_auto_is_marked_same_path_only_when_it_resolves_to_the_reference(monkeypatch):
    x = problems.make_inputs(_gemm(8, 8, 8), torch.float32, "cpu", "nchw", requires_grad=False).tensors
    assert runner.same_path(_gemm(8, 8, 8), "torch", x) is None
    assert runner.same_path(_gemm(8, 8, 8), "cuda:naive", x) is False
    if not torch.cuda.is_available():
        assert runner.same_path(_gemm(8, 8, 8), "auto", x) is True  # on the CPU: the reference only
    from accelkernels import backends

    monkeypatch.setattr(backends, "_automatic", lambda *a: backends.BACKENDS["triton"])  # what auto ran
    assert runner.same_path(_gemm(8, 8, 8), "auto", x) is False


def test_the_cpu_size_limit_names_its_unit_and_flag():
    small, large = _gemm(16, 16, 16), _gemm(64, 64, 64)  # 8.2 kFLOP and 0.52 MFLOP forward
    rows = runner.run([small, large], _settings(providers=["torch"], modes=["fwd"], cpu_max_flops=1e5), progress=False)
    by_case = {r["case"]: r for r in rows}
    assert by_case[small.name]["status"] == "ok"
    skipped = by_case[large.name]
    assert skipped["status"] == "skipped" and skipped["reason"] == runner.cpu_limit_reason(1e5)
    assert "0.0001 GFLOP" in skipped["reason"] and "--cpu-max-gflop" in skipped["reason"]


def _section(text: str, title: str) -> str:
    start = text.index(f"## {title}")
    end = text.find("\n## ", start + 3)
    return text[start:end if end > 0 else None]


def test_report_groups_reasons_once_and_leaves_out_empty_sections(tmp_path):
    gpu_reason = "no CUDA GPU visible"
    limit = runner.cpu_limit_reason(1e9)
    rows = [_ratio_row("auto", "fwd", [1.0, 1.01, 0.99] * 6, case=c, same_path=True) for c in ("a", "b")]
    rows += [dict(rows[0], provider="torch", speedup=None, verdict="reference", same_path=None, round_ratios=None),
             dict(rows[1], provider="torch", speedup=None, verdict="reference", same_path=None, round_ratios=None)]
    for provider in ("cuda", "cuda:naive", "triton"):
        for case in ("a", "b", "big"):
            rows.append(dict(suite="s", case=case, mode="fwd", dtype="fp32", layout="nchw", provider=provider,
                             status="skipped", reason=gpu_reason, fwd_gflop=1.0))
    for provider in ("torch", "auto"):
        rows.append(dict(suite="s", case="big", mode="fwd", dtype="fp32", layout="nchw", provider=provider,
                         status="skipped", reason=limit, fwd_gflop=7.4))
        rows.append(dict(suite="empty", case="huge", mode="fwd", dtype="fp32", layout="nchw", provider=provider,
                         status="skipped", reason=limit, fwd_gflop=137.0))
    report.write_markdown(rows, tmp_path, {"no_gpu": True}, [])
    text = (tmp_path / "report.md").read_text()
    assert text.count(gpu_reason) == 1  # said once, at the top, for every provider it applies to
    assert "- cuda, cuda:naive, triton: no CUDA GPU visible" in _section(text, "Not run on this machine")
    section = _section(text, "s")
    assert section.count(limit) == 1 and "torch, auto; big (7.4 GFLOP)" in section
    assert "## empty" not in text and "empty, skipped: " + limit in _section(text, "Suites with nothing timed")
    assert "1 [" in section and "no difference" in section and "auto (same path)" in section
    assert "## Plots" not in text  # nothing drawn, nothing said


def test_consistency_warnings_flag_a_forward_slower_than_its_forward_backward(tmp_path):
    fwd = _ratio_row("auto", "fwd", [1.0] * 16)
    both = dict(_ratio_row("auto", "fwd+bwd", [1.0] * 16), median_ms=0.5)
    report.write_markdown([fwd, both], tmp_path, {}, [])
    text = (tmp_path / "report.md").read_text()
    assert "## Consistency warnings" in text and "fwd 1 ms > fwd+bwd 0.5 ms" in text
    report.write_markdown([fwd, dict(both, median_ms=3.0)], tmp_path, {}, [])
    assert "Consistency" not in (tmp_path / "report.md").read_text()
    report.write_markdown([dict(fwd, pct_peak=251.0)], tmp_path, {}, [])  # a ceiling below a measured rate
    assert "1 row(s) above 100% of the ceiling (c fwd auto (251%))" in (tmp_path / "report.md").read_text()


def test_without_matplotlib_the_plots_are_skipped_with_a_hint(tmp_path, monkeypatch, capsys):
    import sys

    monkeypatch.setitem(sys.modules, "matplotlib", None)  # `import matplotlib` now raises ImportError
    rows = [_ratio_row("auto", "fwd", [1.0] * 16)]
    assert report.write_plots(rows, tmp_path, None) is None
    out = tmp_path / "run"
    code = cli.main(["bench", "--suite", "seed_cnn", "--op", "linear", "--mode", "fwd", "--backend", "torch",
                     "--out", str(out), "--no-progress", "--pair-budget", "0.1"])
    assert code == 0
    assert 'pip install "accelkernels[bench]"' in capsys.readouterr().err
    assert 'pip install "accelkernels[bench]"' in (out / "report.md").read_text()
    assert not list(out.glob("*.png"))


def test_bench_command_writes_everything(tmp_path, capsys):
    out = tmp_path / "run"
    code = cli.main(["bench", "--suite", "seed_cnn", "--op", "linear", "--mode", "fwd", "--out", str(out), "--no-progress",
                     "--pair-budget", "0.2"])
    assert code == 0
    for name in ("results.json", "results.csv", "report.md", "meta.json", "roofline.png", "gemm_tflops.png"):
        assert (out / name).exists(), name
    printed = capsys.readouterr().out
    assert "report.md" in printed and " s -> " in printed
    meta = json.loads((out / "meta.json").read_text())
    assert meta["run_seconds"] > 0 and "pairing budget 0.2 s" in meta["settings_text"]
    if not torch.cuda.is_available():
        assert meta["cpu_threads"] == runner.default_cpu_threads() and meta["allocator_pinned"] is True


def test_tune_does_not_offer_tune_and_bench_does(capsys):
    for command, offered in (("tune", False), ("bench", True)):
        with pytest.raises(SystemExit):
            cli.main([command, "--help"])
        assert ("--tune" in capsys.readouterr().out) is offered, command


@pytest.mark.parametrize("value", ["foo", "cuda:nope", "triton:nope", "Torch", "cuda:"])
def test_a_bad_backend_is_refused_before_any_case_runs(value, capsys, monkeypatch):
    monkeypatch.setattr(runner, "run", lambda *a, **k: pytest.fail("a case ran"))
    with pytest.raises(SystemExit) as exc:
        cli.main(["bench", "--backend", value, "--no-progress"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert f"unknown provider {value!r}" in err and "triton:tiled" in err and "auto" in err


@pytest.mark.parametrize("argv", [["--cpu-max-gflop", "0"], ["--cpu-max-gflop", "x"], ["--pair-budget", "-1"],
                                  ["--threads", "0"], ["--dtype", "fp64"], ["--mode", "bwd2"]])
def test_other_bad_values_are_refused_by_the_parser(argv, capsys, monkeypatch):
    monkeypatch.setattr(runner, "run", lambda *a, **k: pytest.fail("a case ran"))
    with pytest.raises(SystemExit) as exc:
        cli.main(["bench", *argv])
    assert exc.value.code == 2 and argv[0] in capsys.readouterr().err


def test_cuda_kernel_names_come_from_the_registry_when_the_extension_is_there(monkeypatch):
    from accelkernels import _extension
    from accelkernels.benchmark import cli as bench_cli

    status = _extension.status()
    if status.loaded:
        names = [k["name"] for k in status.module.kernels() if k["op"] == "cuda_bmm"]
        assert all(bench_cli.provider_name(f"cuda:{n}") == f"cuda:{n}" for n in names)
    absent = _extension.ExtensionStatus(_extension.ABSENT, "not built here")
    monkeypatch.setattr(_extension, "status", lambda *a, **k: absent)
    assert bench_cli.provider_name("cuda:some_kernel") == "cuda:some_kernel"  # cannot be checked: its rows say why
    import argparse

    with pytest.raises(argparse.ArgumentTypeError, match="not available here: not built here"):
        bench_cli.provider_name("cuda:not a name")


def test_repeatability_script_reads_old_and_new_results(tmp_path, capsys):
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location("bench_repeatability",
                                                  Path(__file__).parents[1] / "bench" / "bench_repeatability.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    old_row = dict(status="ok", provider="auto", mode="fwd", suite="s", case="c", dtype="fp32", layout="nchw")
    for k, speedup in enumerate((0.5, 2.0)):  # the old format: one speedup per row
        (tmp_path / f"old{k}").mkdir()
        (tmp_path / f"old{k}" / "results.json").write_text(json.dumps([{**old_row, "speedup": speedup}]))
    for k, ratios in enumerate(([1.0, 1.02, 0.98] * 6, [1.05, 1.07, 1.03] * 6)):
        (tmp_path / f"new{k}").mkdir()
        (tmp_path / f"new{k}" / "results.json").write_text(json.dumps([_ratio_row("auto", "fwd", ratios, case="c")]))
    out = tmp_path / "spread.md"
    assert script.main(["--group", "before", str(tmp_path / "old0"), str(tmp_path / "old1"),
                        "--group", "after", str(tmp_path / "new0"), str(tmp_path / "new1"), "--write", str(out)]) == 0
    text = out.read_text()
    assert "| β auto | 0.5 2 | 0.5-2 | 4.00 | 1 1.05 | 1-1.05 | 1.05 |" in text
    assert "| s / c / fp32 nchw fwd / auto | 0.5 2 | 4.00 | 1 1.05 | 1.05 |" in text
    assert "| rows whose verdict changed between runs | no verdicts | 1 of 1 |" in text  # no difference -> faster
    assert json.loads(out.with_suffix(".json").read_text())["after"]["headline"]["β auto"]["max_over_min"] == 1.05


# --- the tuning table ---------------------------------------------------------------------------------

KEY = {"device": "Test GPU", "capability": "9.0", "torch": "x", "triton": "y", "accelkernels": "z"}
SQUARE_256 = "matmul|fwd|bfloat16|r.r|none|k256|m8|n8|b0"


def test_tuning_table_round_trips_and_picks_the_fastest(tmp_path):
    rows = [
        dict(status="ok", mode="fwd", provider="torch", suite="gemm_square", case="square 256", op="matmul",
             dtype="bf16", layout="row-major", median_ms=2.0),
        dict(status="ok", mode="fwd", provider="triton", suite="gemm_square", case="square 256", op="matmul",
             dtype="bf16", layout="row-major", median_ms=1.0),
        dict(status="wrong", mode="fwd", provider="cuda", suite="gemm_square", case="square 256", op="matmul",
             dtype="bf16", layout="row-major", median_ms=None),
    ]
    table = tuning.build_table(rows, KEY)
    assert table["entries"] == {SQUARE_256: {"backend": "triton", "by": "tune", "ratios": {"triton": 2.0},
                                             "reference_ms": 2.0}}
    path = tuning.save(table, tmp_path / "t.json")
    assert tuning.load(path, KEY) == table["entries"]


def test_tuning_table_from_paired_rows_needs_a_faster_verdict():
    base = dict(status="ok", mode="fwd", suite="gemm_square", case="square 256", op="matmul", dtype="bf16",
                layout="row-major", median_ms=1.0)
    rows = [dict(base, provider="torch", verdict="reference", speedup=None),
            dict(base, provider="triton", verdict="no difference", speedup=1.04, median_ms=0.9),
            dict(base, provider="cuda", verdict="slower", speedup=0.5, median_ms=0.5)]
    entry = tuning.build_table(rows, KEY)["entries"][SQUARE_256]
    assert entry["backend"] == "torch"  # lower latencies, but not faster
    assert entry["ratios"] == {"triton": 1.04, "cuda": 0.5}
    rows.append(dict(rows[1], provider="cuda", verdict="faster", speedup=1.3))
    assert tuning.build_table(rows, KEY)["entries"][SQUARE_256]["backend"] == "cuda"


def test_corrupt_or_foreign_tuning_files_are_ignored_with_a_warning(tmp_path):
    path = tmp_path / "t.json"
    path.write_text("{not json")
    with pytest.warns(RuntimeWarning, match="unreadable"):
        assert tuning.load(path, KEY) is None
    path.write_text(json.dumps({"format": 2, "key": KEY, "entries": {"b": {"backend": "os.system"}}}))
    with pytest.warns(RuntimeWarning, match="malformed"):
        assert tuning.load(path, KEY) is None
    tuning.save({"format": 2, "key": {**KEY, "device": "Other"}, "entries": {}}, path)
    with pytest.warns(RuntimeWarning, match="written for"):
        assert tuning.load(path, KEY) is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert tuning.load(tmp_path / "absent.json", KEY) is None


@pytest.mark.parametrize("layout", ["nchw", "nhwc"])
def test_case_keys_are_the_keys_of_the_calls_auto_times(layout):
    """`tune` (from cases) and auto's first use (from live calls) must write the same keys."""
    from accelkernels.ops.conv2d import forward_problem
    from accelkernels.ops.linear import linear_problem

    case = _conv(32, 64, 56, 64, 3, 1, 1)
    x, w, b = problems.make_inputs(case, torch.bfloat16, "cpu", layout, requires_grad=False).tensors
    live = forward_problem(x, w, b, (1, 1), (1, 1), (1, 1), 1, "none").key
    assert tuning.case_key(case, "bf16", layout) == live
    lin = _gemm(4096, 14336, 4096, op="linear")
    x, w, b = torch.empty(2, 2048, 4096, dtype=torch.float16), torch.empty(14336, 4096, dtype=torch.float16), \
        torch.empty(14336, dtype=torch.float16)
    assert tuning.case_key(lin, "fp16", "row-major") == linear_problem(x, w, b, "none").key


def test_readme_performance_section_comes_from_the_newest_gpu_run(tmp_path):
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location("update_readme", Path(__file__).parents[1] / "bench" / "update_readme.py")
    update_readme = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(update_readme)
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{update_readme.BEGIN}\nold\n{update_readme.END}\noutro\n")
    results = tmp_path / "results"
    meta = {"device": "NVIDIA H100 80GB HBM3", "capability": "9.0", "torch": "2.11", "cuda": "13.0", "triton": "3.6",
            "commit": "abc", "no_gpu": False}
    row = {"status": "ok", "provider": "triton", "speedup": 0.5, "suite": "gemm_square", "mode": "fwd", "dtype": "bf16"}
    for day, speedup in (("2026-01-01", 0.5), ("2026-02-01", 2.0)):
        (results / day).mkdir(parents=True)
        (results / day / "meta.json").write_text(json.dumps({**meta, "timestamp": day}))
        (results / day / "results.json").write_text(json.dumps([{**row, "speedup": speedup}]))
    (results / "cpu-only").mkdir()
    (results / "cpu-only" / "meta.json").write_text(json.dumps({**meta, "no_gpu": True, "timestamp": "2027"}))
    (results / "cpu-only" / "results.json").write_text("[]")
    assert update_readme.main(["--results", str(results), "--readme", str(readme)]) == 0
    text = readme.read_text()
    assert text.startswith("intro\n") and text.endswith("outro\n") and "old" not in text
    assert "NVIDIA H100 80GB HBM3" in text and "2026-02-01" in text
    assert "| gemm_square | fwd | bf16 | triton | 2.000 | no interval | 1 |" in text  # an old run: no rounds
    paired = [{**row, "speedup": 1.5, "round_ratios": [1.5, 1.52, 1.48] * 6},
              {**row, "provider": "auto", "speedup": 1.0, "round_ratios": [1.0, 1.01, 0.99] * 6, "same_path": True}]
    (results / "2026-03-01").mkdir()
    (results / "2026-03-01" / "meta.json").write_text(json.dumps({**meta, "timestamp": "2026-03-01"}))
    (results / "2026-03-01" / "results.json").write_text(json.dumps(paired))
    assert update_readme.main(["--results", str(results), "--readme", str(readme)]) == 0
    text = readme.read_text()
    assert "| gemm_square | fwd | bf16 | triton | 1.500 [1.4" in text and "| faster | 1 |" in text
    assert "| gemm_square | fwd | bf16 | auto (same path) | 1.000 [0.9" in text and "| no difference | 1 |" in text


def test_measured_ceilings_on_this_machine():
    from accelkernels.benchmark import ceilings

    measured = ceilings.measure("cpu")
    assert measured["tbps"] > 0 and measured["tflops"]["fp32"] > 0 and "measured" in measured["source"]
    assert ceilings.datasheet("NVIDIA H100 80GB HBM3")["tflops"]["bf16"] == 989.0
    assert ceilings.datasheet("Some CPU") is None


@pytest.mark.skipif(torch.cuda.is_available(), reason="on a GPU, tune writes a table (GPU test)")
def test_tune_without_gpu_says_there_is_nothing_to_tune(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("ACCELKERNELS_CACHE_DIR", str(tmp_path / "cache"))
    code = cli.main(["tune", "--suite", "seed_cnn", "--op", "linear", "--out", str(tmp_path / "run"), "--no-progress"])
    assert code == 0
    assert "nothing to tune" in capsys.readouterr().out
    assert not (tmp_path / "cache").exists()


def test_the_run_sets_torch_threads_and_restores_them(monkeypatch):
    seen = []
    real = problems.forward_fn

    def forward_fn(case, provider):
        fn = real(case, provider)
        return lambda *t: (seen.append(torch.get_num_threads()), fn(*t))[1]

    monkeypatch.setattr(problems, "forward_fn", forward_fn)
    before = torch.get_num_threads()
    runner.run([_gemm(8, 8, 8)], _settings(providers=["torch"], modes=["fwd"], threads=1, pair_budget_s=0.05),
               progress=False)
    assert seen and set(seen) == {1} and torch.get_num_threads() == before
    assert runner.default_cpu_threads() == max(1, len(__import__("os").sched_getaffinity(0)) - 1)


def test_bench_auto_checks_auto_against_torch_and_lists_the_decisions(tmp_path, monkeypatch):
    """bench/bench_auto.py on the CPU, tiny: the paired ratios, the 0.98 bar, first-use times, a fresh table."""
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location("bench_auto", Path(__file__).parents[1] / "bench" / "bench_auto.py")
    bench_auto = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench_auto)
    monkeypatch.setenv("ACCELKERNELS_AUTOTUNE", "0")  # the script turns it on for its own run
    monkeypatch.setenv("TRITON_INTERPRET", "0")  # a plain CPU: only the reference serves (no Triton kernel runs here)
    monkeypatch.setenv("ACCELKERNELS_CACHE_DIR", str(tmp_path / "user-cache"))
    rc = bench_auto.main(["--out", str(tmp_path / "out"), "--device", "cpu", "--dtype", "fp32", "--batch", "2",
                          "--budget", "0.05", "--cpu-max-gflop", "0.0001", "--threads", "1"])
    data = json.loads((tmp_path / "out" / "results.json").read_text())
    assert [r["case"] for r in data["rows"]] == ["seed CNN b2 fp32 training step", "seed CNN b2 fp32 inference"]
    assert all(r["low"] <= r["ratio"] <= r["high"] and r["ok"] == (r["ratio"] >= 0.98) for r in data["rows"])
    assert rc == (0 if all(r["ok"] for r in data["rows"]) else 1)
    assert len(data["first_use"]) == 2 and all(f["first_ms"] > 0 for f in data["first_use"])
    assert data["decisions"] == []  # on a CPU without the executor only the reference serves: nothing timed
    report = (tmp_path / "out" / "report.md").read_text()
    assert "the bar is 0.98" in report and "nothing was timed" in report
    assert os.environ["ACCELKERNELS_CACHE_DIR"] == str(tmp_path / "out" / "cache")  # never the user's table


def test_separate_pass_bound_from_bytes_and_flops():
    """A GEMM's roofline and a separate pass over C (read + write): at M = N = 4096, K = 1024 in bf16 on
    989 TFLOP/s and 3.35 TB/s, the GEMM is compute-bound (34.4 GFLOP: 0.0347 ms), the pass moves 64 MiB
    (0.0200 ms): share 0.577, so fusing it can gain at most 1.58x; at K = 14336 the share is 0.04."""
    from accelkernels.benchmark import problems, suites

    case = suites.Case("t", "x", "linear", {"m": 4096, "n": 4096, "k": 1024}, True, "gelu")
    bound = problems.separate_pass_bound(case, torch.bfloat16, 989.0, 3.35)
    assert bound["gemm_ms"] == pytest.approx(2 * 4096 * 4096 * 1024 / 989e12 * 1e3)
    assert bound["pass_ms"] == pytest.approx(2 * 4096 * 4096 * 2 / 3.35e12 * 1e3)
    assert bound["share"] == pytest.approx(0.577, abs=1e-3) and bound["fused_bound"] == pytest.approx(1.577, abs=1e-3)
    deep = suites.Case("t", "y", "linear", {"m": 4096, "n": 4096, "k": 14336}, True, "gelu")
    assert problems.separate_pass_bound(deep, torch.bfloat16, 989.0, 3.35)["share"] == pytest.approx(0.0412, abs=1e-3)
    tiny = suites.Case("t", "z", "linear", {"m": 16, "n": 4096, "k": 4096}, True, "gelu")  # memory-bound GEMM
    t = problems.separate_pass_bound(tiny, torch.bfloat16, 989.0, 3.35)
    assert t["gemm_ms"] == pytest.approx((16 * 4096 + 4096 * 4096 + 16 * 4096) * 2 / 3.35e12 * 1e3)


def test_bench_hopper_gemm_says_why_it_cannot_run_here(tmp_path):
    """Without a compute capability 9.0 GPU the Hopper bench writes the reason and exits with status 2;
    its case list holds 8192^3, the LLM shapes with M >= 256 and the fused suite."""
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location("bench_hopper_gemm",
                                                  Path(__file__).parents[1] / "bench" / "bench_hopper_gemm.py")
    hopper = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hopper)
    square, llm, fused = hopper.cases(quick=False)
    assert [c.dims["m"] for c in square] == [8192] and llm and all(c.dims["m"] >= 256 for c in llm)
    assert fused and all(c.activation == "gelu" for c in fused)
    if torch.cuda.is_available() and torch.cuda.get_device_capability() == (9, 0):
        pytest.skip("a Hopper GPU is here: the bench would run for real")
    assert hopper.main(["--out", str(tmp_path)]) == 2
    assert json.loads((tmp_path / "results.json").read_text())["skipped"]


def test_bench_hopper_conv_says_why_it_cannot_run_here(tmp_path):
    """The Hopper conv bench: the ResNet-50 3x3 layers at batch 128 and the fused conv + bias + ReLU suite; without
    a compute capability 9.0 GPU it writes the reason and exits with status 2."""
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location("bench_hopper_conv",
                                                  Path(__file__).parents[1] / "bench" / "bench_hopper_conv.py")
    hopper = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hopper)
    resnet, fused = hopper.layers()
    assert len(resnet) == 4 and all(c.dims["batch"] == 128 and c.dims["kernel_h"] == 3 for c in resnet)
    assert fused and all(c.activation == "relu" for c in fused)
    if torch.cuda.is_available() and torch.cuda.get_device_capability() == (9, 0):
        pytest.skip("a Hopper GPU is here: the bench would run for real")
    assert hopper.main(["--out", str(tmp_path)]) == 2
    assert json.loads((tmp_path / "results.json").read_text())["skipped"]
