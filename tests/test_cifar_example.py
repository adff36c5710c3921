"""examples/cifar_cnn.py, the seed article's worked example, on the CPU: the CIFAR-10 binary reader,
the two runs (torch's layers, then converted ones) learning alike, the α/β summary, --data,
--compile, --profile and a 2-process gloo DDP run under torchrun."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
sys.path.insert(0, str(EXAMPLES))

import cifar10_data
import cifar_cnn

import accelkernels as ak


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
    ours = cifar_cnn.fuse_relus(ak.convert(cifar_cnn.build_model()))
    assert ours.state_dict().keys() == model.state_dict().keys()
    convs = [m for m in ours if isinstance(m, ak.nn.Conv2d)]
    linears = [m for m in ours if isinstance(m, ak.nn.Linear)]
    assert [m.activation for m in convs] == ["relu"] * 3
    assert [m.activation for m in linears] == ["relu", None]  # the logits layer has no ReLU after it
    assert not any(isinstance(m, torch.nn.ReLU) for m in ours)
    ours.load_state_dict(model.state_dict())
    x = torch.randn(3, 3, 32, 32)
    torch.testing.assert_close(ours(x), model(x))


SMALL = ["--device", "cpu", "--steps", "4", "--batch-size", "16", "--synthetic-size", "128", "--no-progress"]


def test_two_runs_learn_alike_and_the_summary_has_alpha_and_beta(tmp_path, capsys):
    out = tmp_path / "summary.json"
    summary = cifar_cnn.main([*SMALL, "--amp", "bf16", "--json", str(out)])
    assert json.loads(out.read_text()) == json.loads(json.dumps(summary))
    assert [(r["layers"], r["precision"]) for r in summary["runs"]] == [
        ("torch", "fp32"), ("accelkernels", "fp32"), ("torch", "bf16"), ("accelkernels", "bf16")]
    for run in summary["runs"]:
        assert len(run["losses"]) == 4 and run["step_ms"] > 0 and run["infer_ms"] > 0 and 0 <= run["accuracy"] <= 1
    for c in summary["comparisons"]:
        assert c["alpha"] > 0 and c["beta"] > 0
        assert c["losses_agree"], c  # on the CPU the converted layers run the reference: same losses
    printed = capsys.readouterr().out
    assert "alpha (training)" in printed and "beta (inference)" in printed


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
