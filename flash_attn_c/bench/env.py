"""Device detection and the run header of ``python -m flash_attn_c.bench``.

Every probe here is best effort: a missing tool or attribute reads "unknown", never an exception.
"""
from __future__ import annotations

import datetime
import os
import platform
import subprocess
import sys
from typing import Any, Optional, Sequence

import torch


def pick_device(requested: str) -> torch.device:
    """"auto" -> cuda:0 when CUDA is usable, else cpu. "cuda" without CUDA raises ValueError."""
    if requested == "auto":
        return torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")
    if requested == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda requested but torch.cuda.is_available() is False")
    if requested == "cuda":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def _git_commit() -> str:
    """Commit of the checkout the package was imported from ("-dirty" if tracked files changed),
    or of flash_attn_c.__git_commit__ / __git_version__ if the build recorded one.
    FLASH_ATTN_C_GIT_COMMIT overrides both: a copied tree (e.g. on a lent GPU machine) may carry
    a stale .git, so scripts/gpu_run.sh passes the commit it was given."""
    given = os.environ.get("FLASH_ATTN_C_GIT_COMMIT", "").strip()
    if given:
        return f"{given} (FLASH_ATTN_C_GIT_COMMIT)"
    try:
        import flash_attn_c
        for attr in ("__git_commit__", "__git_version__", "git_version"):
            value = getattr(flash_attn_c, attr, None)
            if isinstance(value, str) and value:
                return value
        pkg_dir = os.path.dirname(os.path.abspath(flash_attn_c.__file__ or ""))
    except Exception:
        return "unknown"
    try:
        # only a checkout that tracks the package itself: an install inside some other repository
        # (a project's .venv) would otherwise report that project's commit
        tracked = subprocess.run(["git", "-C", pkg_dir, "ls-files", "--error-unmatch", "__init__.py"],
                                 capture_output=True, text=True, timeout=10)
        if tracked.returncode != 0:
            return "unknown"
        head = subprocess.run(["git", "-C", pkg_dir, "rev-parse", "--short=12", "HEAD"],
                              capture_output=True, text=True, timeout=10)
        if head.returncode != 0 or not head.stdout.strip():
            return "unknown"
        commit = head.stdout.strip()
        dirty = subprocess.run(["git", "-C", pkg_dir, "status", "--porcelain",
                                "--untracked-files=no"], capture_output=True, text=True,
                               timeout=10)
        if dirty.returncode == 0 and dirty.stdout.strip():
            commit += "-dirty"
        return commit
    except Exception:
        return "unknown"


def _package_version() -> str:
    try:
        import flash_attn_c
        return str(getattr(flash_attn_c, "__version__", "unknown"))
    except Exception as exc:  # the header must print even if the package is broken
        return f"unknown (import failed: {type(exc).__name__})"


def _triton_version() -> str:
    try:
        import triton
        return str(triton.__version__)
    except Exception:
        return "not installed"


def _cudnn_version() -> str:
    try:
        v = torch.backends.cudnn.version()
        return str(v) if v is not None else "n.a."
    except Exception:
        return "unknown"


def collect_header(device: torch.device, argv: Optional[Sequence[str]] = None) -> dict[str, Any]:
    """Machine and software facts for the header, the JSON and results.md. ``argv``: the CLI
    arguments (default sys.argv[1:]), recorded as the command."""
    info: dict[str, Any] = {
        "date_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S"),
        "device_type": device.type,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda or "n.a. (CPU build)",
        "cudnn": _cudnn_version(),
        "triton": _triton_version(),
        "flash_attn_c": _package_version(),
        "git_commit": _git_commit(),
        "command": " ".join(["python", "-m", "flash_attn_c.bench"]
                            + list(sys.argv[1:] if argv is None else argv)),
    }
    if device.type == "cuda":
        try:
            props = torch.cuda.get_device_properties(device)
            info.update({
                "device_name": props.name,
                "sm_count": props.multi_processor_count,
                "compute_capability": f"sm_{props.major}{props.minor}",
                "device_memory_gib": round(props.total_memory / 2**30, 1),
            })
        except Exception:
            info.update({"device_name": "unknown CUDA device", "sm_count": "unknown"})
        info["cpu_model"] = _cpu_model()
    else:
        info.update({
            "device_name": "CPU",
            "cpu_model": _cpu_model(),
            "torch_threads": torch.get_num_threads(),
            "logical_cpus": os.cpu_count() or "unknown",
        })
        try:
            info["usable_cpus"] = len(os.sched_getaffinity(0))
        except (AttributeError, OSError):
            pass
    return info


def format_header(info: dict[str, Any], extra: Optional[dict[str, str]] = None) -> str:
    """Multi-line text header."""
    lines = ["flash_attn_c benchmark / self-check"]
    if info["device_type"] == "cuda":
        cc = info.get("compute_capability", "?")
        lines.append(f"  device      : {info['device_name']} ({cc}, {info['sm_count']} SMs, "
                     f"{info.get('device_memory_gib', '?')} GiB)")
    else:
        usable = info.get("usable_cpus")
        lines.append(f"  device      : CPU {info['cpu_model']}, {info['torch_threads']} torch "
                     f"threads, {info['logical_cpus']} logical CPUs"
                     + (f" ({usable} usable)" if usable is not None else ""))
    lines.append(f"  torch       : {info['torch']}  CUDA {info['cuda']}  cuDNN {info['cudnn']}  "
                 f"triton {info['triton']}  python {info['python']}")
    lines.append(f"  flash_attn_c: {info['flash_attn_c']}  git {info['git_commit']}")
    for key, value in (extra or {}).items():
        lines.append(f"  {key:<12}: {value}")
    return "\n".join(lines)
