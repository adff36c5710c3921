"""Drop-in layers and convert(): same parameters, outputs, gradients and checkpoints as torch."""

from __future__ import annotations

import copy
import io
import warnings

import pytest
import torch
from references import seed_cnn

import accelkernels as ak


def _grads(model, x):
    model.zero_grad()
    out = model(x)
    out.square().mean().backward()
    return out, {n: p.grad.clone() for n, p in model.named_parameters()}


def test_convert_seed_cnn_keeps_outputs_gradients_and_state_dict():
    reference = seed_cnn()
    model = copy.deepcopy(reference)
    keys_before = list(model.state_dict())
    params_before = {n: p for n, p in model.named_parameters()}
    assert ak.convert(model) is model
    assert sum(isinstance(m, (ak.nn.Conv2d, ak.nn.Linear)) for m in model.modules()) == 5
    assert list(model.state_dict()) == keys_before
    for name, p in model.named_parameters():  # shared, not copied
        assert p is params_before[name]
    x = torch.randn(8, 3, 32, 32)
    out, grads = _grads(model, x)
    ref_out, ref_grads = _grads(reference, x)
    torch.testing.assert_close(out, ref_out, rtol=0, atol=0)
    for name in ref_grads:
        torch.testing.assert_close(grads[name], ref_grads[name], msg=lambda m: f"{name}: {m}")


def test_torch_checkpoint_loads_into_converted_model_and_back():
    source = seed_cnn()
    buffer = io.BytesIO()
    torch.save(source.state_dict(), buffer)
    target = ak.convert(seed_cnn())
    buffer.seek(0)
    target.load_state_dict(torch.load(buffer))
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(target(x), source(x), rtol=0, atol=0)
    plain = seed_cnn()
    plain.load_state_dict(target.state_dict())
    torch.testing.assert_close(plain(x), source(x), rtol=0, atol=0)


def test_convert_leaves_unservable_modules_and_lists_them():
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3, padding=1, padding_mode="reflect"),
        torch.nn.Conv2d(4, 4, 3, padding=1),
    )
    with pytest.warns(UserWarning, match=r"0: padding_mode='reflect'"):
        ak.convert(model)
    assert type(model[0]) is torch.nn.Conv2d
    assert type(model[1]) is ak.nn.Conv2d


def test_convert_leaves_subclasses_and_swaps_shared_layers_once():
    class MyLinear(torch.nn.Linear):
        pass

    shared = torch.nn.Linear(4, 4)
    model = torch.nn.ModuleDict({"a": torch.nn.Sequential(shared), "b": torch.nn.Sequential(shared), "c": MyLinear(4, 4)})
    with pytest.warns(UserWarning, match="MyLinear is a subclass"):
        ak.convert(model)
    assert model["a"][0] is model["b"][0]
    assert isinstance(model["a"][0], ak.nn.Linear)
    assert type(model["c"]) is MyLinear


def test_convert_a_bare_layer_and_no_warning_when_all_served():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        layer = ak.convert(torch.nn.Linear(3, 2), backend="torch")
    assert isinstance(layer, ak.nn.Linear) and layer.backend == "torch"
    with pytest.raises(ValueError):
        ak.convert(torch.nn.Linear(3, 2), backend="nope")


def test_layers_are_torch_subclasses_with_the_same_constructor():
    conv = ak.nn.Conv2d(3, 8, 3, stride=2, padding=1, bias=False, activation="relu")
    assert isinstance(conv, torch.nn.Conv2d) and conv.bias is None and conv.activation == "relu"
    lin = ak.nn.Linear(5, 7, activation="gelu", backend="torch", dtype=torch.float64)
    assert isinstance(lin, torch.nn.Linear) and lin.weight.dtype == torch.float64
    x = torch.randn(2, 5, dtype=torch.float64)
    torch.testing.assert_close(lin(x), torch.nn.functional.gelu(torch.nn.functional.linear(x, lin.weight, lin.bias)))
    assert "activation=gelu" in repr(lin)
    with pytest.raises(ValueError, match="padding_mode='zeros' only"):
        ak.nn.Conv2d(3, 8, 3, padding_mode="circular")
    with pytest.raises(ValueError, match="activation"):
        ak.nn.Linear(2, 2, activation="tanh")


def test_from_torch_shares_weights_and_hooks():
    conv = torch.nn.Conv2d(3, 4, 3, padding="same")
    calls = []
    conv.register_forward_hook(lambda m, i, o: calls.append(o.shape))
    ours = ak.nn.Conv2d.from_torch(conv, activation="silu")
    assert ours.weight is conv.weight and ours.bias is conv.bias
    x = torch.randn(1, 3, 6, 6)
    torch.testing.assert_close(ours(x), torch.nn.functional.silu(conv(x)))
    assert len(calls) == 2  # the hook came along
    ours.register_buffer("extra", torch.zeros(1))
    assert "extra" not in dict(conv.named_buffers())  # registries are not shared
    with pytest.raises(TypeError):
        ak.nn.Linear.from_torch(conv)
