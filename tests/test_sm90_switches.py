"""conftest.sm90_switches, the opening of every sm90 test's autouse fixture, on the CPU: without an
sm_90 GPU it skips (naming the code under test), with one it sets FLASH_ATTN_C_SM90=1 and each
switch as given (None: unset)."""
from __future__ import annotations

import os

import pytest

import conftest


def test_skips_without_hopper(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(conftest, "is_hopper", lambda: False)
    monkeypatch.delenv("FLASH_ATTN_C_SM90_FWD_WIDE", raising=False)
    with pytest.raises(pytest.skip.Exception, match="needs an sm_90 GPU .*: the wide forward is sm_90a code"):
        conftest.sm90_switches(monkeypatch, "the wide forward", {"FLASH_ATTN_C_SM90_FWD_WIDE": "1"})
    assert "FLASH_ATTN_C_SM90_FWD_WIDE" not in os.environ  # skipped before any switch is set


def test_sets_and_unsets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(conftest, "is_hopper", lambda: True)
    monkeypatch.setenv("FLASH_ATTN_C_SM90", "0")
    monkeypatch.setenv("FLASH_ATTN_C_SM90_FEAT", "0")
    monkeypatch.delenv("FLASH_ATTN_C_SM90_FWD_PERSIST", raising=False)
    conftest.sm90_switches(monkeypatch, "x", {"FLASH_ATTN_C_SM90_FEAT": None, "FLASH_ATTN_C_SM90_FWD_PERSIST": "1"})
    assert os.environ["FLASH_ATTN_C_SM90"] == "1"
    assert "FLASH_ATTN_C_SM90_FEAT" not in os.environ
    assert os.environ["FLASH_ATTN_C_SM90_FWD_PERSIST"] == "1"
    conftest.sm90_switches(monkeypatch, "x")  # no switches: only the sm90 kernels on
    assert os.environ["FLASH_ATTN_C_SM90"] == "1"
