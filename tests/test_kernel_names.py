"""The profiler-name parsers of tests/conftest.py that the GPU tests use to tell which CUDA kernel
ran (sm90_fwd_int_arg: the D / Br / Bc template arguments of the sm90 forward kernels), checked on
synthetic demangled and mangled names, so a wrong parser fails here on the CPU rather than as a
confusing GPU test failure."""
from __future__ import annotations

import pytest

from conftest import sm90_fwd_int_arg, sm90_persist_feat

# what the torch profiler reports: demangled where it can, else the Itanium-mangled symbol
DEMANGLED = "void fa_fwd_sm90_kernel<true, 64, 128, 128, 2, false, false, false, 0, true>(fa_sm90_params)"
MANGLED = "_Z18fa_fwd_sm90_kernelILb1ELi128ELi128ELi176ELi2ELb0ELb0ELb0ELi0ELb1EEv14fa_sm90_params"
PERSIST = "_Z26fa_fwd_sm90_persist_kernelILb0ELi64ELi192ELi128ELi2ELb0ELi0EEv14fa_sm90_params"
PERSIST_CAP = "_Z26fa_fwd_sm90_persist_kernelILb1ELi128ELi128ELi128ELi2ELb1ELi5EEv14fa_sm90_params"
PERSIST_DEMANGLED = "void fa_fwd_sm90_persist_kernel<true, 64, 192, 128, 2, true, 2>(fa_sm90_params)"


@pytest.mark.parametrize("name,arg,want", [
    (DEMANGLED, 1, 64), (DEMANGLED, 2, 128), (DEMANGLED, 3, 128), (DEMANGLED, 5, None),
    (MANGLED, 1, 128), (MANGLED, 2, 128), (MANGLED, 3, 176), (MANGLED, 4, 2), (MANGLED, 5, None),
    (PERSIST, 2, 192), (PERSIST, 3, 128), (PERSIST_CAP, 1, 128), (PERSIST_CAP, 4, 2),
])
def test_sm90_fwd_int_arg(name: str, arg: int, want: int | None) -> None:
    assert sm90_fwd_int_arg(name, arg) == want


@pytest.mark.parametrize("name,want", [
    (PERSIST, (False, 0)), (PERSIST_CAP, (True, 5)), (PERSIST_DEMANGLED, (True, 2)),
    (MANGLED, None), (DEMANGLED, None),
])
def test_sm90_persist_feat(name: str, want) -> None:
    assert sm90_persist_feat(name) == want
