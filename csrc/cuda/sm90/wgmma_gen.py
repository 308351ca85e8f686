"""Emitters shared by the wgmma header generators (csrc/cuda/sm90/gen_wgmma.py writes the generated
part of csrc/cuda/sm90/fa_wgmma.cuh, csrc/cuda/sm90/gen_wgmma_bwd.py all of csrc/cuda/sm90/fa_wgmma_bwd.cuh).

A wgmma.mma_async m64nNk16 with fp32 accumulators names N/2 accumulator registers per thread; inline
PTX needs every one of them spelled out as "%i" in the instruction string and as a "+f" operand.
These functions write those wrappers, one per shape, dtype and operand form, and the --check /
rewrite step both scripts end with. The text they produce is committed, so any change here must
keep `make gen-check` passing in dev/fwd_sm90 and dev/bwd_sm90.
"""
from __future__ import annotations

import pathlib
import sys


def acc_list(n_regs: int) -> str:
    """'{%0, %1, ..., %n-1}' split over lines of C string literals, 16 registers a line."""
    names = [f"%{i}" for i in range(n_regs)]
    lines = []
    for i in range(0, n_regs, 16):
        lines.append('        "' + ", ".join(names[i:i + 16]) + (", " if i + 16 < n_regs else "") + '"')
    return '        "{"\n' + "\n".join(lines) + '\n        "}, "'


def acc_operands(n_regs: int) -> str:
    """'"+f"(d[0]), ..., "+f"(d[n-1])', 8 operands a line."""
    ops = [f'"+f"(d[{i}])' for i in range(n_regs)]
    return ",\n".join("          " + ", ".join(ops[i:i + 8]) for i in range(0, n_regs, 8))


def ss_wrapper(n: int, ty: str, suffix: str, trans_a: int, trans_b: int, indent: int) -> str:
    """fa_wgmma_ss_m64n<n>k16_<ty><suffix>(d, desc_a, desc_b, scale_d): D[64 x n] (fp32, n/2
    registers a thread) = (scale_d ? D : 0) + A[64 x 16] B[16 x n], A and B from shared memory
    through descriptors; trans_a / trans_b are the imm-trans-a / imm-trans-b of the instruction
    (0: K-major, 1: MN-major). indent: the column of the second line of the signature."""
    r = n // 2
    return f"""static __device__ __forceinline__ void fa_wgmma_ss_m64n{n}k16_{ty}{suffix}(float (&d)[{r}], uint64_t desc_a,
{" " * indent}uint64_t desc_b, int scale_d)
{{
    asm volatile(
        "{{\\n.reg .pred p;\\nsetp.ne.b32 p, %{r + 2}, 0;\\n"
        "wgmma.mma_async.sync.aligned.m64n{n}k16.f32.{ty}.{ty} "
{acc_list(r)}
        "%{r}, %{r + 1}, p, 1, 1, {trans_a}, {trans_b};\\n}}\\n"
        :
{acc_operands(r)}
        : "l"(desc_a), "l"(desc_b), "r"(scale_d));
}}
"""


def rs_wrapper(n: int, ty: str, indent: int) -> str:
    """fa_wgmma_rs_m64n<n>k16_<ty>_tb(d, a, desc_b, scale_d): D[64 x n] = (scale_d ? D : 0) +
    A[64 x 16] B[16 x n], A from 4 registers a thread (the mma.sync A fragment layout), B from
    shared memory MN-major (imm-trans-b = 1). indent: as in ss_wrapper."""
    r = n // 2
    return f"""static __device__ __forceinline__ void fa_wgmma_rs_m64n{n}k16_{ty}_tb(float (&d)[{r}], const uint32_t (&a)[4],
{" " * indent}uint64_t desc_b, int scale_d)
{{
    asm volatile(
        "{{\\n.reg .pred p;\\nsetp.ne.b32 p, %{r + 5}, 0;\\n"
        "wgmma.mma_async.sync.aligned.m64n{n}k16.f32.{ty}.{ty} "
{acc_list(r)}
        "{{%{r}, %{r + 1}, %{r + 2}, %{r + 3}}}, %{r + 4}, p, 1, 1, 1;\\n}}\\n"
        :
{acc_operands(r)}
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc_b), "r"(scale_d));
}}
"""


def write_or_check(header: pathlib.Path, new: str, script: str) -> int:
    """With --check on the command line: 0 if header holds exactly `new`, else a message and 1.
    Otherwise writes `new` to header and returns 0."""
    if "--check" in sys.argv:
        if not header.exists() or header.read_text() != new:
            print(f"{header} is out of date: run {script}")
            return 1
        return 0
    header.write_text(new)
    return 0
