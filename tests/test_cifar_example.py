"""examples/cifar_cnn.py, the seed article's worked example, on the CPU: the CIFAR-10 binary reader,
the two models (torch's layers, converted ones) trained in lockstep and learning alike, α and β by
paired rounds, what the converted layers run, --data, --compile, --profile, and a 2-process gloo DDP
run under torchrun with its γ."""

from __future__ import annotations

import json
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
sys.path.insert(0, str(EXAMPLES))

import cifar10_data
import cifar_cnn

import accelkernels as ak
from accelkernels.backends.torch_backend import TorchBackend


def write_batch(path: Path, count: int, seed: int = 0, label_max: int = 9) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, label_max + 1, count, dtype=np.uint8)
    pixels = rng.integers(0, 256, (count, 3072), dtype=np.uint8)
    np.concatenate([labels[:, None], pixels], axis=1).tofile(path)
    return labels, pixels


# --- the binary reader ---------------------------------------------------------------------------


def test_reader_returns_images_and_labels_as_written(tmp_path):
    labels, pixels = write_batch(tmp_path / "data_batch_1.bin", 5)
    split = cifar10_data.read_batch(tmp_path / "data_batch_1.bin")
    assert split.images.shape == (5, 3, 32, 32) and split.images.dtype == torch.uint8
    assert split.labels.tolist() == labels.tolist()
    # record layout: 1024 red, then green, then blue, each row-major 32 x 32
    assert split.images[3, 1, 2, 5].item() == pixels[3, 1024 + 2 * 32 + 5]


def test_reader_rejects_truncated_and_foreign_files(tmp_path):
    write_batch(tmp_path / "a.bin", 3)
    (tmp_path / "short.bin").write_bytes((tmp_path / "a.bin").read_bytes()[:-100])
    with pytest.raises(cifar10_data.CifarFormatError, match="not a whole number of 3073-byte records"):
        cifar10_data.read_batch(tmp_path / "short.bin")
    write_batch(tmp_path / "c100.bin", 4, label_max=99, seed=3)
    with pytest.raises(cifar10_data.CifarFormatError, match="expected 0-9"):
        cifar10_data.read_batch(tmp_path / "c100.bin")
    with pytest.raises(FileNotFoundError, match="not found"):
        cifar10_data.read_batch(tmp_path / "missing.bin")
    with pytest.raises(FileNotFoundError, match="no data_batch"):
        cifar10_data.load_cifar10(tmp_path)


def test_load_cifar10_concatenates_the_training_batches(tmp_path):
    write_batch(tmp_path / "data_batch_1.bin", 4, seed=1)
    write_batch(tmp_path / "data_batch_2.bin", 6, seed=2)
    write_batch(tmp_path / "test_batch.bin", 3, seed=3)
    train, test = cifar10_data.load_cifar10(tmp_path)
    assert len(train) == 10 and len(test) == 3


def test_preprocess_normalises_and_flips_on_the_device():
    images = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)
    flip = torch.tensor([True, False, True, False])
    x = cifar10_data.preprocess(images, flip)
    plain = cifar10_data.preprocess(images)
    assert x.dtype == torch.float32
    torch.testing.assert_close(x[0], plain[0].flip(2))
    torch.testing.assert_close(x[1], plain[1])
    mean = torch.tensor(cifar10_data.MEAN).view(3, 1, 1)
    std = torch.tensor(cifar10_data.STD).view(3, 1, 1)
    torch.testing.assert_close(plain[1], (images[1].float() / 255 - mean) / std)


# --- the model and the runs ----------------------------------------------------------------------------


def test_model_is_the_articles_and_relus_fuse_without_changing_parameters():
    model = cifar_cnn.build_model()
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    ours = cifar_cnn.converted_model()  # what the example trains: convert(..., fuse_activations=True)
    assert ours.state_dict().keys() == model.state_dict().keys()
    convs = [m for m in ours.modules() if isinstance(m, ak.nn.Conv2d)]
    linears = [m for m in ours.modules() if isinstance(m, ak.nn.Linear)]
    assert [m.activation for m in convs] == ["relu"] * 3
    assert [m.activation for m in linears] == ["relu", None]  # the logits layer has no ReLU after it
    assert not any(isinstance(m, torch.nn.ReLU) for m in ours.modules())
    ours.load_state_dict(model.state_dict())
    x = torch.randn(3, 3, 32, 32)
    torch.testing.assert_close(ours(x), model(x))


SMALL = ["--device", "cpu", "--steps", "4", "--batch-size", "16", "--synthetic-size", "128", "--no-progress"]
CPU = torch.device("cpu")


def check_factor(factor: dict, rounds: int, verdict: bool = True) -> None:
    """A paired factor in the JSON: a positive median of ``rounds`` ratios, its interval around it
    (null below the 8 rounds a 99% interval needs) and the verdict that interval gives (α and β)."""
    assert factor["rounds"] == rounds and factor["ratio"] > 0 and factor["confidence"] == 0.99
    assert ("verdict" in factor) == verdict
    if rounds < 8:
        assert factor["low"] is None and factor["high"] is None
    else:
        assert factor["low"] <= factor["ratio"] <= factor["high"]
    if verdict:
        inside = factor["low"] is None or factor["low"] <= 1 <= factor["high"]
        expected = "no difference" if inside else ("faster" if factor["low"] > 1 else "slower")
        assert factor["verdict"] == expected


def test_two_runs_learn_alike_and_the_summary_has_paired_alpha_and_beta(tmp_path, capsys):
    out = tmp_path / "summary.json"
    summary = cifar_cnn.main([*SMALL, "--amp", "bf16", "--json", str(out)])
    assert json.loads(out.read_text()) == json.loads(json.dumps(summary))  # no NaN in the JSON
    assert [(r["layers"], r["precision"]) for r in summary["runs"]] == [
        ("torch", "fp32"), ("accelkernels", "fp32"), ("torch", "bf16"), ("accelkernels", "bf16")]
    for run in summary["runs"]:
        assert len(run["losses"]) == len(run["step_times_ms"]) == 4
        assert run["step_ms"] > 0 and run["infer_ms"] > 0 and 0 <= run["accuracy"] <= 1
    assert summary["warmup_steps"] == 0  # an even count, at most a quarter of the run: none of 4 steps
    for c in summary["comparisons"]:
        check_factor(c["alpha"], rounds=4)  # too few for an interval
        # 1000 test images / 16 = 62 full batches, each one paired round
        check_factor(c["beta"], rounds=62)
        assert c["gamma"] is None  # one process
        assert c["losses_agree"], c  # on the CPU the converted layers run the reference: same losses
        assert c["converted_layers_run"] == ["torch"] and c["reference_only"]
    printed = capsys.readouterr().out
    assert "alpha (training) = " in printed and "(no 99% interval from 4 rounds)" in printed
    beta = summary["comparisons"][0]["beta"]
    assert f"beta (inference) = {beta['ratio']:.2f} [{beta['low']:.2f}-{beta['high']:.2f}] {beta['verdict']}" in printed
    assert printed.count("both runs use torch's ops here") == 1  # once, not per precision
    assert "alpha and beta measure accelkernels' per-call dispatch overhead" in printed


def small_trainers(args):
    """The example's two models from one seed, as its Trainers (fp32, one process)."""
    torch.manual_seed(args.seed)
    reference = cifar_cnn.build_model()
    ours = cifar_cnn.converted_model()
    ours.load_state_dict(reference.state_dict())
    return [cifar_cnn.Trainer(label, model, args, "fp32", CPU, cifar_cnn.Dist())
            for label, model in (("torch", reference), ("accelkernels", ours))]


def test_lockstep_alternates_abba_and_leaves_each_models_losses_its_own():
    args = cifar_cnn.parse_args([*SMALL, "--steps", "5"])
    train, _ = cifar10_data.synthetic_cifar10(128, 16)
    alone = small_trainers(args)  # each model trained by itself
    for trainer in alone:
        cifar_cnn.train_lockstep([trainer], cifar_cnn.training_batches(train, args, cifar_cnn.Dist()))
    together = small_trainers(args)
    calls = []
    for trainer in together:
        def step(*batch, _trainer=trainer, _step=trainer.step):
            calls.append(_trainer.label)
            _step(*batch)
        trainer.step = step
    cifar_cnn.train_lockstep(together, cifar_cnn.training_batches(train, args, cifar_cnn.Dist()))
    t, a = "torch", "accelkernels"
    assert calls == [t, a, a, t, t, a, a, t, t, a]
    for solo, paired in zip(alone, together):
        assert paired.losses == solo.losses  # exactly: the interleaving changes nothing a model computes
        assert len(paired.seconds) == 5 and min(paired.seconds) > 0


def test_alpha_is_torchs_time_over_ours_round_by_round():
    # the machine's speed drifts 10x over the run, but in every round torch takes twice our time: the
    # rounds' ratios are all 2, so the interval is [2, 2] (two runs' medians would have no interval)
    drift = [1.0 + 9 * i / 19 for i in range(20)]
    torch_run = types.SimpleNamespace(seconds=[0.5] * 4 + [0.02 * d for d in drift], losses=[2.0] * 24)
    ours = types.SimpleNamespace(seconds=[0.5] * 4 + [0.01 * d for d in drift], losses=[2.0] * 24)
    c = cifar_cnn.compare([torch_run, ours], [[0.004] * 16, [0.004] * 16], "fp32", ["torch"], warm=4)
    assert c["alpha"]["ratio"] == pytest.approx(2.0) and c["alpha"]["low"] == pytest.approx(2.0)
    assert c["alpha"]["rounds"] == 20 and c["alpha"]["verdict"] == "faster"  # above 1: we are faster
    assert c["beta"]["ratio"] == pytest.approx(1.0) and c["beta"]["verdict"] == "no difference"


def test_gamma_is_the_images_per_s_of_all_over_n_times_one():
    # 2 processes; each round the DDP step takes 1.6x the alone step (the machine drifting 3x)
    drift = [1.0 + 2 * i / 15 for i in range(16)]
    g = cifar_cnn.gamma_from_times([0.1 * d for d in drift], [0.16 * d for d in drift], processes=2, batch=8)
    assert g["ratio"] == pytest.approx(0.625) and g["low"] == pytest.approx(0.625) and g["rounds"] == 16
    assert g["images_per_s_all"] / (2 * g["images_per_s_one"]) == pytest.approx(g["ratio"])
    assert (g["processes"], g["per_process_batch"]) == (2, 8)


class Recorder(torch.nn.Module):
    """Predicts class ``label`` for every image and notes each call in ``log``."""

    def __init__(self, name: str, label: int, log: list):
        super().__init__()
        self.name, self.label, self.log = name, label, log

    def forward(self, x):
        self.log.append(self.name)
        return torch.nn.functional.one_hot(torch.full((x.shape[0],), self.label), 10).float()


def test_paired_inference_alternates_and_repeats_passes_to_enough_rounds():
    args = cifar_cnn.parse_args([*SMALL, "--batch-size", "8"])
    test = cifar10_data.Split(torch.zeros(20, 3, 32, 32, dtype=torch.uint8), torch.tensor([3] * 5 + [0] * 15))
    log = []
    seconds, accuracy = cifar_cnn.paired_inference([Recorder("a", 3, log), Recorder("b", 0, log)], test, args,
                                                   "fp32", CPU)
    # 2 full batches of 8 per pass (the last 4 images are not timed): 16 passes for 32 rounds
    assert [len(s) for s in seconds] == [cifar_cnn.INFERENCE_ROUNDS] * 2
    assert log[:2] == ["a", "b"]  # the warm-up calls
    assert log[2:6] == ["a", "b", "b", "a"]  # rounds 0 and 1
    assert log[8:12] == ["a", "b", "b", "a"]  # rounds 2 and 3, after the short batch of the first pass
    assert len(log) == 2 + 2 * cifar_cnn.INFERENCE_ROUNDS + 2  # the short batch runs once, for accuracy
    assert accuracy == [5 / 20, 15 / 20]  # from the first pass over all 20 images, not from the repeats


def test_what_the_layers_run_is_asked_of_the_resolver_not_guessed_from_the_device(monkeypatch):
    ours = cifar_cnn.converted_model()
    x = torch.randn(2, 3, 32, 32)
    assert cifar_cnn.backends_serving(ours, x, CPU, "fp32") == ["torch"]
    real, asked = ak.backends._automatic, []

    class ConvKernel(TorchBackend):  # as if a kernel won the timing of CPU convolutions
        name = "triton"

    def automatic(op, tensors, problem, details):
        asked.append((op, tensors[0].dtype, tensors[1].dtype))
        return ConvKernel() if op == "conv2d" else real(op, tensors, problem, details)

    monkeypatch.setattr(ak.backends, "_automatic", automatic)
    assert cifar_cnn.backends_serving(ours, x, CPU, "bf16") == ["torch", "triton"]
    # every layer asked, with the dtypes our ops see under autocast
    assert {op for op, _, _ in asked} == {"conv2d", "linear"}
    assert all(tuple(dtypes) == (torch.bfloat16, torch.bfloat16) for _, *dtypes in asked), asked


def test_the_caveat_is_printed_only_when_every_layer_runs_the_reference(capsys):
    factor = {"ratio": 1.2, "low": 1.1, "high": 1.3, "rounds": 40, "confidence": 0.99, "tight": False,
              "verdict": "faster"}
    summary = {"device": "cpu", "date": "today", "data": "synthetic", "steps": 1, "batch_size": 1, "world_size": 1,
               "threads_per_process": 1, "backend": "auto", "compiled": False,
               "runs": [{"layers": layers, "precision": "fp32", "step_ms": 1.0, "images_per_s": 1.0, "infer_ms": 1.0,
                         "accuracy": 0.5, "losses": [1.0]} for layers in ("torch", "accelkernels")],
               "comparisons": [{"precision": "fp32", "alpha": factor, "beta": factor, "gamma": None,
                                "converted_layers_run": ["torch", "triton"], "reference_only": False,
                                "losses_agree": True, "loss_difference": 0.0, "loss_tolerance": 0.02}]}
    cifar_cnn.print_summary(summary)
    printed = capsys.readouterr().out
    assert "alpha (training) = 1.20 [1.10-1.30] faster, wide (40 steps)" in printed
    assert "the converted layers run torch, triton" in printed and "dispatch overhead" not in printed


def test_real_data_folder(tmp_path):
    write_batch(tmp_path / "data_batch_1.bin", 40, seed=4)
    write_batch(tmp_path / "test_batch.bin", 20, seed=5)
    summary = cifar_cnn.main([*SMALL, "--steps", "3", "--amp", "none", "--data", str(tmp_path)])
    assert summary["data"] == str(tmp_path) and len(summary["runs"]) == 2


def test_bad_arguments_exit_with_a_reason(tmp_path):
    with pytest.raises(SystemExit):
        cifar_cnn.main(["--steps", "0"])
    with pytest.raises(SystemExit, match="needs a GPU"):
        cifar_cnn.main([*SMALL, "--amp", "fp16"])
    with pytest.raises(SystemExit, match="fewer than one global batch"):
        cifar_cnn.main([*SMALL, "--batch-size", "256", "--amp", "none"])
    with pytest.raises(SystemExit, match="torchrun"):
        cifar_cnn.main([*SMALL, "--ddp"])


def test_profile_trace_names_our_ops(tmp_path):
    cifar_cnn.main([*SMALL, "--steps", "2", "--amp", "none", "--profile", str(tmp_path / "trace")])
    ours = (tmp_path / "trace" / "accelkernels_fp32_rank0.json").read_text()
    assert "accelkernels::conv2d" in ours or "accelkernels.conv2d" in ours
    assert (tmp_path / "trace" / "torch_fp32_rank0.json").exists()


def test_compiled_runs_learn_alike():
    summary = cifar_cnn.main([*SMALL, "--steps", "3", "--amp", "none", "--compile"])
    assert summary["compiled"] and all(c["losses_agree"] for c in summary["comparisons"])


def test_two_process_gloo_ddp_under_torchrun(tmp_path):
    out = tmp_path / "ddp.json"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(EXAMPLES / "cifar_cnn.py"), "--ddp", *SMALL, "--steps", "3", "--batch-size", "8", "--amp", "none",
           "--json", str(out)]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(out.read_text())
    assert summary["world_size"] == 2
    assert all(c["losses_agree"] for c in summary["comparisons"])
    assert result.stdout.count("alpha (training)") == 1  # rank 0 reports
    (c,) = summary["comparisons"]
    gamma = c["gamma"]
    check_factor(gamma, rounds=3, verdict=False)  # 3 rounds, no warm-up in so short a run
    assert (gamma["processes"], gamma["process_group"], gamma["per_process_batch"]) == (2, "gloo", 8)
    assert gamma["images_per_s_one"] > 0 and gamma["images_per_s_all"] > 0
    assert result.stdout.count("fp32: gamma (2 processes, gloo") == 1
