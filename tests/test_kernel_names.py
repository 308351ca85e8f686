"""The profiler-name parsers of tests/conftest.py that the GPU tests use to tell which CUDA kernel
ran (sm90_fwd_int_arg: the D / Br / Bc template arguments of the sm90 forward kernels), checked on
synthetic demangled and mangled names, so a wrong parser fails here on the CPU rather than as a
confusing GPU test failure."""
from __future__ import annotations

import pytest

from conftest import sm90_fwd_int_arg

# what the torch profiler reports: demangled where it can, else the Itanium-mangled symbol
DEMANGLED = "void fa_fwd_sm90_kernel<true, 64, 128, 128, 2, false, false, false, 0, true>(fa_sm90_params)"
MANGLED = "_Z18fa_fwd_sm90_kernelILb1ELi128ELi128ELi176ELi2ELb0ELb0ELb0ELi0ELb1EEv14fa_sm90_params"
PERSIST = "_Z26fa_fwd_sm90_persist_kernelILb0ELi64ELi192ELi128ELi2EEv14fa_sm90_params"


@pytest.mark.parametrize("name,arg,want", [
    (DEMANGLED, 1, 64), (DEMANGLED, 2, 128), (DEMANGLED, 3, 128), (DEMANGLED, 5, None),
    (MANGLED, 1, 128), (MANGLED, 2, 128), (MANGLED, 3, 176), (MANGLED, 4, 2), (MANGLED, 5, None),
    (PERSIST, 2, 192), (PERSIST, 3, 128),
])
def test_sm90_fwd_int_arg(name: str, arg: int, want: int | None) -> None:
    assert sm90_fwd_int_arg(name, arg) == want
