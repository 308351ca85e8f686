"""Build of flash_attn_c: the C11 CPU backend, the CUDA kernels (when nvcc is present) and the
torch binding, as one extension module flash_attn_c._C.

    pip install -r requirements.txt && pip install --no-build-isolation -e .

Environment knobs:
    FLASH_ATTN_C_FORCE_CPU=1        build without CUDA even if nvcc is found
    FLASH_ATTN_C_CUDA_ARCHS=80;90a  SM targets (PTX of the newest is embedded too)
    FLASH_ATTN_C_CPU_ARCH=native    -march= for the C backend (x86-64 for a portable build)
    MAX_JOBS=N                      parallel compile jobs (torch's ninja build)
Compiler flags and include folders: csrc/build_flags.py (shared with the native harnesses).
"""
import glob
import os
import shutil
import subprocess
import sys

from setuptools import find_packages, setup

try:
    import torch
    from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension
except ImportError:  # pragma: no cover - reached only in a misconfigured build
    sys.exit("flash_attn_c: torch must be installed before building "
             "(pip install -r requirements.txt, then pip install --no-build-isolation -e .)")

ROOT = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(ROOT, "csrc"))
import build_flags  # noqa: E402  (csrc/build_flags.py: the flags the native harnesses use too)


def rel(pattern: str) -> list:
    return sorted(os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, pattern)))


def nvcc_path():
    if os.environ.get("FLASH_ATTN_C_FORCE_CPU", "0") == "1":
        return None
    if CUDA_HOME and os.path.exists(os.path.join(CUDA_HOME, "bin", "nvcc")):
        return os.path.join(CUDA_HOME, "bin", "nvcc")
    return shutil.which("nvcc")


def nvcc_version(nvcc: str) -> str:
    out = subprocess.run([nvcc, "--version"], capture_output=True, text=True).stdout
    for tok in out.replace(",", " ").split():
        if tok.startswith("V") and tok[1:2].isdigit():
            return tok[1:]
    return "unknown"


NVCC = nvcc_path()
CUDA_ARCHS = build_flags.cuda_archs()
CPU_ARCH = build_flags.cpu_arch()
# Extra nvcc flags, space separated (kernel A/B experiments, e.g. scripts/gpu_ab.sh): not for releases.
NVCC_EXTRA = os.environ.get("FLASH_ATTN_C_NVCC_EXTRA", "").split()
C_FLAGS = build_flags.c_flags()
INCLUDES = build_flags.includes(ROOT)

c_sources = rel("csrc/cpu/*.c")
cpp_sources = ["csrc/torch/fa_ops.cpp", "csrc/torch/fa_glue.cpp", "csrc/torch/fa_cpu.cpp",
               "csrc/torch/fa_rotary_op.cpp", "csrc/torch/fa_kvcache_op.cpp"]
cxx_flags = list(build_flags.CXX_FLAGS)
link_flags = list(build_flags.LINK_FLAGS)

if NVCC and torch.version.cuda:
    cuda_sources = [f for d in build_flags.CUDA_DIRS for f in rel(d + "/*.cu")]
    gencode = build_flags.gencode(CUDA_ARCHS)
    # Arch list set explicitly: nothing needs a GPU at build time.
    os.environ.setdefault("TORCH_CUDA_ARCH_LIST", ";".join(
        f"{a.rstrip('a')[:-1]}.{a.rstrip('a')[-1]}{'a' if a.endswith('a') else ''}" for a in CUDA_ARCHS))
    ext = CUDAExtension(
        name="flash_attn_c._C",
        sources=cpp_sources + ["csrc/torch/fa_cuda.cpp"] + cuda_sources,
        include_dirs=INCLUDES,
        define_macros=[("FA_WITH_CUDA", "1")],
        extra_link_args=link_flags,
        extra_compile_args={
            "cxx": cxx_flags + ["-DFA_WITH_CUDA"],
            "nvcc": build_flags.NVCC_FLAGS + gencode + NVCC_EXTRA,
        },
    )
    plan = (f"flash_attn_c build plan: C11 CPU backend (-march={CPU_ARCH}) + CUDA kernels for "
            f"sm_{', sm_'.join(CUDA_ARCHS)} (+PTX) with nvcc {nvcc_version(NVCC)}; torch "
            f"{torch.__version__} (CUDA {torch.version.cuda})"
            + (f"; extra nvcc flags {' '.join(NVCC_EXTRA)}" if NVCC_EXTRA else ""))
else:
    c_sources = c_sources + ["csrc/cuda/api/fa_no_cuda.c"]
    ext = CppExtension(name="flash_attn_c._C", sources=cpp_sources, include_dirs=INCLUDES,
                       extra_compile_args={"cxx": cxx_flags}, extra_link_args=link_flags)
    why = ("FLASH_ATTN_C_FORCE_CPU=1" if os.environ.get("FLASH_ATTN_C_FORCE_CPU") == "1"
           else "nvcc not found" if not NVCC else "torch has no CUDA")
    plan = (f"flash_attn_c build plan: CPU-only ({why}): C11 CPU backend (-march={CPU_ARCH}); "
            f"torch {torch.__version__}")


class BuildWithC(BuildExtension):
    """Compiles csrc/cpu (strict C11, with the C compiler, never as C++) and links the objects."""

    def build_extensions(self):
        print(plan, flush=True)
        objects = self.compiler.compile(
            [os.path.join(ROOT, s) for s in c_sources], output_dir=self.build_temp,
            include_dirs=INCLUDES, extra_postargs=C_FLAGS)
        for e in self.extensions:
            e.extra_objects = list(e.extra_objects or []) + objects
        super().build_extensions()


setup(
    packages=find_packages(include=["flash_attn_c", "flash_attn_c.*"]),
    ext_modules=[ext],
    cmdclass={"build_ext": BuildWithC.with_options(use_ninja=True)},
    python_requires=">=3.10",
)
