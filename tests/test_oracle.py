"""The numerics oracle itself (conftest.assert_within_2x_torch_error) must be able to fail."""

from __future__ import annotations

import pytest
import torch
from conftest import assert_within_2x_torch_error, ulp


def test_ulp_is_the_spacing_of_the_dtype():
    ref = torch.tensor([1.0, 1.5, 0.75, -3.0], dtype=torch.float64)
    torch.testing.assert_close(ulp(ref, torch.bfloat16), torch.tensor([2**-7, 2**-7, 2**-8, 2**-6], dtype=torch.float64))


def test_oracle_rejects_errors_beyond_2x_torch_and_one_ulp():
    ref = torch.linspace(-3, 3, 101, dtype=torch.float64).to(torch.bfloat16).double()  # representable
    theirs = ref.to(torch.bfloat16)  # exact: torch's error is 0, only the one-ulp allowance is left
    assert_within_2x_torch_error(theirs.clone(), theirs, ref)
    one_ulp = (ref + ulp(ref, torch.bfloat16)).to(torch.bfloat16)
    assert_within_2x_torch_error(one_ulp, theirs, ref)  # faithful rounding passes
    two_ulps = (ref + 2 * ulp(ref, torch.bfloat16)).to(torch.bfloat16)
    with pytest.raises(AssertionError, match="2 x torch"):
        assert_within_2x_torch_error(two_ulps, theirs, ref)
    wrong_element = theirs.clone()
    wrong_element[7] += 0.25
    with pytest.raises(AssertionError, match="1 of 101"):
        assert_within_2x_torch_error(wrong_element, theirs, ref)
    with pytest.raises(AssertionError, match="non-finite"):
        assert_within_2x_torch_error(torch.full_like(theirs, float("nan")), theirs, ref)
