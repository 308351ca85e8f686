"""build_flags.py - the one source of compiler flags and include folders.

setup.py imports it to build the extension; the native harnesses of dev/ (their Makefiles, through
dev/common/csrc_objects.mk) run it as a program, so a harness that passes vouches for the same
binary code that users get (same -O level, fast math, targets, defines).

    python3 csrc/build_flags.py nvcc|gencode|cflags|cxxflags|includes|cuda-dirs [ROOT]

Environment (read here, by setup.py and by the harnesses alike):
    FLASH_ATTN_C_CUDA_ARCHS=80;90a   SM targets; PTX of the newest portable arch is embedded too
    FLASH_ATTN_C_CPU_ARCH=native     -march= for the C backend (x86-64: a portable binary)
"""
from __future__ import annotations

import os
import sys
from typing import List

# Folders whose headers the sources include by plain name ("fa_mma.cuh"): the public C API, the
# CPU backend, and the CUDA tree by role (csrc/cuda/README.md).
CUDA_DIRS = ["csrc/cuda/api", "csrc/cuda/common", "csrc/cuda/sm80", "csrc/cuda/sm90",
             "csrc/cuda/decode", "csrc/cuda/instantiations"]
INCLUDE_DIRS = ["csrc/include", "csrc/cpu"] + CUDA_DIRS[:-1]

# nvcc, every CUDA source:
#   -O3                      the kernels are the product
#   --use_fast_math          exp2/log/div approximations the softmax is written for (ex2.approx)
#   -lineinfo                source lines in ncu / compute-sanitizer reports, no code change
#   --expt-relaxed-constexpr constexpr tuning-table lookups (fa_tuning.h) in device code
#   -DFA_WITH_CUDA           the build has the CUDA backend (the torch glue and headers test it)
NVCC_FLAGS = ["-O3", "-std=c++17", "--use_fast_math", "-lineinfo", "--expt-relaxed-constexpr",
              "-DFA_WITH_CUDA"]
# C (csrc/cpu): strict C11, warnings on; no errno from libm so exp/log vectorize.
C_FLAGS = ["-std=c11", "-O3", "-fPIC", "-fno-math-errno", "-Wall", "-Wextra", "-pedantic"]
# C++ (csrc/torch). -fopenmp: at::parallel_for (ATen/ParallelOpenMP.h, inlined into fa_cpu.cpp) is
# an OpenMP parallel region only when the translation unit is compiled with OpenMP; without it the
# loop runs serially and torch.set_num_threads has no effect. Linking with -fopenmp records
# libgomp.so.1, the soname of the libgomp torch's wheel ships and has already loaded when
# flash_attn_c is imported, so the process keeps one OpenMP runtime (one thread pool).
CXX_FLAGS = ["-O3", "-std=c++17", "-fopenmp"]
LINK_FLAGS = ["-fopenmp"]


def cuda_archs() -> List[str]:
    """SM targets, e.g. ['80', '90a'] (90a: Hopper's wgmma/TMA kernels; they run on H100/H200)."""
    return [a for a in os.environ.get("FLASH_ATTN_C_CUDA_ARCHS", "80;90a").split(";") if a]


def gencode(archs: List[str]) -> List[str]:
    """-gencode per target plus PTX of the newest portable arch (no 'a' suffix: arch-specific PTX
    would not JIT on newer GPUs). Set explicitly, so no GPU is needed at build time."""
    out: List[str] = []
    for a in archs:
        out += ["-gencode", f"arch=compute_{a},code=sm_{a}"]
    ptx = archs[-1].rstrip("a")
    return out + ["-gencode", f"arch=compute_{ptx},code=compute_{ptx}"]


def cpu_arch() -> str:
    return os.environ.get("FLASH_ATTN_C_CPU_ARCH", "native")


def c_flags() -> List[str]:
    return C_FLAGS + [f"-march={cpu_arch()}"]


def includes(root: str) -> List[str]:
    return [os.path.join(root, d) for d in INCLUDE_DIRS]


def main(argv: List[str]) -> int:
    what = argv[1] if len(argv) > 1 else ""
    root = argv[2] if len(argv) > 2 else os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    if what == "nvcc":
        out = NVCC_FLAGS
    elif what == "gencode":
        out = gencode(cuda_archs())
    elif what == "cflags":
        out = c_flags()
    elif what == "cxxflags":
        out = CXX_FLAGS
    elif what == "includes":
        out = ["-I" + d for d in includes(root)]
    elif what == "cuda-dirs":
        out = [os.path.join(root, d) for d in CUDA_DIRS]
    else:
        print(__doc__, file=sys.stderr)
        return 2
    print(" ".join(out))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
