"""Bad input: a clear error naming the argument, of the type torch raises for the same call."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import accelkernels as ak


def assert_raises_naming(words, fn, *args, **kwargs):
    """fn(*args) raises a RuntimeError whose message contains every word."""
    with pytest.raises(RuntimeError) as ours:
        fn(*args, **kwargs)
    for word in words:
        assert word in str(ours.value), f"{word!r} not in: {ours.value}"
    return str(ours.value)


def x4(c=3, dtype=torch.float32):
    return torch.randn(2, c, 8, 8, dtype=dtype)


def w4(k=4, c=3, dtype=torch.float32):
    return torch.randn(k, c, 3, 3, dtype=dtype)


# (id, args, kwargs, words the message must contain). torch raises for each of these too.
CONV_CASES = [
    ("input_2d", (torch.randn(8, 8), w4()), {}, ["input", "3-D", "4-D"]),
    ("input_5d", (torch.randn(1, 2, 3, 8, 8), w4()), {}, ["input", "[1, 2, 3, 8, 8]"]),
    ("weight_3d", (x4(), torch.randn(4, 3, 3)), {}, ["weight", "4-D"]),
    ("channel_mismatch", (x4(c=4), w4()), {}, ["input has 4 channels", "expects 3"]),
    ("group_mismatch", (x4(), w4()), {"groups": 2}, ["channels", "groups=2"]),
    ("groups_not_dividing_out", (x4(c=4), torch.randn(3, 2, 3, 3)), {"groups": 2}, ["groups=2", "3 output"]),
    ("dtype_mismatch", (x4(dtype=torch.float64), w4()), {}, ["weight", "float32", "float64"]),
    ("bias_dtype", (x4(), w4(), torch.randn(4, dtype=torch.float64)), {}, ["bias", "float64"]),
    ("bias_shape", (x4(), w4(), torch.randn(3)), {}, ["bias", "4 elements", "[3]"]),
    # torch has no bool convolution: ours says which arguments and keeps torch's message
    ("bool", (x4() > 0, w4() > 0), {}, ["input and weight", "torch.bool", "slow_conv2d_cpu"]),
    ("stride_zero", (x4(), w4()), {"stride": 0}, ["stride", "positive"]),
    ("stride_negative", (x4(), w4()), {"stride": (1, -1)}, ["stride", "positive"]),
    ("padding_negative", (x4(), w4()), {"padding": -1}, ["padding", "non-negative"]),
    ("dilation_zero", (x4(), w4()), {"dilation": 0}, ["dilation", "positive"]),
    ("groups_zero", (x4(), w4()), {"groups": 0}, ["groups", "positive"]),
    ("same_with_stride", (x4(), w4()), {"padding": "same", "stride": 2}, ["padding='same'", "stride"]),
    ("bad_padding_string", (x4(), w4()), {"padding": "full"}, ["padding", "'full'"]),
    ("stride_triple", (x4(), w4()), {"stride": (1, 1, 1)}, ["stride", "pair"]),
    ("kernel_bigger_than_input", (torch.randn(1, 3, 2, 2), w4()), {}, ["kernel", "padded input"]),
]
# Integer and complex convolutions are not bad input: torch computes them, and so does the
# reference (tests/test_dtypes.py).


@pytest.mark.parametrize("args,kwargs,words", [c[1:] for c in CONV_CASES], ids=[c[0] for c in CONV_CASES])
def test_conv2d_bad_input(args, kwargs, words):
    assert_raises_naming([*words, "accelkernels.conv2d"], ak.conv2d, *args, **kwargs)


@pytest.mark.parametrize("args,kwargs", [c[1:3] for c in CONV_CASES], ids=[c[0] for c in CONV_CASES])
def test_torch_also_rejects(args, kwargs):
    """The guide for these cases: torch raises a RuntimeError for the same call."""
    with pytest.raises(RuntimeError):
        F.conv2d(*args, **kwargs)


def test_dtype_torch_cannot_compute_is_also_torchs_error_type():
    """torch raises NotImplementedError for a dtype it has no kernel for; ours is one too."""
    with pytest.raises(NotImplementedError, match="a and b"):
        ak.matmul(torch.ones(2, 2, dtype=torch.bool), torch.ones(2, 2, dtype=torch.bool))
    with pytest.raises(NotImplementedError):
        torch.matmul(torch.ones(2, 2, dtype=torch.bool), torch.ones(2, 2, dtype=torch.bool))


def test_errors_are_also_value_errors():
    with pytest.raises(ValueError):
        ak.conv2d(x4(c=4), w4())


def test_non_tensor_is_type_error():
    with pytest.raises(TypeError, match="weight must be a Tensor"):
        ak.conv2d(x4(), [[1.0]])
    with pytest.raises(TypeError, match="b must be a Tensor"):
        ak.matmul(torch.randn(2, 2), 3.0)


MATMUL_CASES = [
    ("inner_mismatch", (torch.randn(3, 4), torch.randn(5, 6)), ["a's last dim (4)", "(5)"]),
    ("zero_dim", (torch.tensor(1.0), torch.randn(5, 6)), ["at least 1-D"]),
    ("batch_mismatch", (torch.randn(2, 3, 4), torch.randn(3, 4, 5)), ["batch dims", "broadcast"]),
    ("dtype_mismatch", (torch.randn(3, 4), torch.randn(4, 5, dtype=torch.float64)), ["b has dtype", "float64"]),
    ("int_float_mix", (torch.ones(3, 4, dtype=torch.int64), torch.ones(4, 5)), ["b has dtype", "float32", "int64"]),
    ("bool", (torch.ones(3, 4, dtype=torch.bool), torch.ones(4, 5, dtype=torch.bool)), ["a and b", "torch.bool"]),
]


@pytest.mark.parametrize("args,words", [c[1:] for c in MATMUL_CASES], ids=[c[0] for c in MATMUL_CASES])
def test_matmul_bad_input(args, words):
    assert_raises_naming(words, ak.matmul, *args)


LINEAR_CASES = [
    ("feature_mismatch", (torch.randn(3, 4), torch.randn(5, 6)), ["input has 4 features", "expects 6"]),
    ("bias_shape", (torch.randn(3, 4), torch.randn(5, 4), torch.randn(4)), ["bias", "5 elements"]),
    ("weight_3d", (torch.randn(3, 4), torch.randn(2, 5, 4)), ["weight", "2-D"]),
    ("zero_dim_input", (torch.tensor(1.0), torch.randn(5, 4)), ["input", "1-D"]),
    ("device_or_dtype", (torch.randn(3, 4), torch.randn(5, 4, dtype=torch.bfloat16)), ["weight", "bfloat16"]),
]


@pytest.mark.parametrize("args,words", [c[1:] for c in LINEAR_CASES], ids=[c[0] for c in LINEAR_CASES])
def test_linear_bad_input(args, words):
    assert_raises_naming(words, ak.linear, *args)
    with pytest.raises(RuntimeError):
        F.linear(*args)


def test_bad_activation_and_backend_names():
    with pytest.raises(ValueError, match="activation must be one of"):
        ak.conv2d(x4(), w4(), activation="tanh")
    with pytest.raises(ValueError, match="backend must be one of"):
        ak.linear(torch.randn(2, 3), torch.randn(4, 3), backend="cudnn")
    with pytest.raises(ValueError, match="backend must be one of"):
        ak.matmul(torch.randn(2, 3), torch.randn(3, 4), backend="")
