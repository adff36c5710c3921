"""The benchmark harness itself, on the CPU: suites, counts, rows, reports, plots, the tuning table."""

from __future__ import annotations

import json
import warnings

import pytest
import torch

from accelkernels import cli
from accelkernels.benchmark import problems, report, runner, suites, tuning
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
    return runner.Settings(device="cpu", dtypes=["fp32"], modes=["fwd", "fwd+bwd"], layouts=["nchw"],
                           providers=["torch", "cuda", "auto"], **kw)


def test_rows_have_every_field_and_unservable_providers_say_why():
    cases = [c for c in suites.load_suite("seed_cnn") if c.op == "linear"]
    rows = runner.run(cases, _settings(), progress=False)
    assert rows and all(set(r) == set(runner.ROW_FIELDS) for r in rows)
    ok = [r for r in rows if r["status"] == "ok"]
    assert {r["provider"] for r in ok} >= {"torch", "auto"}
    for r in ok:
        assert r["median_ms"] > 0 and r["p20_ms"] <= r["median_ms"] <= r["p80_ms"]
        assert r["tflops"] > 0 and r["gbps"] > 0 and r["throughput_unit"] == "rows/s"
        assert r["max_error"] <= 2 * r["torch_error"] + 1e-6
        assert r["speedup"] is not None
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
    for needle in ("No CUDA GPU was found", "α (training)", "β (inference)", "## t", "Not timed", "Ceilings (test)"):
        assert needle in text, needle
    assert len(json.loads((tmp_path / "results.json").read_text())) == len(rows)
    assert (tmp_path / "results.csv").read_text().splitlines()[0].split(",") == list(runner.ROW_FIELDS)


def test_alpha_and_beta_are_geometric_means_of_speedups():
    rows = [dict(status="ok", provider="triton", mode="fwd", speedup=s) for s in (2.0, 0.5)]
    rows += [dict(status="ok", provider="triton", mode="fwd+bwd", speedup=4.0)]
    ab = report.alpha_beta(rows)["triton"]
    assert ab["beta"] == pytest.approx(1.0) and ab["alpha"] == pytest.approx(4.0)


def test_bench_command_writes_everything(tmp_path, capsys):
    out = tmp_path / "run"
    code = cli.main(["bench", "--suite", "seed_cnn", "--op", "linear", "--mode", "fwd", "--out", str(out), "--no-progress"])
    assert code == 0
    for name in ("results.json", "results.csv", "report.md", "meta.json", "roofline.png"):
        assert (out / name).exists(), name
    assert "report.md" in capsys.readouterr().out


# --- the tuning table ---------------------------------------------------------------------------------

KEY = {"device": "Test GPU", "capability": "9.0", "torch": "x", "triton": "y", "accelkernels": "z"}


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
    assert table["entries"] == {"matmul|bf16|row-major|m8|n8|k8": "triton"}
    path = tuning.save(table, tmp_path / "t.json")
    assert tuning.load(path, KEY) == table["entries"]


def test_corrupt_or_foreign_tuning_files_are_ignored_with_a_warning(tmp_path):
    path = tmp_path / "t.json"
    path.write_text("{not json")
    with pytest.warns(RuntimeWarning, match="unreadable"):
        assert tuning.load(path, KEY) is None
    path.write_text(json.dumps({"format": 1, "key": KEY, "entries": {"b": "os.system"}}))
    with pytest.warns(RuntimeWarning, match="malformed"):
        assert tuning.load(path, KEY) is None
    tuning.save({"format": 1, "key": {**KEY, "device": "Other"}, "entries": {}}, path)
    with pytest.warns(RuntimeWarning, match="written for"):
        assert tuning.load(path, KEY) is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert tuning.load(tmp_path / "absent.json", KEY) is None


@pytest.mark.parametrize("layout", ["nchw", "nhwc"])
def test_call_buckets_match_case_buckets(layout):
    case = _conv(32, 64, 56, 64, 3, 1, 1)
    inputs = problems.make_inputs(case, torch.bfloat16, "cpu", layout, requires_grad=False)
    assert tuning.call_bucket("conv2d", inputs.tensors) == tuning.case_bucket("conv2d", "bf16", layout, case.dims)
    lin = _gemm(4096, 14336, 4096, op="linear")
    x, w = torch.empty(2, 2048, 4096, dtype=torch.float16), torch.empty(14336, 4096, dtype=torch.float16)
    assert tuning.call_bucket("linear", (x, w)) == tuning.case_bucket("linear", "fp16", "row-major", lin.dims)


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
    assert "NVIDIA H100 80GB HBM3" in text and "2026-02-01" in text and "| gemm_square | fwd | bf16 | triton | 2.000 | 1 |" in text


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
