"""Shared pytest machinery for the flash_attn_c parity suite.

* the ``gpu`` marker: tests that need CUDA; they are skipped (reported as skips) without it;
* ``parity_fwd`` / ``parity_grad`` markers on forward / gradient parity cases, so a run can count
  them (``pytest -m "gpu and parity_grad" --co -q``);
* ``dev_cases``: one parametrization that runs the same test body on CPU (fp32/fp16/bf16, small
  sizes) and on CUDA (fp16/bf16, sizes up to a few thousand);
* a per-test seed derived from the test id (reproducible, but different inputs per case);
* ``poison_allocator``: fills the allocator's free memory with NaN bit patterns before a call, so
  outputs the library forgets to write show up as NaN instead of lucky zeros.
"""
from __future__ import annotations

import os
import random
import re
import sys
import zlib
from typing import Iterable, Iterator, List, Optional, Sequence

import pytest
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # `import oracle` in any import mode

CPU_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
GPU_DTYPES = (torch.float16, torch.bfloat16)
_DT_NAME = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}

HAS_CUDA = torch.cuda.is_available()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "gpu: needs a CUDA device (skipped without one)")
    config.addinivalue_line("markers", "parity_fwd: a forward parity case against the fp64 oracle")
    config.addinivalue_line("markers", "parity_grad: a gradient parity case against the fp64 oracle")
    config.addinivalue_line("markers", "slow: a CPU case that takes more than a few seconds")


def pytest_collection_modifyitems(config: pytest.Config, items: list) -> None:
    if HAS_CUDA:
        return
    skip = pytest.mark.skip(reason="needs CUDA (no GPU on this machine)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _seed(request: pytest.FixtureRequest) -> None:
    """Seeds torch / random from the test id: fresh inputs per case, reproducible per case."""
    s = zlib.crc32(request.node.nodeid.encode())
    torch.manual_seed(s)
    random.seed(s)


@pytest.fixture(autouse=True, scope="session")
def _strict_cuda_baseline() -> Iterator[None]:
    """The low-precision PyTorch baseline of the error-ratio rule must be honest fp16/bf16 math:
    no fp16/bf16 reduced-precision reductions and no TF32 inside its matmuls (either would make
    the baseline worse and the rule looser)."""
    if HAS_CUDA:
        torch.backends.cuda.matmul.allow_fp16_reduced_precision_reduction = False
        torch.backends.cuda.matmul.allow_bf16_reduced_precision_reduction = False
        torch.backends.cuda.matmul.allow_tf32 = False
    yield


def _case_id(case: Sequence) -> str:
    parts = []
    for x in case:
        if isinstance(x, (list, tuple)):
            parts.append("x".join(str(y) for y in x))
        else:
            parts.append(str(x))
    return "-".join(parts)


@pytest.fixture(scope="module")
def one_cpu_thread() -> Iterator[None]:
    """One intra-op thread for a module of tiny models: fastest for them, and it keeps the run time
    stable on a loaded 2-core machine (OpenMP threads spinning against other processes made
    single tests 20x slower there). Use with pytest.mark.usefixtures("one_cpu_thread")."""
    from oracle import one_thread  # local import: oracle imports flash_attn_c, conftest does not
    with one_thread():
        yield


def dev_cases(cpu: Iterable[Sequence], gpu: Iterable[Sequence] = (),
              cpu_dtypes: Sequence[torch.dtype] = CPU_DTYPES,
              gpu_dtypes: Sequence[torch.dtype] = GPU_DTYPES,
              marks: Sequence = ()) -> list:
    """Parameters ``(device, dtype, *case)``: every CPU case in every CPU dtype, every GPU case
    in every GPU dtype (marked ``gpu``). Use with ``@pytest.mark.parametrize("device,dtype,...")``.
    ``marks`` are added to every case (e.g. pytest.mark.parity_fwd)."""
    out = []
    for dt in cpu_dtypes:
        for c in cpu:
            c = tuple(c) if isinstance(c, (list, tuple)) else (c,)
            out.append(pytest.param("cpu", dt, *c, marks=tuple(marks),
                                    id=f"cpu-{_DT_NAME[dt]}-{_case_id(c)}"))
    for dt in gpu_dtypes:
        for c in gpu:
            c = tuple(c) if isinstance(c, (list, tuple)) else (c,)
            out.append(pytest.param("cuda", dt, *c, marks=(pytest.mark.gpu,) + tuple(marks),
                                    id=f"cuda-{_DT_NAME[dt]}-{_case_id(c)}"))
    return out


def devices() -> list:
    """``device`` parameters: cpu, and cuda marked gpu."""
    return [pytest.param("cpu", id="cpu"), pytest.param("cuda", marks=pytest.mark.gpu, id="cuda")]


def poison_allocator(device, nbytes: Sequence[int]) -> None:
    """Leaves freed blocks full of 0xFF bytes (NaN in fp32/fp16/bf16, -1 in int) in the allocator,
    one block per requested size (twice each), so the library's next allocations of those sizes
    most likely reuse them. CUDA's caching allocator hands back freed blocks of the same size
    reliably; on CPU glibc usually does too for blocks above a few KiB (checked: a 10 KB+
    poisoned block is reused by the next torch.empty of that size). Best effort by nature: a
    check that 'no NaN appears' after it is meaningful, its absence proves nothing."""
    for _ in range(2):
        blocks = [torch.full((max(int(n), 1),), 255, dtype=torch.uint8, device=device) for n in nbytes]
        del blocks


def dtype_name(dtype: torch.dtype) -> str:
    return _DT_NAME[dtype]


def is_hopper() -> bool:
    """Whether the CUDA device is compute capability 9.0 (H100 / H200), where the sm_90a kernels run."""
    return torch.cuda.is_available() and torch.cuda.get_device_capability() == (9, 0)


def sm90_switches(monkeypatch: pytest.MonkeyPatch, what: str, env: Optional[dict] = None) -> None:
    """The opening of every sm90 test's autouse fixture: skip unless an sm_90 GPU is present (what:
    the sm_90a code under test, for the skip reason), then FLASH_ATTN_C_SM90=1 and each env entry
    (name -> value, None: unset, i.e. that switch's default)."""
    if not is_hopper():
        pytest.skip(f"needs an sm_90 GPU (H100/H200): {what} is sm_90a code")
    monkeypatch.setenv("FLASH_ATTN_C_SM90", "1")
    for name, value in (env or {}).items():
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value)


def cuda_kernel_names(fn, contains: str) -> List[str]:
    """Names of the CUDA kernels fn() launched whose name contains `contains`, as the torch profiler
    saw them (demangled where it could), one entry per launch."""
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        fn()
        torch.cuda.synchronize()
    return [e.name for e in prof.events() if contains in e.name]


# fa_fwd_sm90_kernel<kBf16, D, Br, Bc, kStages, kFeat, kVarlen, kDrop, kFeatSet>: kFeatSet is template
# argument 8, FA_SM90_FEAT_ANY 0 / CAP 1 / ALIBI 2 / DROP 3 (csrc/cuda/sm90/fa_fwd_sm90_args.cuh)
_SM90_SET_ARG = 8
_SM90_MANGLED_SET = {
    drop: re.compile(r"fa_fwd_sm90_kernelILb[01]E(?:Li\d+E){4}Lb1ELb[01]ELb%dELi(\d)E" % drop) for drop in (0, 1)
}


def sm90_fwd_feat_sets_ran(fn, drop: bool = False) -> set:
    """The kFeatSet values of the kFeat instances (kDrop = drop) that fn() launched, from the CUDA
    kernels the torch profiler saw (demangled or mangled names)."""
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        fn()
        torch.cuda.synchronize()
    sets = set()
    for e in prof.events():
        name = e.name
        if "fa_fwd_sm90_kernel" not in name:
            continue
        m = _SM90_MANGLED_SET[int(drop)].search(name)
        if m:
            sets.add(int(m.group(1)))
        elif "<" in name and ">" in name:
            args = [a.strip() for a in name[name.index("<") + 1:name.index(">")].split(",")]
            if len(args) > _SM90_SET_ARG and args[5] == "true" and args[7] == ("true" if drop else "false"):
                sets.add(int(args[_SM90_SET_ARG]))
    return sets


# fa_fwd_sm90_persist_kernel<kBf16, D, Br, Bc, kStages, kFeat, kFeatSet>: (kFeat, kFeatSet) from the
# mangled (...Li2ELb1ELi5EE...) or the demangled name
_SM90_PERSIST_MANGLED_FEAT = re.compile(r"fa_fwd_sm90_persist_kernelILb[01]E(?:Li\d+E){4}Lb([01])ELi(\d+)E")


def sm90_persist_feat(name: str) -> Optional[tuple]:
    """(kFeat, kFeatSet) of a persistent sm90 forward kernel's profiler name (True/False, int), None
    for any other name."""
    if "fa_fwd_sm90_persist_kernel" not in name:
        return None
    m = _SM90_PERSIST_MANGLED_FEAT.search(name)
    if m:
        return m.group(1) == "1", int(m.group(2))
    if "<" in name and ">" in name:
        args = [a.strip() for a in name[name.index("<") + 1:name.index(">")].split(",")]
        if len(args) >= 7:
            return args[5] == "true", int(args[6])
    return None


def sm90_persist_feats_ran(fn) -> set:
    """(kFeat, kFeatSet) of every persistent sm90 forward kernel fn() launched (empty: none ran)."""
    return {f for f in map(sm90_persist_feat, cuda_kernel_names(fn, "fa_fwd_sm90_persist")) if f is not None}


# the sm90 backward's kernels, demangled names -> tags: br80 / br80_ordered (fa_bwd_sm90_pipe80[_ordered]_kernel
# <kBf16>), br128_<kDq> (fa_bwd_sm90_pipe128_kernel<kBf16, kDq>), br64_<kDq> (fa_bwd_sm90_pipe_kernel<kBf16, D,
# kDq>: the Br = 64 tile and the d in (128, 256] dim split), feat_<kDq> (fa_bwd_sm90_pipe_feat_kernel<kBf16, D,
# kDq>: softcap / ALiBi, opt-in), cp_async (fa_bwd_sm90_kernel<kBf16, D, atomic>); the first pattern that
# matches (pipe80_ordered before pipe80)
_SM90_BWD_TAGS = [
    (re.compile(r"fa_bwd_sm90_pipe_feat_kernel<\s*\w+\s*,\s*\d+\s*,\s*(\d)\s*>"), lambda m: f"feat_{m.group(1)}"),
    (re.compile(r"fa_bwd_sm90_pipe80_ordered_kernel<"), lambda m: "br80_ordered"),
    (re.compile(r"fa_bwd_sm90_pipe80_kernel<"), lambda m: "br80"),
    (re.compile(r"fa_bwd_sm90_pipe128_kernel<\s*\w+\s*,\s*(\d)\s*>"), lambda m: f"br128_{m.group(1)}"),
    (re.compile(r"fa_bwd_sm90_pipe_kernel<\s*\w+\s*,\s*\d+\s*,\s*(\d)\s*>"), lambda m: f"br64_{m.group(1)}"),
    (re.compile(r"fa_bwd_sm90_kernel<"), lambda m: "cp_async"),
]


def sm90_bwd_kernels(fn) -> List[str]:
    """Tags (above) of the sm90 backward kernels fn() launched, one per launch, in launch order."""
    tags = []
    for name in cuda_kernel_names(fn, "fa_bwd_sm90"):
        found = [tag(m) for rx, tag in _SM90_BWD_TAGS for m in [rx.search(name)] if m]
        assert found, f"unexpected sm90 backward kernel name: {name}"
        tags.append(found[0])
    return tags


# fa_fwd_sm90_kernel<kBf16, D, Br, Bc, ...> / fa_fwd_sm90_persist_kernel<kBf16, D, Br, ...>: the int
# template arguments after kBf16 (argument 1: D, 2: Br, 3: Bc), mangled as ...kernelILb1ELi64ELi192E...
_SM90_FWD_MANGLED_INTS = re.compile(r"fa_fwd_sm90_(?:persist_)?kernelILb[01]E((?:Li\d+E)+)")


def sm90_fwd_int_arg(name: str, arg: int) -> Optional[int]:
    """Template argument number `arg` (0-based; 1..3 are D, Br, Bc) of an sm90 forward kernel's
    profiler name, demangled (fa_fwd_sm90_kernel<true, 64, 192, ...>) or mangled; None if absent."""
    m = _SM90_FWD_MANGLED_INTS.search(name)
    if m:
        ints = re.findall(r"Li(\d+)E", m.group(1))
        return int(ints[arg - 1]) if 1 <= arg <= len(ints) else None
    if "<" in name and ">" in name:
        args = [a.strip() for a in name[name.index("<") + 1:name.index(">")].split(",")]
        if arg < len(args) and args[arg].lstrip("-").isdigit():
            return int(args[arg])
    return None


def sm90_fwd_int_args_ran(fn, arg: int) -> set:
    """(grid, template argument `arg`) of every sm90 forward kernel fn() launched (profiler names),
    grid "persist" (fa_fwd_sm90_persist_kernel) or "block" (fa_fwd_sm90_kernel)."""
    out = set()
    for name in cuda_kernel_names(fn, "fa_fwd_sm90_"):
        if "fa_fwd_sm90_kernel" not in name and "fa_fwd_sm90_persist_kernel" not in name:
            continue
        v = sm90_fwd_int_arg(name, arg)
        if v is not None:
            out.add(("persist" if "persist_kernel" in name else "block", v))
    return out


def sm90_fwd_flag_ran(fn, arg: int, mangled: "re.Pattern[str]") -> bool:
    """Whether fn() launched an fa_fwd_sm90_kernel instance whose template argument number `arg`
    (0-based, demangled names) is true, or whose mangled name matches `mangled`, from the CUDA
    kernels the torch profiler saw. Used by the sm90 forward variant tests (kFeat, kDrop)."""
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        fn()
        torch.cuda.synchronize()
    for e in prof.events():
        name = e.name
        if "fa_fwd_sm90_kernel" not in name:
            continue
        if "<" in name and ">" in name:
            args = [a.strip() for a in name[name.index("<") + 1:name.index(">")].split(",")]
            if len(args) > arg and args[arg] == "true":
                return True
        if mangled.search(name):
            return True
    return False
