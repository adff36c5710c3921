"""convert(): every position of a shared layer swapped, and fuse_activations=True folding an
activation module into the layer before it — only where that is provably the same computation."""

from __future__ import annotations

import copy
import sys
import warnings
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import accelkernels as ak

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "examples"))
from cifar_cnn import build_model  # noqa: E402  (the seed article's CNN, as the example trains it)

LAYERS = (ak.nn.Conv2d, ak.nn.Linear)


def outputs_and_grads(model, x):
    x = x.clone().requires_grad_()
    out = model(x)
    g = torch.randn(out.shape, generator=torch.Generator().manual_seed(1))
    grads = torch.autograd.grad(out, [x, *model.parameters()], g)
    return out, grads


def assert_same_model_behaviour(model, reference, x):
    """Outputs and every gradient bit for bit (the reference backend runs torch's own kernels)."""
    assert list(model.state_dict()) == list(reference.state_dict())
    out, grads = outputs_and_grads(model, x)
    ref, ref_grads = outputs_and_grads(reference, x)
    torch.testing.assert_close(out, ref, rtol=0, atol=0)
    for a, b in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def activations(model):
    return [m.activation for m in model.modules() if isinstance(m, LAYERS)]


# --- a layer used at several positions ---------------------------------------------------------------


def test_layer_twice_in_one_sequential_is_one_converted_object_everywhere():
    """Regression: named_children() skips a module already seen in the same parent, so the second
    position stayed a torch layer (and stopped being the same object as the first)."""
    lin = nn.Linear(4, 4)
    model = nn.Sequential(lin, nn.Tanh(), lin)
    reference = copy.deepcopy(model)
    ak.convert(model)
    assert isinstance(model[0], ak.nn.Linear) and model[2] is model[0]
    assert_same_model_behaviour(model, reference, torch.randn(3, 4))


def test_module_list_of_one_conv_three_times():
    conv = nn.Conv2d(3, 3, 3, padding=1)
    model = nn.ModuleList([conv] * 3)
    ak.convert(model)
    assert isinstance(model[0], ak.nn.Conv2d) and model[0] is model[1] is model[2]
    assert model[0].weight is conv.weight


# --- fuse_activations: the seed CNN and what does fuse --------------------------------------------------


def test_seed_cnn_fuses_every_relu_without_a_warning_and_computes_the_same():
    reference = build_model()
    model = copy.deepcopy(reference)
    params = dict(model.named_parameters())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ak.convert(model, backend="torch", fuse_activations=True)
    assert activations(model) == ["relu", "relu", "relu", "relu", None]  # the logits layer has no ReLU
    assert not any(isinstance(m, nn.ReLU) for m in model.modules())
    assert all(p is params[n] for n, p in model.named_parameters())  # shared, not copied
    assert_same_model_behaviour(model, reference, torch.randn(4, 3, 32, 32))


def test_default_fuses_nothing():
    model = ak.convert(build_model())
    assert activations(model) == [None] * 5
    assert sum(isinstance(m, nn.ReLU) for m in model.modules()) == 4


@pytest.mark.parametrize("act,name", [(nn.ReLU(), "relu"), (nn.ReLU(inplace=True), "relu"), (nn.GELU(), "gelu"),
                                      (nn.SiLU(), "silu"), (nn.SiLU(inplace=True), "silu")])
def test_each_activation_module_fuses(act, name):
    reference = nn.Sequential(nn.Linear(4, 5), act, nn.Linear(5, 3))
    model = ak.convert(copy.deepcopy(reference), backend="torch", fuse_activations=True)
    assert activations(model) == [name, None] and isinstance(model[1], nn.Identity)
    assert_same_model_behaviour(model, reference, torch.randn(2, 4))


def test_gelu_tanh_and_other_activations_are_not_fused():
    """Our "gelu" is the exact erf form: the tanh approximation is another function."""
    reference = nn.Sequential(nn.Linear(4, 4), nn.GELU(approximate="tanh"), nn.Linear(4, 4), nn.Tanh(),
                              nn.Linear(4, 4), nn.LeakyReLU())
    model = ak.convert(copy.deepcopy(reference), backend="torch", fuse_activations=True)
    assert activations(model) == [None] * 3
    assert [type(m) for m in model] == [ak.nn.Linear, nn.GELU, ak.nn.Linear, nn.Tanh, ak.nn.Linear, nn.LeakyReLU]
    assert_same_model_behaviour(model, reference, torch.randn(2, 4))


def test_nested_sequentials_fuse_and_one_relu_object_at_several_positions():
    relu = nn.ReLU()  # one object after two layers and once more on its own
    reference = nn.Sequential(nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), relu), nn.Conv2d(4, 4, 1), relu,
                              nn.Sequential(nn.MaxPool2d(2), relu))
    model = ak.convert(copy.deepcopy(reference), backend="torch", fuse_activations=True)
    assert activations(model) == ["relu", "relu"]
    assert isinstance(model[0][1], nn.Identity) and isinstance(model[2], nn.Identity)
    assert isinstance(model[3][1], nn.ReLU)  # not after a layer: left alone
    assert_same_model_behaviour(model, reference, torch.randn(2, 3, 6, 6))


def test_shared_layer_fuses_only_if_every_position_is_followed_by_the_same_activation():
    lin = nn.Linear(4, 4)
    both = nn.Sequential(lin, nn.ReLU(), lin, nn.ReLU())
    model = ak.convert(copy.deepcopy(both), backend="torch", fuse_activations=True)
    assert model[0] is model[2] and model[0].activation == "relu"
    assert_same_model_behaviour(model, both, torch.randn(2, 4))

    lin = nn.Linear(4, 4)
    one = nn.Sequential(lin, nn.ReLU(), lin)  # the second use must keep its plain output
    model = ak.convert(copy.deepcopy(one), backend="torch", fuse_activations=True)
    assert model[0].activation is None and isinstance(model[1], nn.ReLU)
    assert_same_model_behaviour(model, one, torch.randn(2, 4))

    lin = nn.Linear(4, 4)
    mixed = nn.Sequential(lin, nn.ReLU(), lin, nn.SiLU())
    model = ak.convert(copy.deepcopy(mixed), backend="torch", fuse_activations=True)
    assert model[0].activation is None
    assert_same_model_behaviour(model, mixed, torch.randn(2, 4))


def test_hooks_block_fusion():
    """A forward hook on the layer would see activated outputs; one on the activation would be dropped."""
    seen = []
    reference = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 4), nn.ReLU())
    reference[0].register_forward_hook(lambda m, i, o: seen.append(o.min().item()))
    reference[3].register_forward_hook(lambda m, i, o: seen.append(o.shape))
    model = ak.convert(copy.deepcopy(reference), backend="torch", fuse_activations=True)
    assert activations(model) == [None, None]
    assert_same_model_behaviour(model, reference, torch.randn(2, 4))


# --- fuse_activations in other modules (torch.fx) ---------------------------------------------------------


class BasicBlock(nn.Module):
    """ResNet's: conv-bn-relu, conv-bn, + identity, relu (the one ReLU module used twice)."""

    def __init__(self, c=4):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c)
        self.conv2, self.bn2 = nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + x)


class Head(nn.Module):
    """Fusible: conv -> its own GELU module; a functional relu; a layer whose output is used twice."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(4, 6, 3, padding=1)
        self.act = nn.GELU()
        self.conv_f = nn.Conv2d(6, 6, 1)
        self.lin = nn.Linear(6, 6)
        self.lin_act = nn.SiLU()
        self.skip = nn.Linear(6, 6)
        self.skip_act = nn.ReLU()

    def forward(self, x):
        y = self.act(self.conv(x))
        y = F.relu(self.conv_f(y)).mean((2, 3))  # functional: fusing it would mean rewriting forward
        z = self.lin_act(self.lin(y))
        s = self.skip(z)
        return self.skip_act(s) + s  # the layer's output has a second user


def test_resnet_block_with_batchnorm_between_is_left_alone():
    torch.manual_seed(0)
    reference = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), BasicBlock(), BasicBlock()).eval()
    model = ak.convert(copy.deepcopy(reference), backend="torch", fuse_activations=True)
    assert activations(model) == ["relu", None, None, None, None]  # only the stem, in the Sequential
    assert all(isinstance(b.relu, nn.ReLU) for b in model[2:])
    assert_same_model_behaviour(model, reference, torch.randn(2, 3, 6, 6))


def test_traced_module_fuses_only_its_activation_modules_with_a_single_user():
    torch.manual_seed(0)
    reference = Head()
    model = ak.convert(copy.deepcopy(reference), backend="torch", fuse_activations=True)
    assert (model.conv.activation, model.lin.activation) == ("gelu", "silu")
    assert isinstance(model.act, nn.Identity) and isinstance(model.lin_act, nn.Identity)
    assert model.conv_f.activation is None  # F.relu: not a module
    assert model.skip.activation is None and isinstance(model.skip_act, nn.ReLU)
    assert_same_model_behaviour(model, reference, torch.randn(2, 4, 5, 5))


class Branchy(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin, self.act = nn.Linear(4, 4), nn.ReLU()
        self.use_act = True

    def forward(self, x):
        y = self.lin(x)
        if self.use_act:  # a trace would freeze this branch
            y = self.act(y)
        return y


class Helper(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin, self.act = nn.Linear(4, 4), nn.ReLU()
        self.twice = False

    def _inner(self, y):
        return self.act(y) if not self.twice else y

    def forward(self, x):
        return self._inner(self.lin(x))  # what _inner does is not visible here


class Dynamic(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(4, 4)
        self.acts = nn.ModuleList([nn.ReLU(), nn.SiLU()])
        self.which = 0

    def forward(self, x):
        return self.acts[self.which](self.lin(x))  # chosen at run time


class Untraceable(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin, self.act = nn.Linear(4, 4), nn.ReLU()

    def forward(self, x):
        y = self.act(self.lin(x))
        return y[: int(x.sum() > 0) + 1]  # data-dependent: fx cannot trace it


@pytest.mark.parametrize("cls", [Branchy, Helper, Dynamic, Untraceable])
def test_forwards_a_trace_cannot_vouch_for_are_left_alone(cls):
    reference = cls()
    model = ak.convert(copy.deepcopy(reference), backend="torch", fuse_activations=True)
    assert activations(model) == [None]
    x = torch.randn(3, 4)
    torch.testing.assert_close(model(x), reference(x), rtol=0, atol=0)
    for flag in ("use_act", "twice", "which"):  # flip the switch: still the same computation
        if hasattr(model, flag):
            setattr(model, flag, not getattr(model, flag) if isinstance(getattr(model, flag), bool) else 1)
            setattr(reference, flag, getattr(model, flag))
            torch.testing.assert_close(model(x), reference(x), rtol=0, atol=0)


def test_loops_over_submodules_are_straight_line_and_fuse():
    class Mlp(nn.Module):
        def __init__(self):
            super().__init__()
            self.layers = nn.ModuleList([nn.Linear(4, 4) for _ in range(3)])
            self.acts = nn.ModuleList([nn.GELU() for _ in range(3)])

        def forward(self, x):
            for layer, act in zip(self.layers, self.acts):
                x = act(layer(x))
            return x

    torch.manual_seed(0)
    reference = Mlp()
    model = ak.convert(copy.deepcopy(reference), backend="torch", fuse_activations=True)
    assert activations(model) == ["gelu"] * 3
    assert_same_model_behaviour(model, reference, torch.randn(2, 4))


def test_fuse_activations_must_be_a_bool():
    with pytest.raises(TypeError, match="fuse_activations must be a bool"):
        ak.convert(nn.Linear(2, 2), fuse_activations="yes")
