"""Benchmark and self-check of flash_attn_c: ``python -m flash_attn_c.bench --help``.

The command (also installed as ``flash-attn-c-bench``) self-checks ours against the float64
reference of :mod:`flash_attn_c.testing`, then times ours, the torch SDPA backends and eager
attention on the same inputs. Modules:

    cli       arguments, presets, the sweep loop and ``main`` (exit codes in its docstring)
    cases     the shapes of a sweep, their inputs, FLOP counts and the peers' explicit masks
    backends  ours and the peers (SDPA backends, eager), each prepared outside the timed region
    check     the self-check: ours vs the float64 reference, forward and backward
    measure   timing, peak memory, failure classification
    env       device detection and the run header
    progress  the progress bar
    report    tables, summary, JSON / CSV / PNG / markdown files
    decode    the decode mode (--decode / --preset decode): flash_attn_with_kvcache on contiguous
              and paged caches vs SDPA backends, GB/s and the fraction of the copy bandwidth
    decode_report  the decode mode's tables, summary, targets and files
"""
from .cli import main

__all__ = ["main"]
