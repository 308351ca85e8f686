"""The error-ratio rule itself (tests/oracle.py assert_ratio): it must fail on a wrong result and
refuse to judge when the rule is undefined (a NaN reference or a non-finite baseline would make its
bound infinite, so that any result passed)."""
from __future__ import annotations

import pytest
import torch

from oracle import assert_ratio

REF = torch.linspace(-2.0, 2.0, 64, dtype=torch.float64)
BASE = REF.to(torch.float16)  # an honest low-precision baseline
GOOD = (REF + 1e-4).to(torch.float16)
BAD = torch.full_like(BASE, 123.0)


def test_honest_result_passes_and_wrong_one_fails():
    assert_ratio("out", GOOD, REF, BASE, torch.float16, 2.0)
    with pytest.raises(AssertionError, match="max abs err"):
        assert_ratio("out", BAD, REF, BASE, torch.float16, 2.0)


@pytest.mark.parametrize("poison", [float("inf"), float("nan")])
def test_non_finite_baseline_is_refused(poison):
    base = BASE.clone()
    base[5] = poison
    with pytest.raises(AssertionError, match="baseline is not finite"):
        assert_ratio("out", BAD, REF, base, torch.float16, 2.0)


def test_nan_reference_is_refused():
    ref = REF.clone()
    ref[7] = float("nan")
    base = BASE.clone()
    base[7] = float("nan")
    ours = BAD.clone()
    ours[7] = float("nan")
    with pytest.raises(AssertionError, match="NaN in the float64 reference"):
        assert_ratio("out", ours, ref, base, torch.float16, 2.0)


def test_nan_result_fails():
    ours = GOOD.clone()
    ours[3] = float("nan")
    with pytest.raises(AssertionError, match="non-finite"):
        assert_ratio("out", ours, REF, BASE, torch.float16, 2.0)
